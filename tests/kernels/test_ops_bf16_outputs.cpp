// The routed experts' BF16 GEMM outputs on the GPU (ops::Context::expert_outputs_bf16):
// grouped_matmul writing BF16 codes through cuBLAS (its grouped entry point, or one call per
// product), and the ops reading them: packed SwiGLU, combine_pairs and gather_rows_bf16_dot's
// dot over BF16 inputs, bit for bit the GPU's own F32 ops on the widened values (aligned and
// misaligned operands, NaN/inf), with guard bytes around every output.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "ds/core/error.hpp"
#include "gpu_harness.hpp"
#include "kernels/gemm_grouped.cuh"

namespace ds::gpu_test {
namespace {

// Random values rounded to BF16: the codes and the same values as F32 (host tensors).
std::pair<Tensor, Tensor> rand_bf16(const Shape& s, float lo = -1, float hi = 1) {
  Tensor v = rand_f32(s, lo, hi), c = Tensor::empty(s, DType::bf16);
  for (int64_t i = 0; i < v.numel(); ++i) {
    c.data<uint16_t>()[i] = f32_to_bf16(v.f32()[i]);
    v.f32()[i] = bf16_to_f32(c.data<uint16_t>()[i]);
  }
  return {c, v};
}

// BF16 codes a and b (host) at most `ulps` apart as integers of the same sign (NaN = NaN).
int64_t code_mismatches(const Tensor& a, const Tensor& b, int ulps) {
  int64_t bad = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const uint16_t x = a.data<uint16_t>()[i], y = b.data<uint16_t>()[i];
    const bool nx = std::isnan(bf16_to_f32(x)), ny = std::isnan(bf16_to_f32(y));
    if (nx || ny) {
      bad += nx != ny;
      continue;
    }
    const bool same_sign = (x >> 15) == (y >> 15);
    bad += !(same_sign ? std::abs(int(x) - int(y)) <= ulps : (x & 0x7fff) + (y & 0x7fff) <= ulps);
  }
  return bad;
}

}  // namespace

// cuBLAS writes the FP32 sums rounded once: within one BF16 step of the GPU's own F32-output
// GEMM rounded afterwards (cuBLAS may pick another algorithm for the other output type, so
// not bit for bit), and within BF16 rounding of the CPU reference. Groups of 0 rows, one
// group alone (the per-product call), the 1b preset's expert shapes.
TEST_CASE("gpu expert outputs: grouped_matmul with BF16 y") {
  struct Case {
    int64_t K, N;
    std::vector<int64_t> rows;
    bool trans_w;
  };
  for (const Case& c : {Case{1024, 768, {300, 0, 517, 64, 1}, true},   // gate/up stacked
                        Case{384, 1024, {300, 0, 517, 64, 1}, true},   // down
                        Case{768, 1024, {211, 93}, false},             // input gradient
                        Case{40, 24, {37}, true}}) {                   // one product
    CAPTURE(c.K);
    CAPTURE(c.N);
    std::vector<int64_t> off{0};
    for (int64_t r : c.rows) off.push_back(off.back() + r);
    const int64_t M = off.back();
    auto [xc, xv] = rand_bf16({M, c.K});
    std::vector<Tensor> wc, wv;
    Arena ar;
    std::vector<Tensor> gw;
    for (size_t g = 0; g < c.rows.size(); ++g) {
      auto [a, b] = rand_bf16(c.trans_w ? Shape{c.N, c.K} : Shape{c.K, c.N});
      wc.push_back(a);
      wv.push_back(b);
      gw.push_back(ar.upload(a));
    }
    const Tensor gx = ar.upload(xc);
    Tensor yf = ar.empty({M, c.N}), yb = ar.empty({M, c.N}, DType::bf16);
    ops::grouped_matmul(gpu(), gx, gw, c.trans_w, off, yf);
    ops::grouped_matmul(gpu(), gx, gw, c.trans_w, off, yb);
    Tensor want = Tensor::empty({M, c.N}, DType::bf16);
    ops::bf16_round(cpu_ref(), download(yf), want);
    const Tensor got = download(yb);
    const int64_t bad = code_mismatches(got, want, 1);
    INFO(bad << " of " << got.numel() << " codes more than one step from the F32 GEMM's");
    CHECK(bad == 0);
    Tensor ref = Tensor::empty({M, c.N});
    ops::grouped_matmul(cpu_ref(), xv, wv, c.trans_w, off, ref);
    Tensor widened = Tensor::empty({M, c.N});
    for (int64_t i = 0; i < M * c.N; ++i) widened.f32()[i] = bf16_to_f32(got.data<uint16_t>()[i]);
    expect_close(widened, ref, 1e-5, "BF16 y vs the CPU reference");
    CHECK(ar.check());
  }
  std::printf("grouped GEMM with BF16 in and out: cuBLAS's grouped entry point %s\n",
              ds::cuda::grouped_gemm_native(true, true) ? "used" : "not used (per product)");
  Arena ar;
  Tensor x = ar.empty({4, 8}, DType::bf16), y = ar.empty({4, 6}, DType::bf16);
  std::vector<Tensor> w{ar.empty({6, 8}, DType::bf16)};
  CHECK_THROWS_AS(ops::grouped_matmul(gpu(), x, w, true, {0, 4}, y, 1.0f), ds::Error);
  Tensor xf = ar.empty({4, 8}), yf2 = ar.empty({4, 6}, DType::bf16);
  std::vector<Tensor> wf{ar.empty({6, 8})};
  CHECK_THROWS_AS(ops::grouped_matmul(gpu(), xf, wf, true, {0, 4}, yf2), ds::Error);
}

