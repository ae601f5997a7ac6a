// The routed experts' FP8 ops on the CPU: the transposed 128x1 quantiser against the 128x1
// quantisation of the untransposed matrix, and so the Linear backward's two quantisations
// that include it (ops::fp8_quantize_dual, fp8_requantize_transposed); the many-matrix
// 128x128 weight quantiser (ops::fp8_quantize_blocks_multi) bit for bit against fp8_quantize
// of each matrix and of its transpose; the grouped FP8 GEMMs (ops::fp8_gemm_nt_grouped,
// m-grouped: Fprop and Dgrad; ops::fp8_gemm_nt_kgrouped, k-grouped: Wgrad) against
// double-precision sums of the dequantised operands, group by group: a row of c must use its
// own group's weight, a k-group only its own K columns and scales, and c[g] is accumulated
// into. Groups include empty ones and one of exactly 128 rows; N and K are not multiples of
// 128. Also the argument errors (unaligned offsets, wrong scale shapes, mismatched groups).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "fp8_test_util.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {

// |got - (base + sum_k da[m, k] db[n, k])| within the FP32 bound of the per-128 promotion
// (FP32 partial sums of <= 128 products, two scale products and an accumulation per block).
bool close(double got, double base, const float* da, const float* db,
           const std::vector<int64_t>& ks) {
  double exact = base, mag = std::fabs(base);
  for (int64_t k : ks) {
    const double p = double(da[k]) * db[k];
    exact += p;
    mag += std::fabs(p);
  }
  const double n = double(ks.size());
  return std::fabs(got - exact) <= (n + 2 * (n / 128 + 1) + 8) * std::ldexp(1.0, -24) * mag;
}

std::vector<int64_t> range(int64_t b, int64_t e) {
  std::vector<int64_t> r;
  for (int64_t k = b; k < e; ++k) r.push_back(k);
  return r;
}

}  // namespace

