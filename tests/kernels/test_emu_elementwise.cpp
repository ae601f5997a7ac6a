// The element-wise, reduction and row kernels of kernels/elementwise_kernels.cuh run on the
// CPU by the host emulator (cuda_emu.hpp) against the CPU reference ops: the flat add (out
// aliasing an input) and scale bit for bit; the sums' two passes (partials a block, then one
// block) within what another order of double additions allows, the non-finite count exactly;
// the row gathers (plain and weighted, with -0 and subnormal products), the weighted scatter
// (bit for bit where rows are distinct, within rounding where the atomics add in another
// order), the row stores (F32, BF16 copies, F32 rounded to BF16) and the row dots, each on
// its 4-wide and its scalar path, on few blocks so the row groups wrap; rows outside the
// source or destination (zeros, skipped). Outputs sit between guard bytes; scalar paths run 4
// bytes off alignment.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "emu_buffers.hpp"
#include "kernels/elementwise_kernels.cuh"
// (only its row gather here: test_emu_bf16_rows.cpp runs the rest)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "kernels/bf16_rows.cuh"
#pragma GCC diagnostic pop
#include "moe_pairs_util.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::bit_mismatches;
using ds::test::code_mismatches;
using ds::test::dot_mismatches;
using ds::test::emu_random;
using ds::test::EmuBuf;
using ds::test::off_by_more_than_rounding;
using ds::test::ref_ctx;
using ds::test::cuda_emu::launch;
namespace el = ds::cuda::elem;
namespace ew = ds::cuda::ew;

const dim3 kBlock(ew::kThreads);

// Random rows in [0, n) with repeats; distinct ones (a permutation's prefix) when distinct.
Tensor random_rows(int64_t M, int64_t n, bool distinct, std::mt19937_64& rng) {
  Tensor rows = Tensor::empty({M}, DType::i32);
  std::vector<int32_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[size_t(i)] = int32_t(i);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int64_t m = 0; m < M; ++m)
    rows.i32()[m] = distinct ? perm[size_t(m)] : int32_t(rng() % uint64_t(n));
  return rows;
}

std::string what(int64_t C, bool vec, const char* extra = "") {
  return "C " + std::to_string(C) + (vec ? " vec " : " scalar ") + extra;
}

}  // namespace

TEST_CASE("emulated flat add and scale equal the reference") {
  std::mt19937_64 rng(1);
  for (const int64_t n : {int64_t(1003), int64_t(8), int64_t(3)})
    for (const bool vec : {true, false}) {
      INFO(what(n, vec));
      const Tensor a = emu_random({n}, rng), b = emu_random({n}, rng);
      Tensor want = Tensor::empty({n});
      ds::ops::add(ref_ctx(), a, b, want);
      const size_t skew = vec ? 0 : 4;
      EmuBuf ab(a, skew), bb(b, skew), out(size_t(n) * 4, skew);
      launch(el::add_kernel, dim3(2), kBlock, ab.f(), bb.f(), out.f(), n, vec);
      CHECK(bit_mismatches(out.f(), want.f32(), n) == 0);
      launch(el::add_kernel, dim3(3), kBlock, ab.f(), bb.f(), ab.f(), n, vec);   // out = a
      CHECK(bit_mismatches(ab.f(), want.f32(), n) == 0);
      Tensor ws = b.clone();
      ds::ops::scale_(ref_ctx(), ws, -0.3f);
      launch(el::scale_kernel, dim3(1), kBlock, bb.f(), -0.3f, n, vec);
      CHECK(bit_mismatches(bb.f(), ws.f32(), n) == 0);
      CHECK((ab.ok() && bb.ok() && out.ok()));
    }
}

