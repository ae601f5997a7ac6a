// The routed experts' BF16 GEMM outputs (ops::Context::expert_outputs_bf16): grouped_matmul
// writing BF16 codes, and the ops that read them (packed SwiGLU, combine_pairs, the gate
// weights' gradient in gather_rows_bf16_dot) taking BF16 inputs. Each against the F32 op on
// the widened values, bit for bit (reference and optimised paths), plus the dtype errors.
#include <cmath>
#include <cstring>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {

// Random values rounded to BF16: the codes, and the same values as F32 (exact).
struct Bf16Pair {
  Tensor codes, values;
};
Bf16Pair rand_bf16(const Shape& shape, double lo = -1, double hi = 1) {
  Bf16Pair p{Tensor::empty(shape, DType::bf16), rand_f32(shape, lo, hi)};
  auto* c = p.codes.data<uint16_t>();
  float* v = p.values.f32();
  for (int64_t i = 0; i < p.values.numel(); ++i) {
    c[i] = f32_to_bf16(v[i]);
    v[i] = bf16_to_f32(c[i]);
  }
  return p;
}

}  // namespace

TEST_CASE("grouped_matmul with a BF16 y == bf16_round of the F32 y, bit for bit") {
  const int64_t K = 24, N = 10;
  const std::vector<int64_t> offsets{0, 5, 5, 17};   // an empty group in the middle
  Tensor x = rand_f32({17, K});
  std::vector<Tensor> w{rand_f32({N, K}), rand_f32({N, K}), rand_f32({N, K})};
  x.f32()[3] = NAN;
  for (const Context& c : {ref_ctx(), opt_ctx(2)}) {
    Tensor yf = Tensor::empty({17, N}), want = Tensor::empty({17, N}, DType::bf16);
    Tensor got = Tensor::empty({17, N}, DType::bf16);
    grouped_matmul(c, x, w, true, offsets, yf);
    bf16_round(c, yf, want);
    grouped_matmul(c, x, w, true, offsets, got);
    CHECK(same_bytes(got, want));
  }
  Tensor y = Tensor::empty({17, N}, DType::bf16);
  CHECK_THROWS_WITH_AS(grouped_matmul(opt_ctx(), x, w, true, offsets, y, 1.0f),
                       doctest::Contains("BF16 with beta 0"), ds::Error);
  Tensor yi = Tensor::empty({17, N}, DType::i32);
  CHECK_THROWS_AS(grouped_matmul(opt_ctx(), x, w, true, offsets, yi), ds::Error);
}

TEST_CASE("swiglu packed over BF16 inputs == the F32 op on their values, bit for bit") {
  for (const Context& c : {ref_ctx(), opt_ctx(2)})
    for (auto [N, I] : {std::pair<int64_t, int64_t>{1, 1}, {5, 3}, {37, 96}}) {
      CAPTURE(N);
      CAPTURE(I);
      Bf16Pair h = rand_bf16({N, 2 * I}, -6, 6), d = rand_bf16({N, I});
      h.codes.data<uint16_t>()[0] = 0x7fc0;   // NaN
      h.values.f32()[0] = NAN;
      h.codes.data<uint16_t>()[2 * I - 1] = 0x7f80;   // +inf
      h.values.f32()[2 * I - 1] = INFINITY;
      for (const DType dt : {DType::f32, DType::bf16}) {
        CAPTURE(int(dt));
        Tensor want = Tensor::empty({N, I}, dt), got = Tensor::empty({N, I}, dt);
        swiglu_packed_forward(c, h.values, want);
        swiglu_packed_forward(c, h.codes, got);
        CHECK(same_bytes(got, want));
        Tensor dwant = Tensor::empty({N, 2 * I}, dt), dgot = Tensor::empty({N, 2 * I}, dt);
        swiglu_packed_backward(c, h.values, d.values, dwant);
        swiglu_packed_backward(c, h.codes, d.codes, dgot);
        CHECK(same_bytes(dgot, dwant));
      }
    }
  const Context c = opt_ctx();
  Bf16Pair h = rand_bf16({4, 6});
  Tensor d = rand_f32({4, 3}), dh = Tensor::empty({4, 6});
  CHECK_THROWS_WITH_AS(swiglu_packed_backward(c, h.codes, d, dh),
                       doctest::Contains("all F32 or all BF16"), ds::Error);
  Tensor hi = Tensor::empty({4, 6}, DType::i32), out = Tensor::empty({4, 3});
  CHECK_THROWS_AS(swiglu_packed_forward(c, hi, out), ds::Error);
  // the two-tensor ops keep F32 inputs
  Bf16Pair g = rand_bf16({4, 3});
  CHECK_THROWS_WITH_AS(swiglu_forward(c, g.codes, g.codes, out),
                       doctest::Contains("inputs must be F32"), ds::Error);
}