TEST_CASE("fp8_gemm_nt_grouped: each row tile uses its group's weight (128x128 and 1x128 b)") {
  const int64_t N = 200, K = 300;
  const std::vector<int64_t> off = {0, 256, 256, 384, 640};   // 2 tiles, empty, 1 tile, 2 tiles
  const int64_t M = off.back();
  const Quant a(banded(M, K), Fp8Group::row_1x128, true);
  for (const Fp8Group bg : {Fp8Group::block_128x128, Fp8Group::row_1x128}) {
    CAPTURE(int(bg));
    std::vector<Quant> w;
    std::vector<Tensor> bq, bs;
    for (size_t g = 0; g + 1 < off.size(); ++g) {
      w.emplace_back(banded(N, K), bg, false);
      bq.push_back(w.back().q);
      bs.push_back(w.back().s);
    }
    for (const Context& ctx : {ref_ctx(), opt_ctx(2)}) {
      Tensor c;
      fp8_gemm_nt_grouped(ctx, a.q, a.s, bq, bs, off, c, bg);
      REQUIRE(c.shape() == Shape{M, N});
      int64_t bad = 0;
      for (size_t g = 0; g + 1 < off.size(); ++g)
        for (int64_t m = off[g]; m < off[g + 1]; ++m)
          for (int64_t n = 0; n < N; ++n)
            if (!close(c.f32()[m * N + n], 0, a.d.f32() + m * K, w[g].d.f32() + n * K,
                       range(0, K)))
              ++bad;
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("fp8_gemm_nt_kgrouped: each group sums its own K range into its own c") {
  const int64_t M = 130, N = 70;
  const std::vector<int64_t> off = {0, 128, 128, 512, 640};   // 1 block, empty, 3, 1
  const int64_t K = off.back();
  const Quant a(banded(M, K), Fp8Group::row_1x128, false);
  const Quant b(banded(N, K), Fp8Group::row_1x128, true);
  for (const Context& ctx : {ref_ctx(), opt_ctx(2)}) {
    std::vector<Tensor> c, c0;
    for (size_t g = 0; g + 1 < off.size(); ++g) {
      c.push_back(banded(M, N));
      c0.push_back(c.back().clone());
    }
    fp8_gemm_nt_kgrouped(ctx, a.q, a.s, b.q, b.s, off, c);
    int64_t bad = 0;
    for (size_t g = 0; g + 1 < off.size(); ++g)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          // the dequantised rows are contiguous in K: index k of row m is m * K + k
          const double got = c[g].f32()[m * N + n], base = c0[g].f32()[m * N + n];
          if (!close(got, base, a.d.f32() + m * K, b.d.f32() + n * K,
                     range(off[g], off[g + 1])))
            ++bad;
        }
    CHECK(bad == 0);
    CHECK(c[1].f32()[5] == c0[1].f32()[5]);   // the empty group is untouched
  }
}

// The last offset (= K) may end inside a 128 block: an FP8 Linear's Wgrad over any token
// count as one group (model::Linear on the GPU). Bit for bit fp8_gemm_nt over each group's
// columns, then add_, with the partial block last; an offset inside a block elsewhere refused.
TEST_CASE("fp8_gemm_nt_kgrouped: a partial last K block == fp8_gemm_nt, then add_") {
  const int64_t M = 70, N = 45;
  for (const std::vector<int64_t>& off :
       {std::vector<int64_t>{0, 300}, {0, 128, 128, 300}, {0, 256, 300}, {0, 300, 300}}) {
    const int64_t K = off.back();
    const Quant a(banded(M, K), Fp8Group::row_1x128, false);
    const Quant b(banded(N, K), Fp8Group::row_1x128, true);
    for (const Context& ctx : {ref_ctx(), opt_ctx(2)}) {
      std::vector<Tensor> c, want;
      for (size_t g = 0; g + 1 < off.size(); ++g) {
        c.push_back(banded(M, N));
        want.push_back(c.back().clone());
        const int64_t k0 = off[g], kn = off[g + 1] - k0;
        if (kn == 0) continue;
        auto cols = [&](const Tensor& t, int64_t c0, int64_t n) {   // a copy of columns
          Tensor out = Tensor::empty({t.size(0), n}, t.dtype());
          const size_t es = size_t(dtype_size(t.dtype()));
          for (int64_t r = 0; r < t.size(0); ++r)
            std::memcpy(static_cast<char*>(out.raw()) + size_t(r * n) * es,
                        static_cast<const char*>(t.raw()) + size_t(r * t.size(1) + c0) * es,
                        size_t(n) * es);
          return out;
        };
        Tensor part;
        const int64_t s0 = k0 / 128, sn = (kn + 127) / 128;
        fp8_gemm_nt(ctx, cols(a.q, k0, kn), cols(a.s, s0, sn), cols(b.q, k0, kn),
                    cols(b.s, s0, sn), part, Fp8Group::row_1x128, Fp8Group::row_1x128);
        add_(ctx, want.back(), part);
      }
      fp8_gemm_nt_kgrouped(ctx, a.q, a.s, b.q, b.s, off, c);
      for (size_t g = 0; g < c.size(); ++g)
        CHECK(std::memcmp(c[g].raw(), want[g].raw(), c[g].nbytes()) == 0);
    }
  }
  const Quant k(banded(16, 300), Fp8Group::row_1x128, false);
  std::vector<Tensor> cs = {Tensor::zeros({16, 16}), Tensor::zeros({16, 16})};
  CHECK_THROWS_WITH_AS(fp8_gemm_nt_kgrouped(opt_ctx(), k.q, k.s, k.q, k.s, {0, 200, 300}, cs),
                       doctest::Contains("not a multiple of 128"), ds::Error);
}

TEST_CASE("fp8_quantize_transposed: x's 128x1 groups, written transposed") {
  for (const Shape& sh : {Shape{300, 200}, Shape{128, 64}, Shape{1, 7}, Shape{257, 129}})
    for (const ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0})
      for (const bool act : {false, true}) {
        CAPTURE(sh[0]);
        CAPTURE(int(fmt));
        CAPTURE(act);
        Tensor x = banded(sh[0], sh[1]);
        x.f32()[0] = 0;
        for (int64_t i = 0; i < std::min<int64_t>(sh[0], 128); ++i) x.f32()[i * sh[1] + 1] = 0;
        Tensor qt, st, q, s;
        fp8_quantize_transposed(opt_ctx(), x, fmt, act, qt, st);
        REQUIRE(qt.shape() == Shape{sh[1], sh[0]});
        // against the 128x1 quantisation of x itself, transposed here
        fp8_quantize(ref_ctx(), x, Fp8Group::col_128x1, fmt, act, q, s);
        const int64_t M = sh[0], K = sh[1], SR = (M + 127) / 128;
        int64_t bad = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < K; ++j)
            bad += qt.data<uint8_t>()[j * M + i] != q.data<uint8_t>()[i * K + j];
        for (int64_t rb = 0; rb < SR; ++rb)
          for (int64_t j = 0; j < K; ++j) bad += st.f32()[j * SR + rb] != s.f32()[rb * K + j];
        CHECK(bad == 0);
      }
  Tensor x = banded(10, 10), qt = Tensor::empty({10, 9}, DType::u8), st;
  CHECK_THROWS_AS(fp8_quantize_transposed(opt_ctx(), x, ScaleFormat::fp32, true, qt, st),
                  ds::Error);
}

