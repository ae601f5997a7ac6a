// The kernels of kernels/bf16_rows.cuh run on the CPU by the host emulator (cuda_emu.hpp)
// against the CPU reference ops: BF16 rounding (the scalar kernel with either or both outputs,
// the 4-wide one as codes or rounded F32; NaN of both signs, infinities, ties, subnormals and
// the largest values that round to inf) bit for bit, and the rounding row gathers of the MoE
// layer (4-wide and scalar, codes and F32, weighted and not) bit for bit against a gather, a
// weighted scatter into zeros and a rounding, with their dot products (F32 or BF16-code b)
// within a float rounding of the reference's double sums (the kernel adds in another order).
// Outputs sit between guard bytes; scalar paths run on buffers 4 bytes off alignment.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "emu_buffers.hpp"
#include "kernels/bf16_rows.cuh"
#include "moe_pairs_util.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::bit_mismatches;
using ds::test::code_mismatches;
using ds::test::dot_mismatches;
using ds::test::emu_random;
using ds::test::EmuBuf;
using ds::test::kBf16Specials;
using ds::test::ref_ctx;
using ds::test::cuda_emu::launch;
namespace br = ds::cuda::bf16rows;

// n values with BF16's hard cases spread among random ones.
Tensor round_input(int64_t n, std::mt19937_64& rng) {
  Tensor x = emu_random({n}, rng, -3.f, 3.f);
  for (size_t t = 0; t < std::size(kBf16Specials) && int64_t(t) < n; ++t)
    x.f32()[(int64_t(t) * 7919) % n] = kBf16Specials[t];
  return x;
}

// The reference's rounding of x: F32 values, or the codes when codes.
Tensor rounded(const Tensor& x, bool codes) {
  Tensor out = Tensor::empty(x.shape(), codes ? DType::bf16 : DType::f32);
  ds::ops::bf16_round(ref_ctx(), x, out);
  return out;
}

// What gather_rows_bf16 promises, each step the reference op: the rows gathered, scattered
// with weights w into zeros (0 + w x: -0 becomes +0) when weighted, and rounded.
Tensor gathered(const Tensor& src, const Tensor& rows, const Tensor& w, bool codes) {
  const int64_t M = rows.size(0), C = src.size(1);
  Tensor g = Tensor::empty({M, C});
  ds::ops::gather_rows(ref_ctx(), src, rows, g);
  if (!w.defined()) return rounded(g, codes);
  Tensor z = Tensor::zeros({M, C}), iota = Tensor::empty({M}, DType::i32);
  for (int64_t m = 0; m < M; ++m) iota.i32()[m] = int32_t(m);
  ds::ops::scatter_add_rows(ref_ctx(), g, iota, w, z);
  return rounded(z, codes);
}

}  // namespace

TEST_CASE("emulated BF16 rounding equals the reference") {
  std::mt19937_64 rng(3);
  for (const int64_t n : {int64_t(1000), int64_t(13), int64_t(1)}) {
    CAPTURE(n);
    const Tensor x = round_input(n, rng);
    const Tensor want_f = rounded(x, false), want_c = rounded(x, true);
    for (int outs = 1; outs <= 3; ++outs) {   // 1 F32, 2 codes, 3 both (scalar kernel)
      CAPTURE(outs);
      EmuBuf xin(x, 4), f(size_t(n) * 4, 4), c(size_t(n) * 2, 4);
      launch(br::bf16_round_kernel, dim3(2), dim3(64), xin.f(), outs & 1 ? f.f() : nullptr,
             outs & 2 ? c.u() : nullptr, n);
      if (outs & 1) CHECK(bit_mismatches(f.f(), want_f.f32(), n) == 0);
      if (outs & 2) CHECK(code_mismatches(c.u(), want_c.data<uint16_t>(), n) == 0);
      CHECK((f.ok() && c.ok()));
    }
    // the 4-wide body over the first n / 4 groups of four (the launcher takes the rest
    // scalar); what lies past them stays untouched
    const int64_t n4 = n / 4;
    if (n4 == 0) continue;
    for (const bool codes : {false, true}) {
      CAPTURE(codes);
      EmuBuf xin(x, 0), out(size_t(n) * (codes ? 2 : 4), 0);
      const auto* x4 = reinterpret_cast<const float4*>(xin.f());
      if (codes) launch(br::bf16_round4_kernel<true>, dim3(3), dim3(32), x4, out.ptr(), n4);
      else launch(br::bf16_round4_kernel<false>, dim3(3), dim3(32), x4, out.ptr(), n4);
      if (codes) CHECK(code_mismatches(out.u(), want_c.data<uint16_t>(), 4 * n4) == 0);
      else CHECK(bit_mismatches(out.f(), want_f.f32(), 4 * n4) == 0);
      const size_t done = size_t(4 * n4) * (codes ? 2 : 4);
      bool rest = true;
      for (size_t i = done; i < out.g.n; ++i) rest = rest && out.g.data()[i] == 0xa5;
      CHECK(rest);
      CHECK(out.ok());
    }
  }
}