TEST_CASE("emulated sums: partials a block, one final block") {
  std::mt19937_64 rng(2);
  for (const int64_t n : {int64_t(20001), int64_t(4099), int64_t(5)})
    for (const bool vec : {true, false}) {
      INFO(what(n, vec));
      Tensor x = emu_random({n}, rng, -2.f, 3.f);
      const double want_sum = ds::ops::sum(ref_ctx(), x);
      const double want_sq = ds::ops::sum_squares(ref_ctx(), x);
      // two orders of n double additions differ by at most 2 (n - 1) 2^-53 sum |terms|
      double mag = 0;
      for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(x.f32()[i]));
      const double orders = std::ldexp(double(n), -52);
      const size_t skew = vec ? 0 : 4;
      EmuBuf xb(x, skew);
      // the launcher's block count for this work, capped lower here so blocks loop
      const int64_t work = vec ? std::max<int64_t>(n / 4, 1) : n;
      const int nb = int(std::min<int64_t>((work + ew::kThreads - 1) / ew::kThreads, 7));
      std::vector<double> part(size_t(nb) + 1, NAN);
      launch(el::reduce_partial_kernel<el::Red::sum>, dim3(nb), kBlock, xb.f(), n, vec,
             part.data());
      launch(el::reduce_final_kernel<double>, dim3(1), dim3(1024), part.data(), nb,
             part.data() + nb);
      CHECK(std::fabs(part[size_t(nb)] - want_sum) <= orders * mag);
      launch(el::reduce_partial_kernel<el::Red::sumsq>, dim3(nb), kBlock, xb.f(), n, vec,
             part.data());
      launch(el::reduce_final_kernel<double>, dim3(1), dim3(1024), part.data(), nb,
             part.data() + nb);
      CHECK(std::fabs(part[size_t(nb)] - want_sq) <= orders * want_sq);
      // non-finite elements counted exactly (NaN, both infinities; the largest finite is not)
      const float specials[] = {NAN, INFINITY, -INFINITY, std::numeric_limits<float>::max()};
      for (size_t t = 0; t < std::size(specials) && int64_t(t) < n; ++t)
        xb.f()[(int64_t(t) * 997) % n] = x.f32()[(int64_t(t) * 997) % n] = specials[t];
      std::vector<unsigned long long> cnt(size_t(nb) + 1, ~0ull);
      launch(el::reduce_partial_kernel<el::Red::nonfinite>, dim3(nb), kBlock, xb.f(), n, vec,
             cnt.data());
      launch(el::reduce_final_kernel<unsigned long long>, dim3(1), dim3(64), cnt.data(), nb,
             cnt.data() + nb);
      CHECK(int64_t(cnt[size_t(nb)]) == ds::ops::count_nonfinite(ref_ctx(), x));
      CHECK(xb.ok());
    }
}

TEST_CASE("emulated row gathers equal the reference") {
  std::mt19937_64 rng(3);
  const int64_t N = 29, M = 41;
  for (const int64_t C : {int64_t(36), int64_t(37), int64_t(4), int64_t(1100)})
    for (const bool vec : {true, false})
      for (const bool scaled : {false, true}) {
        if (vec && C % 4 != 0) continue;
        INFO(what(C, vec, scaled ? "scaled" : "plain"));
        Tensor src = emu_random({N, C}, rng, -3.f, 3.f);
        src.f32()[0] = -0.0f;   // 0 + w * -0 is +0
        src.f32()[1] = 2e-39f;  // a subnormal product, kept
        const Tensor rows = random_rows(M, N, false, rng), w = emu_random({M}, rng, -2.f, 2.f);
        rows.i32()[0] = 0;
        Tensor want = Tensor::empty({M, C});
        if (scaled) ds::ops::gather_rows_scaled(ref_ctx(), src, rows, w, want);
        else ds::ops::gather_rows(ref_ctx(), src, rows, want);
        const size_t skew = vec ? 0 : 4;
        EmuBuf s(src, skew), out(size_t(M * C) * 4, skew);
        const int64_t Cv = vec ? C / 4 : C;
        const int lg = ew::row_lg(Cv);
        if (vec) {
          auto* k = scaled ? el::gather_rows_kernel<float4, true> : el::gather_rows_kernel<float4>;
          launch(k, dim3(2), kBlock, reinterpret_cast<const float4*>(s.f()), N, rows.i32(),
                 reinterpret_cast<float4*>(out.f()), M, Cv, lg, w.f32());
        } else {
          auto* k = scaled ? el::gather_rows_kernel<float, true> : el::gather_rows_kernel<float>;
          launch(k, dim3(2), kBlock, s.f(), N, rows.i32(), out.f(), M, Cv, lg, w.f32());
        }
        CHECK(bit_mismatches(out.f(), want.f32(), M * C) == 0);
        CHECK(out.ok());
      }
  // rows outside the source give zero rows
  const Tensor src = emu_random({3, 8}, rng);
  const int32_t rows[4] = {-1, 2, 3, 0};
  std::vector<float> out(32, NAN);
  launch(el::gather_rows_kernel<float>, dim3(1), dim3(32), src.f32(), int64_t(3), rows,
         out.data(), int64_t(4), int64_t(8), ew::row_lg(8), static_cast<const float*>(nullptr));
  for (int c = 0; c < 8; ++c) {
    CHECK(out[size_t(c)] == 0.0f);
    CHECK(out[size_t(8 + c)] == src.f32()[16 + c]);
    CHECK(out[size_t(16 + c)] == 0.0f);
  }
}