TEST_CASE("fp8_quantize_dual and fp8_requantize_transposed: the Linear backward's operands") {
  for (const Shape& sh : {Shape{300, 200}, Shape{16, 4}, Shape{129, 257}})
    for (const ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0}) {
      CAPTURE(sh[0]);
      CAPTURE(int(fmt));
      const int64_t M = sh[0], K = sh[1], SR = (M + 127) / 128;
      Tensor x = banded(M, K);
      for (int64_t j = 0; j < K; ++j) {   // a zero row, a row under the act clamp's 1e-4
        x.f32()[1 * K + j] = 0;
        x.f32()[2 * K + j] = 1e-6f * float(1 + j % 3);
      }
      for (int64_t i = 0; i < M; ++i) x.f32()[i * K + 3] = 0;   // a zero column
      // the transposed codes against the 128x1 quantisation of y, transposed here
      auto same_t = [&](const Tensor& qt, const Tensor& st, const Tensor& y, bool act) {
        Tensor q, s;
        fp8_quantize(ref_ctx(), y, Fp8Group::col_128x1, fmt, act, q, s);
        int64_t bad = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < K; ++j)
            bad += qt.data<uint8_t>()[j * M + i] != q.data<uint8_t>()[i * K + j];
        for (int64_t rb = 0; rb < SR; ++rb)
          for (int64_t j = 0; j < K; ++j) bad += st.f32()[j * SR + rb] != s.f32()[rb * K + j];
        return bad;
      };
      Tensor q, s, qt, st, wq, ws;
      fp8_quantize_dual(opt_ctx(), x, fmt, false, q, s, qt, st);
      fp8_quantize(ref_ctx(), x, Fp8Group::row_1x128, fmt, false, wq, ws);
      CHECK(std::memcmp(q.raw(), wq.raw(), size_t(wq.numel())) == 0);
      CHECK(std::memcmp(s.raw(), ws.raw(), size_t(ws.numel()) * 4) == 0);
      CHECK(same_t(qt, st, x, false) == 0);
      Tensor rt, rs, xc = Tensor::empty({M, K});
      fp8_requantize_transposed(opt_ctx(), x, fmt, true, rt, rs);
      fp8_fake_quant(ref_ctx(), x, Fp8Group::row_1x128, fmt, true, xc);
      CHECK(same_t(rt, rs, xc, true) == 0);
    }
  Tensor x = banded(10, 10), q, s, qt = Tensor::empty({10, 9}, DType::u8), st;
  CHECK_THROWS_AS(fp8_quantize_dual(opt_ctx(), x, ScaleFormat::fp32, false, q, s, qt, st),
                  ds::Error);
  CHECK_THROWS_AS(fp8_requantize_transposed(opt_ctx(), x, ScaleFormat::fp32, true, qt, st),
                  ds::Error);
  Tensor x3 = Tensor::empty({2, 3, 4}), q3, s3, qt3, st3;
  CHECK_THROWS_AS(fp8_quantize_dual(opt_ctx(), x3, ScaleFormat::fp32, false, q3, s3, qt3, st3),
                  ds::Error);
}