// Packed SwiGLU over BF16 h (and dout): the GPU's F32 op on the widened values, bit for bit;
// I % 4 == 0 with aligned rows (the 4-wide path), odd I and inputs 2 bytes past alignment
// (the scalar path), F32 and BF16-code outputs; and against the CPU reference.
TEST_CASE("gpu expert outputs: swiglu packed over BF16 inputs") {
  for (auto [N, I] : {std::pair<int64_t, int64_t>{300, 384}, {17, 5}, {64, 96}})
    for (const bool mis : {false, true})
      for (const DType dt : {DType::f32, DType::bf16}) {
        CAPTURE(N);
        CAPTURE(I);
        CAPTURE(mis);
        CAPTURE(int(dt));
        auto [hc, hv] = rand_bf16({N, 2 * I}, -6, 6);
        auto [dc, dv] = rand_bf16({N, I});
        hc.data<uint16_t>()[0] = 0x7fc0;   // NaN
        hv.f32()[0] = NAN;
        hc.data<uint16_t>()[1] = 0xff80;   // -inf
        hv.f32()[1] = -INFINITY;
        Arena ar;
        const Tensor ghc = up(ar, hc, mis).view({N, 2 * I}), gdc = up(ar, dc, mis).view({N, I});
        const Tensor ghv = ar.upload(hv), gdv = ar.upload(dv);
        Tensor want = ar.empty({N, I}, dt), got = ar.empty({N, I}, dt);
        ops::swiglu_packed_forward(gpu(), ghv, want);
        ops::swiglu_packed_forward(gpu(), ghc, got);
        expect_exact(got, download(want), "swiglu packed forward");
        Tensor dwant = ar.empty({N, 2 * I}, dt), dgot = ar.empty({N, 2 * I}, dt);
        ops::swiglu_packed_backward(gpu(), ghv, gdv, dwant);
        ops::swiglu_packed_backward(gpu(), ghc, gdc, dgot);
        expect_exact(dgot, download(dwant), "swiglu packed backward");
        // and against the CPU reference over the same BF16 inputs (GPU expf vs the reference's
        // double exp: a few ulps; BF16 outputs then within one rounding)
        const double tol = dt == DType::f32 ? 1e-10 : 1e-5;
        Tensor cf = Tensor::empty({N, I}, dt), cd = Tensor::empty({N, 2 * I}, dt);
        ops::swiglu_packed_forward(cpu_ref(), hc, cf);
        ops::swiglu_packed_backward(cpu_ref(), hc, dc, cd);
        expect_close(got, cf, tol, "swiglu packed forward vs the CPU reference");
        expect_close(dgot, cd, tol, "swiglu packed backward vs the CPU reference");
        CHECK(ar.check());
      }
}