TEST_CASE("emulated weighted scatter-add and row stores equal the reference") {
  std::mt19937_64 rng(4);
  const int64_t N = 53, M = 40;
  for (const int64_t C : {int64_t(36), int64_t(37), int64_t(260)})
    for (const bool vec : {true, false})
      for (const bool distinct : {true, false}) {
        if (vec && C % 4 != 0) continue;
        INFO(what(C, vec, distinct ? "distinct" : "repeated"));
        const Tensor src = emu_random({M, C}, rng), dst = emu_random({N, C}, rng);
        const Tensor rows = random_rows(M, N, distinct, rng), w = emu_random({M}, rng);
        Tensor want = dst.clone();
        ds::ops::scatter_add_rows(ref_ctx(), src, rows, w, want);
        const size_t skew = vec ? 0 : 4;
        const int64_t Cv = vec ? C / 4 : C;
        const int lg = ew::row_lg(Cv);
        EmuBuf s(src, skew), d(dst, skew);
        if (vec)
          launch(el::scatter_rows_kernel<float4, false>, dim3(2), kBlock,
                 reinterpret_cast<const float4*>(s.f()), rows.i32(), w.f32(),
                 reinterpret_cast<float4*>(d.f()), N, M, Cv, lg);
        else
          launch(el::scatter_rows_kernel<float, false>, dim3(2), kBlock, s.f(), rows.i32(),
                 w.f32(), d.f(), N, M, Cv, lg);
        // one add an element where rows are distinct; atomic adds in another order elsewhere
        if (distinct) CHECK(bit_mismatches(d.f(), want.f32(), N * C) == 0);
        else CHECK(off_by_more_than_rounding(d.f(), want.f32(), N * C) <= N * C / 50);
        CHECK(ds::test::nmse(d.f(), want.f32(), N * C) < 1e-12);
        CHECK(d.ok());
        if (!distinct) continue;
        // set_rows: F32 -> F32 (the SET scatter), BF16 -> BF16, F32 -> BF16
        Tensor want_set = dst.clone();
        ds::ops::set_rows(ref_ctx(), src, rows, want_set);
        EmuBuf d2(dst, skew);
        if (vec)
          launch(el::scatter_rows_kernel<float4, true>, dim3(2), kBlock,
                 reinterpret_cast<const float4*>(s.f()), rows.i32(), nullptr,
                 reinterpret_cast<float4*>(d2.f()), N, M, Cv, lg);
        else
          launch(el::scatter_rows_kernel<float, true>, dim3(2), kBlock, s.f(), rows.i32(),
                 nullptr, d2.f(), N, M, Cv, lg);
        CHECK(bit_mismatches(d2.f(), want_set.f32(), N * C) == 0);
        Tensor src16 = Tensor::empty({M, C}, DType::bf16);
        Tensor dst16 = Tensor::empty({N, C}, DType::bf16);
        ds::ops::bf16_round(ref_ctx(), src, src16);
        ds::ops::bf16_round(ref_ctx(), dst, dst16);
        Tensor want16 = dst16.clone(), want_r = dst16.clone();
        ds::ops::set_rows(ref_ctx(), src16, rows, want16);
        ds::ops::set_rows(ref_ctx(), src, rows, want_r);
        const size_t skew16 = vec ? 0 : 2;
        EmuBuf s16(src16, skew16), o16(dst16, skew16), o_r(dst16, skew16);
        if (vec) {
          launch(el::set_rows_bf16_kernel<uint2, uint2>, dim3(2), kBlock,
                 static_cast<const uint2*>(s16.ptr()), rows.i32(), static_cast<uint2*>(o16.ptr()),
                 N, M, Cv, lg);
          launch(el::set_rows_bf16_kernel<float4, uint2>, dim3(2), kBlock,
                 reinterpret_cast<const float4*>(s.f()), rows.i32(),
                 static_cast<uint2*>(o_r.ptr()), N, M, Cv, lg);
        } else {
          launch(el::set_rows_bf16_kernel<uint16_t, uint16_t>, dim3(2), kBlock, s16.u(),
                 rows.i32(), o16.u(), N, M, Cv, lg);
          launch(el::set_rows_bf16_kernel<float, uint16_t>, dim3(2), kBlock, s.f(), rows.i32(),
                 o_r.u(), N, M, Cv, lg);
        }
        CHECK(code_mismatches(o16.u(), want16.data<uint16_t>(), N * C) == 0);
        CHECK(code_mismatches(o_r.u(), want_r.data<uint16_t>(), N * C) == 0);
        CHECK((d2.ok() && o16.ok() && o_r.ok()));
      }
}