TEST_CASE("fp8_quantize_blocks_multi: each matrix and its transpose as fp8_quantize gives them") {
  const std::vector<Shape> shapes = {{200, 300}, {128, 128}, {1, 5}, {300, 129}};
  for (const ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0}) {
    CAPTURE(int(fmt));
    std::vector<Tensor> x, q, s, qt, st;
    for (const Shape& sh : shapes) {
      x.push_back(banded(sh[0], sh[1]));
      q.push_back(Tensor::empty(sh, DType::u8));
      s.push_back(Tensor::empty(fp8_scale_shape(sh[0], sh[1], Fp8Group::block_128x128)));
      qt.push_back(Tensor::empty({sh[1], sh[0]}, DType::u8));
      st.push_back(Tensor::empty(fp8_scale_shape(sh[1], sh[0], Fp8Group::block_128x128)));
    }
    x[0].f32()[7] = 0;   // a zero, and a whole zero block in matrix 1 (scale 1)
    for (int64_t i = 0; i < 128 * 128; ++i) x[1].f32()[i] = 0;
    std::vector<const Tensor*> xp;
    std::vector<Tensor*> qp, sp, qtp, stp;
    for (size_t i = 0; i < x.size(); ++i) {
      xp.push_back(&x[i]);
      qp.push_back(&q[i]);
      sp.push_back(&s[i]);
      qtp.push_back(&qt[i]);
      stp.push_back(&st[i]);
    }
    fp8_quantize_blocks_multi(opt_ctx(2), xp, fmt, qp, sp, qtp, stp);
    for (size_t i = 0; i < x.size(); ++i) {
      CAPTURE(i);
      Tensor wq, ws, tq, ts;
      fp8_quantize(ref_ctx(), x[i], Fp8Group::block_128x128, fmt, false, wq, ws);
      Tensor xt = Tensor::empty({x[i].size(1), x[i].size(0)});
      transpose(ref_ctx(), x[i], xt);
      fp8_quantize(ref_ctx(), xt, Fp8Group::block_128x128, fmt, false, tq, ts);
      CHECK(std::memcmp(q[i].raw(), wq.raw(), size_t(wq.numel())) == 0);
      CHECK(std::memcmp(s[i].raw(), ws.raw(), size_t(ws.numel()) * 4) == 0);
      CHECK(std::memcmp(qt[i].raw(), tq.raw(), size_t(tq.numel())) == 0);
      CHECK(std::memcmp(st[i].raw(), ts.raw(), size_t(ts.numel()) * 4) == 0);
    }
    // a transposed output of the wrong shape; no output at all
    Tensor q2 = Tensor::empty({128, 200}, DType::u8), s2 = Tensor::empty({1, 2});
    std::vector<Tensor*> q2p = {&q2}, s2p = {&s2};
    const std::vector<const Tensor*> x0 = {&x[0]};
    CHECK_THROWS_AS(fp8_quantize_blocks_multi(opt_ctx(), x0, fmt, {}, {}, q2p, s2p), ds::Error);
    CHECK_THROWS_AS(fp8_quantize_blocks_multi(opt_ctx(), x0, fmt, {}, {}, {}, {}), ds::Error);
    CHECK_NOTHROW(fp8_quantize_blocks_multi(opt_ctx(), {}, fmt, {}, {}, {}, {}));   // no matrix
    // F8_E4M3 transposed codes alone: the same bytes as the U8 ones
    Tensor q3 = Tensor::empty({300, 200}, DType::f8_e4m3), s3 = Tensor::empty({3, 2});
    std::vector<Tensor*> q3p = {&q3}, s3p = {&s3};
    fp8_quantize_blocks_multi(opt_ctx(), x0, fmt, {}, {}, q3p, s3p);
    CHECK(std::memcmp(q3.raw(), qt[0].raw(), size_t(q3.numel())) == 0);
    std::vector<Tensor*> mixed = {&q[0]};   // U8 codes with F8_E4M3 transposed codes
    CHECK_THROWS_AS(fp8_quantize_blocks_multi(opt_ctx(), x0, fmt, mixed, {&s[0]}, q3p, s3p),
                    ds::Error);
  }
}

TEST_CASE("fp8 grouped GEMMs: argument errors") {
  const Quant a(banded(256, 64), Fp8Group::row_1x128, true);
  const Quant w(banded(32, 64), Fp8Group::block_128x128, false);
  std::vector<Tensor> bq = {w.q, w.q}, bs = {w.s, w.s};
  Tensor c;
  CHECK_THROWS_AS(fp8_gemm_nt_grouped(opt_ctx(), a.q, a.s, bq, bs, {0, 100, 256}, c), ds::Error);
  CHECK_THROWS_AS(fp8_gemm_nt_grouped(opt_ctx(), a.q, a.s, bq, bs, {0, 128}, c), ds::Error);
  CHECK_THROWS_AS(fp8_gemm_nt_grouped(opt_ctx(), a.q, a.s, bq, bs, {0, 256, 128}, c), ds::Error);
  std::vector<Tensor> wrong_s = {w.s, a.s};
  CHECK_THROWS_AS(fp8_gemm_nt_grouped(opt_ctx(), a.q, a.s, bq, wrong_s, {0, 128, 256}, c),
                  ds::Error);
  CHECK_THROWS_AS(fp8_gemm_nt_grouped(opt_ctx(), a.q, a.s, bq, bs, {0, 128, 256}, c,
                                      Fp8Group::tensor),
                  ds::Error);
  const Quant kt(banded(16, 256), Fp8Group::row_1x128, false);
  std::vector<Tensor> cs = {Tensor::zeros({16, 16}), Tensor::zeros({16, 15})};
  CHECK_THROWS_AS(fp8_gemm_nt_kgrouped(opt_ctx(), kt.q, kt.s, kt.q, kt.s, {0, 128, 256}, cs),
                  ds::Error);   // c[1] has the wrong shape
  cs[1] = Tensor::zeros({16, 16});
  CHECK_THROWS_AS(fp8_gemm_nt_kgrouped(opt_ctx(), kt.q, kt.s, kt.q, kt.s, {0, 64, 256}, cs),
                  ds::Error);   // not a multiple of 128
  CHECK_NOTHROW(fp8_gemm_nt_kgrouped(opt_ctx(), kt.q, kt.s, kt.q, kt.s, {0, 128, 256}, cs));
  std::vector<Tensor> same = {cs[0], cs[0]};   // two groups adding into one tensor
  CHECK_THROWS_AS(fp8_gemm_nt_kgrouped(opt_ctx(), kt.q, kt.s, kt.q, kt.s, {0, 128, 256}, same),
                  ds::Error);
}