// combine_pairs over a BF16 src: the GPU's F32 op on the widened rows, bit for bit (C % 4 == 0
// with an aligned src: the 4-wide path; odd C, and a src 2 bytes past alignment: scalar).
TEST_CASE("gpu expert outputs: combine_pairs over a BF16 src") {
  struct Case {
    int64_t N, K, C;
  };
  for (const Case& c : {Case{333, 6, 1024}, Case{50, 8, 37}, Case{64, 16, 12}})
    for (const bool mis : {false, true})
      for (const bool weighted : {true, false}) {
        CAPTURE(c.K);
        CAPTURE(c.C);
        CAPTURE(mis);
        CAPTURE(weighted);
        const int64_t NK = c.N * c.K;
        Tensor slot = Tensor::empty({c.N, c.K}, DType::i32);
        for (int64_t i = 0; i < NK; ++i) slot.i32()[i] = int32_t((i * 7 + 3) % NK);
        auto [sc, sv] = rand_bf16({NK, c.C}, -3, 3);
        const Tensor w = rand_f32({c.N, c.K}), base = rand_f32({c.N, c.C});
        Arena ar;
        const Tensor gslot = ar.upload(slot), gw = weighted ? ar.upload(w) : Tensor();
        Tensor want = ar.upload(base), got = ar.upload(base);
        ops::combine_pairs(gpu(), ar.upload(sv), gslot, gw, want);
        ops::combine_pairs(gpu(), up(ar, sc, mis).view({NK, c.C}), gslot, gw, got);
        expect_exact(got, download(want), "combine_pairs");
        Tensor cpu = base.clone();   // the CPU reference over the BF16 src: the same sums
        ops::combine_pairs(cpu_ref(), sc, slot, weighted ? w : Tensor(), cpu);
        expect_exact(got, cpu, "combine_pairs vs the CPU reference");
        CHECK(ar.check());
      }
}

// gather_rows_bf16_dot with a BF16 b (the experts' BF16 outputs): the operand bit for bit
// gather_rows_bf16's, the dot within double-sum rounding of the CPU's over the widened b
// (which has no GPU twin to match bit for bit: gather_rows_dot takes F32 only).
TEST_CASE("gpu expert outputs: gather_rows_bf16_dot with a BF16 b") {
  for (const int64_t C : {7, 12, 1024})
    for (const bool mis : {false, true}) {
      CAPTURE(C);
      CAPTURE(mis);
      const int64_t N = 37, M = 301;
      const Tensor src = rand_f32({N, C}, -3, 3), w = rand_f32({M}, -2, 2);
      auto [bc, bv] = rand_bf16({M, C});
      Tensor rows = Tensor::empty({M}, DType::i32);
      for (int64_t m = 0; m < M; ++m) rows.i32()[m] = int32_t((m * 13 + 5) % N);
      Arena ar;
      const Tensor gsrc = ar.upload(src), grows = ar.upload(rows), gw = ar.upload(w);
      Tensor want = ar.empty({M, C}, DType::bf16);
      ops::gather_rows_bf16(gpu(), gsrc, grows, gw, want);
      Tensor got = ar.empty({M, C}, DType::bf16), dot = ar.empty({M});
      ops::gather_rows_bf16_dot(gpu(), gsrc, grows, gw, up(ar, bc, mis).view({M, C}), got, dot);
      expect_exact(got, download(want), "operand");
      Tensor cpu_dot = Tensor::empty({M});
      ops::gather_rows_dot(cpu_ref(), src, rows, bv, cpu_dot);
      expect_close(dot, cpu_dot, 1e-12, "dot vs the CPU over the widened b");
      CHECK(ar.check());
    }
}

}  // namespace ds::gpu_test
