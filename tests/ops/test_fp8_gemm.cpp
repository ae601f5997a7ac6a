// The FP8 GEMM with per-128 promotion (ops::fp8_gemm_nt, spec §3.4): against a double-precision
// product of the dequantised operands within the FP32 summation bound, the optimised kernel
// against the reference at 1-3 threads, and against the CPU emulation used by training
// (fp8_fake_quant on each operand, then the FP32 GEMM) for the three GEMMs of a Linear: Fprop
// (1x128 x 128x128), Dgrad (the same groupings on the transposed weight) and Wgrad (1x128 on
// both transposed operands, i.e. 128x1 tiles of the untransposed ones), plus per-tensor scales.
// Operands vary in magnitude across K blocks and rows, so a scale applied to the wrong block
// is caught.
#include <cmath>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "fp8_test_util.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {

Tensor transpose(const Tensor& x) {
  const int64_t R = x.size(0), C = x.size(1);
  Tensor t = Tensor::empty({C, R});
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) t.f32()[c * R + r] = x.f32()[r * C + c];
  return t;
}

// c vs sum_k da[m,k] db[n,k] in double; |diff| <= (K + 2 K/128 + 8) 2^-24 sum_k |da db|
// (FP32 partial sums of <= 128 terms, two scale products and one accumulation per block).
void check_against_double(const Tensor& c, const Tensor& da, const Tensor& db,
                          const char* what, double slack = 1.0) {
  const int64_t M = da.size(0), N = db.size(0), K = da.size(1);
  int64_t bad = 0;
  double worst = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double exact = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = double(da.f32()[m * K + k]) * db.f32()[n * K + k];
        exact += p;
        mag += std::fabs(p);
      }
      const double tol = slack * double(K + 2 * (K / 128 + 1) + 8) * std::ldexp(1.0, -24) * mag;
      const double err = std::fabs(double(c.f32()[m * N + n]) - exact);
      worst = std::max(worst, mag > 0 ? err / mag : err);
      if (!(err <= tol) && bad++ < 3)
        FAIL_CHECK(what, ": c(", m, ", ", n, ") = ", c.f32()[m * N + n], " want ", exact,
                   " tol ", tol);
    }
  INFO(what, ": worst error / sum|products| = ", worst);
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("fp8_gemm_nt: Fprop groupings against double, reference, and fake-quant + FP32 GEMM") {
  for (const Shape& mnk : {Shape{70, 200, 300}, Shape{5, 130, 128}, Shape{129, 64, 517}}) {
    const int64_t M = mnk[0], N = mnk[1], K = mnk[2];
    INFO("M N K = ", M, " ", N, " ", K);
    Tensor x = banded(M, K), w = banded(N, K);
    Quant a(x, Fp8Group::row_1x128, true), b(w, Fp8Group::block_128x128, false);
    Tensor cref, c1, c3;
    fp8_gemm_nt(ref_ctx(), a.q, a.s, b.q, b.s, cref);
    fp8_gemm_nt(opt_ctx(1), a.q, a.s, b.q, b.s, c1);
    fp8_gemm_nt(opt_ctx(3), a.q, a.s, b.q, b.s, c3);
    check_against_double(cref, a.d, b.d, "reference");
    check_against_double(c1, a.d, b.d, "optimised, 1 thread");
    check_against_double(c3, a.d, b.d, "optimised, 3 threads");
    CHECK(nmse(c1, c3) == 0);   // panels of rows: the thread count does not change sums

    // The training emulation: fake-quantised operands through the FP32 GEMM (one FP32 sum
    // over K instead of per-block promotion): the same product up to summation order.
    Tensor fx, fw, cemu = Tensor::empty({M, N});
    fp8_fake_quant(opt_ctx(), x, Fp8Group::row_1x128, ScaleFormat::fp32, true, fx);
    fp8_fake_quant(opt_ctx(), w, Fp8Group::block_128x128, ScaleFormat::fp32, false, fw);
    CHECK(nmse(fx, a.d) == 0);
    CHECK(nmse(fw, b.d) == 0);
    linear_forward(opt_ctx(2), fx, fw, cemu);
    check_against_double(cemu, a.d, b.d, "fake-quant + FP32 GEMM");

    // The test discriminates: the unquantised product is far outside the bound.
    Tensor cfull = Tensor::empty({M, N});
    linear_forward(opt_ctx(2), x, w, cfull);
    CHECK(nmse(cfull, c1) > 1e-5);
  }
}