TEST_CASE("emulated row dots equal the reference; the fused BF16 gather's dot has their bits") {
  std::mt19937_64 rng(5);
  const int64_t N = 31, M = 45;
  for (const int64_t C : {int64_t(36), int64_t(37), int64_t(1024)})
    for (const bool vec : {true, false}) {
      if (vec && C % 4 != 0) continue;
      INFO(what(C, vec));
      const Tensor a = emu_random({N, C}, rng, -3.f, 3.f), b = emu_random({M, C}, rng);
      Tensor rows = random_rows(M, N, false, rng), want = Tensor::empty({M});
      ds::ops::gather_rows_dot(ref_ctx(), a, rows, b, want);
      const size_t skew = vec ? 0 : 4;
      EmuBuf ab(a, skew), bb(b, skew), dot(size_t(M) * 4, 0), fused(size_t(M) * 4, 0);
      EmuBuf out(size_t(M * C) * 2, skew);
      const int64_t Cv = vec ? C / 4 : C;
      if (vec)
        launch(el::gather_rows_dot_kernel<float4>, dim3(3), kBlock,
               reinterpret_cast<const float4*>(ab.f()), N, rows.i32(),
               reinterpret_cast<const float4*>(bb.f()), dot.f(), M, Cv);
      else
        launch(el::gather_rows_dot_kernel<float>, dim3(3), kBlock, ab.f(), N, rows.i32(), bb.f(),
               dot.f(), M, Cv);
      CHECK(dot_mismatches(dot.f(), want.f32(), a.f32(), rows.i32(), b.f32(), M, C) == 0);
      // gather_rows_bf16_dot (kernels/bf16_rows.cuh) promises gather_rows_dot's bits on the
      // same path (its launcher falls back to this kernel where the paths would differ)
      namespace br = ds::cuda::bf16rows;
      auto* k = vec ? br::gather_rows_bf16_kernel<true, true, true>
                    : br::gather_rows_bf16_kernel<false, true, true>;
      launch(k, dim3(2), dim3(64), ab.f(), N, rows.i32(), nullptr, out.ptr(), M, C, bb.ptr(),
             fused.f());
      CHECK(bit_mismatches(fused.f(), dot.f(), M) == 0);
      CHECK((dot.ok() && fused.ok() && out.ok()));
    }
}