TEST_CASE("combine_pairs over a BF16 src == over its F32 values, bit for bit") {
  const int64_t N = 9, K = 3, C = 20;
  std::vector<int32_t> perm(size_t(N * K));
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = int32_t((i * 7 + 3) % perm.size());
  Tensor slot = Tensor::empty({N, K}, DType::i32);
  std::memcpy(slot.raw(), perm.data(), perm.size() * 4);
  Bf16Pair src = rand_bf16({N * K, C});
  Tensor w = rand_f32({N, K});
  for (const Context& c : {ref_ctx(), opt_ctx(2)})
    for (bool weighted : {false, true}) {
      Tensor base = rand_f32({N, C});
      Tensor want = Tensor::empty({N, C}), got = Tensor::empty({N, C});
      want.copy_from(base);
      got.copy_from(base);
      combine_pairs(c, src.values, slot, weighted ? w : Tensor(), want);
      combine_pairs(c, src.codes, slot, weighted ? w : Tensor(), got);
      CHECK(same_bytes(got, want));
    }
  Tensor dst = Tensor::empty({N, C});
  Tensor bad = Tensor::empty({N * K, C}, DType::i32);
  CHECK_THROWS_WITH_AS(combine_pairs(opt_ctx(), bad, slot, Tensor(), dst),
                       doctest::Contains("src must be F32 or BF16"), ds::Error);
  Tensor dst16 = Tensor::empty({N, C}, DType::bf16);
  CHECK_THROWS_AS(combine_pairs(opt_ctx(), src.codes, slot, Tensor(), dst16), ds::Error);
}

TEST_CASE("gather_rows_bf16_dot with a BF16 b == with its F32 values, bit for bit") {
  const int64_t N = 11, M = 15, C = 12;
  Tensor src = rand_f32({N, C}), rows = Tensor::empty({M}, DType::i32), w = rand_f32({M});
  for (int64_t m = 0; m < M; ++m) rows.i32()[m] = int32_t((m * 5) % N);
  Bf16Pair b = rand_bf16({M, C});
  for (const Context& c : {ref_ctx(), opt_ctx(2)})
    for (const DType dt : {DType::f32, DType::bf16}) {
      Tensor dw = Tensor::empty({M, C}, dt), dg = Tensor::empty({M, C}, dt);
      Tensor tw = Tensor::empty({M}), tg = Tensor::empty({M});
      gather_rows_bf16_dot(c, src, rows, w, b.values, dw, tw);
      gather_rows_bf16_dot(c, src, rows, w, b.codes, dg, tg);
      CHECK(same_bytes(dg, dw));
      CHECK(same_bytes(tg, tw));
    }
  Tensor bad = Tensor::empty({M, C}, DType::i32), dst = Tensor::empty({M, C}),
         dot = Tensor::empty({M});
  CHECK_THROWS_AS(gather_rows_bf16_dot(opt_ctx(), src, rows, w, bad, dst, dot), ds::Error);
}