TEST_CASE("fp8_gemm_nt: Dgrad and Wgrad groupings equal the training emulation") {
  const int64_t Ntok = 260, In = 200, Out = 150;
  Tensor x = banded(Ntok, In), w = banded(Out, In), dy = banded(Ntok, Out);
  // Dgrad: dx (Ntok, In) = Q_1x128(dy) @ Q_128x128(W); NT operand b = W^T (In, Out), whose
  // 128x128 blocks are the transposed blocks of W.
  {
    Quant a(dy, Fp8Group::row_1x128, true), b(transpose(w), Fp8Group::block_128x128, false);
    Tensor c;
    fp8_gemm_nt(opt_ctx(2), a.q, a.s, b.q, b.s, c);
    check_against_double(c, a.d, b.d, "dgrad");
    Tensor fdy, fw, dx = Tensor::empty({Ntok, In});
    fp8_fake_quant(opt_ctx(), dy, Fp8Group::row_1x128, ScaleFormat::fp32, true, fdy);
    fp8_fake_quant(opt_ctx(), w, Fp8Group::block_128x128, ScaleFormat::fp32, false, fw);
    CHECK(nmse(transpose(fw), b.d) == 0);   // block quantisation commutes with transposition
    matmul(opt_ctx(2), fdy, fw, dx, false, false);
    check_against_double(dx, a.d, b.d, "dgrad emulation");
  }
  // Wgrad: dW (Out, In) = Q_128x1(dy)^T @ Q_128x1(Xc), Xc = dequantised 1x128 input; NT
  // operands dy^T (Out, Ntok) and Xc^T (In, Ntok), both grouped 1x128 along Ntok.
  {
    Tensor xc;
    fp8_fake_quant(opt_ctx(), x, Fp8Group::row_1x128, ScaleFormat::fp32, true, xc);
    Quant a(transpose(dy), Fp8Group::row_1x128, true), b(transpose(xc), Fp8Group::row_1x128, true);
    Tensor c;
    fp8_gemm_nt(opt_ctx(2), a.q, a.s, b.q, b.s, c, Fp8Group::row_1x128, Fp8Group::row_1x128);
    check_against_double(c, a.d, b.d, "wgrad");
    Tensor cr;
    fp8_gemm_nt(ref_ctx(), a.q, a.s, b.q, b.s, cr, Fp8Group::row_1x128, Fp8Group::row_1x128);
    check_against_double(cr, a.d, b.d, "wgrad reference");
    Tensor fdy, fxc, dw = Tensor::zeros({Out, In});
    fp8_fake_quant(opt_ctx(), dy, Fp8Group::col_128x1, ScaleFormat::fp32, true, fdy);
    fp8_fake_quant(opt_ctx(), xc, Fp8Group::col_128x1, ScaleFormat::fp32, true, fxc);
    CHECK(nmse(transpose(fdy), a.d) == 0);   // 128x1 tiles = 1x128 tiles of the transpose
    CHECK(nmse(transpose(fxc), b.d) == 0);
    matmul(opt_ctx(2), fdy, fxc, dw, true, false);
    check_against_double(dw, a.d, b.d, "wgrad emulation");
  }
}

TEST_CASE("fp8_gemm_nt: per-tensor scales and UE8M0") {
  const int64_t M = 40, N = 140, K = 260;
  Tensor x = banded(M, K), w = banded(N, K);
  for (int64_t k = 0; k < K; ++k) x.f32()[k] *= 65536.0f;   // an outlier token (row 0)
  Tensor qa, sa, qb, sb, da, db;
  fp8_quantize(opt_ctx(), x, Fp8Group::tensor, ScaleFormat::ue8m0, true, qa, sa);
  fp8_quantize(opt_ctx(), w, Fp8Group::tensor, ScaleFormat::ue8m0, false, qb, sb);
  fp8_dequantize(opt_ctx(), qa, sa, Fp8Group::tensor, da);
  fp8_dequantize(opt_ctx(), qb, sb, Fp8Group::tensor, db);
  int e;
  CHECK(std::frexp(sa.f32()[0], &e) == 0.5f);
  Tensor c;
  fp8_gemm_nt(opt_ctx(2), qa, sa, qb, sb, c, Fp8Group::tensor, Fp8Group::tensor);
  check_against_double(c, da, db, "tensor x tensor");
  // With one scale per tensor the outlier row pushes the other tokens into E4M3's subnormals
  // (2^16 / 448 > 2^6): their products are far worse than with 1x128 tiles.
  Quant a(x, Fp8Group::row_1x128, true), b(w, Fp8Group::block_128x128, false);
  Tensor ctile, exact = Tensor::empty({M, N});
  fp8_gemm_nt(opt_ctx(2), a.q, a.s, b.q, b.s, ctile);
  linear_forward(opt_ctx(2), x, w, exact);
  const Tensor rest = exact.slice0(1, M);
  const double e_tensor = nmse(c.slice0(1, M), rest), e_tile = nmse(ctile.slice0(1, M), rest);
  INFO("nmse per-tensor ", e_tensor, " tiles ", e_tile);
  CHECK(e_tensor > 3 * e_tile);
}

TEST_CASE("fp8_gemm_nt: argument errors") {
  Tensor x = banded(4, 130), w = banded(8, 130);
  Quant a(x, Fp8Group::row_1x128, true), b(w, Fp8Group::block_128x128, false);
  Tensor c;
  CHECK_THROWS_AS(fp8_gemm_nt(opt_ctx(), a.q, a.s, b.q, b.s, c, Fp8Group::row_1x128,
                              Fp8Group::row_1x128),   // b scales are (1, 2), not (8, 2)
                  ds::Error);
  CHECK_THROWS_AS(fp8_gemm_nt(opt_ctx(), a.q, a.s, b.q, b.s, c, Fp8Group::col_128x1),
                  ds::Error);
  CHECK_THROWS_AS(fp8_gemm_nt(opt_ctx(), x, a.s, b.q, b.s, c), ds::Error);   // F32, not codes
  Tensor wrong = Tensor::empty({4, 9});
  CHECK_THROWS_AS(fp8_gemm_nt(opt_ctx(), a.q, a.s, b.q, b.s, wrong), ds::Error);
}