TEST_CASE("emulated rounding row gathers and their dots equal the reference") {
  std::mt19937_64 rng(5);
  const int64_t N = 37, M = 45;
  for (const int64_t C : {int64_t(36), int64_t(37), int64_t(4), int64_t(200)})
    for (int mode = 0; mode < 8; ++mode) {   // bit 0 codes, bit 1 weighted, bit 2 4-wide
      const bool codes = mode & 1, weighted = mode & 2, vec = (mode & 4) && C % 4 == 0;
      if ((mode & 4) && !vec) continue;
      const std::string what = "C " + std::to_string(C) + (codes ? " codes" : " f32") +
                               (weighted ? " weighted" : "") + (vec ? " vec" : " scalar");
      INFO(what);
      const Tensor src = emu_random({N, C}, rng, -4.f, 4.f);
      src.f32()[5] = -0.0f;   // kept unweighted; 0 + w * -0 is +0
      src.f32()[7] = 1e-39f;  // a subnormal product, kept
      Tensor rows = Tensor::empty({M}, DType::i32), w;
      for (int64_t m = 0; m < M; ++m) rows.i32()[m] = int32_t(rng() % uint64_t(N));
      rows.i32()[1] = 0;   // row 0's -0 and subnormal, weighted by w[1] > 0
      if (weighted) {
        w = emu_random({M}, rng, -2.f, 2.f);
        w.f32()[1] = 0.75f;
      }
      const Tensor want = gathered(src, rows, w, codes);
      const Tensor bf = emu_random({M, C}, rng, -2.f, 2.f), bc = rounded(bf, true);
      const size_t skew = vec ? 0 : 4, esz = codes ? 2 : 4;
      EmuBuf s(src, skew), r(rows, 0);
      EmuBuf wb = weighted ? EmuBuf(w, 0) : EmuBuf(0, 0);
      const float* wp = weighted ? wb.f() : nullptr;
      const auto* rp = reinterpret_cast<const int32_t*>(r.ptr());
      auto check_out = [&](EmuBuf& out) {
        if (codes) CHECK(code_mismatches(out.u(), want.data<uint16_t>(), M * C) == 0);
        else CHECK(bit_mismatches(out.f(), want.f32(), M * C) == 0);
        CHECK(out.ok());
      };
      {   // without the dot
        EmuBuf out(size_t(M * C) * esz, skew);
        auto* k = vec ? (codes ? br::gather_rows_bf16_kernel<true, true>
                               : br::gather_rows_bf16_kernel<true, false>)
                      : (codes ? br::gather_rows_bf16_kernel<false, true>
                               : br::gather_rows_bf16_kernel<false, false>);
        launch(k, dim3(2), dim3(64), s.f(), N, rp, wp, out.ptr(), M, C, nullptr, nullptr);
        check_out(out);
      }
      for (const bool b16 : {false, true}) {   // with the dot of an F32 or a BF16-code b
        CAPTURE(b16);
        EmuBuf out(size_t(M * C) * esz, skew), dot(size_t(M) * 4, 0);
        EmuBuf b = b16 ? EmuBuf(bc, vec ? 0 : 2) : EmuBuf(bf, skew);
        auto* k = b16 ? (vec ? (codes ? br::gather_rows_bf16_kernel<true, true, true, true>
                                      : br::gather_rows_bf16_kernel<true, false, true, true>)
                             : (codes ? br::gather_rows_bf16_kernel<false, true, true, true>
                                      : br::gather_rows_bf16_kernel<false, false, true, true>))
                      : (vec ? (codes ? br::gather_rows_bf16_kernel<true, true, true>
                                      : br::gather_rows_bf16_kernel<true, false, true>)
                             : (codes ? br::gather_rows_bf16_kernel<false, true, true>
                                      : br::gather_rows_bf16_kernel<false, false, true>));
        launch(k, dim3(2), dim3(64), s.f(), N, rp, wp, out.ptr(), M, C, b.ptr(), dot.f());
        check_out(out);
        // the reference: gather_rows_dot over b's F32 values (the codes widened)
        Tensor bv = b16 ? rounded(bf, false) : bf, want_dot = Tensor::empty({M});
        ds::ops::gather_rows_dot(ref_ctx(), src, rows, bv, want_dot);
        CHECK(dot_mismatches(dot.f(), want_dot.f32(), src.f32(), rows.i32(), bv.f32(), M, C) ==
              0);
        CHECK(dot.ok());
      }
    }
}

TEST_CASE("emulated rounding row gather: rows outside the source give zeros and a zero dot") {
  std::mt19937_64 rng(9);
  const int64_t N = 6, M = 5, C = 8;
  const Tensor src = emu_random({N, C}, rng), b = emu_random({M, C}, rng);
  const int32_t rows[M] = {2, -1, 5, 6, 0};   // -1 and N are outside
  std::vector<uint16_t> out(size_t(M * C), 0xffff);
  std::vector<float> dot(M, NAN);
  launch(br::gather_rows_bf16_kernel<true, true, true>, dim3(1), dim3(32), src.f32(), N, rows,
         static_cast<const float*>(nullptr), static_cast<void*>(out.data()), M, C,
         static_cast<const void*>(b.f32()), dot.data());
  for (const int m : {1, 3}) {
    CAPTURE(m);
    CHECK(dot[size_t(m)] == 0.0f);
    for (int64_t c = 0; c < C; ++c) CHECK(out[size_t(m * C + c)] == 0);
  }
  for (const int m : {0, 2, 4}) {
    CAPTURE(m);
    CHECK(dot[size_t(m)] != 0.0f);
    CHECK(out[size_t(m * C)] == ds::f32_to_bf16(src.f32()[rows[m] * C]));
  }
}
