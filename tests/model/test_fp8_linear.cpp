// Linear GEMM precisions (ops::Context::linear, docs/model.md "Precision"): fp32 mode is the
// plain FP32 GEMM bit for bit; bf16 and fp8 forward/backward equal a composition written here
// independently (group scales and E4M3 rounding in test-local loops on the core casts, products
// summed in double) within the FP32 summation bound, for tiles (partial edge groups) and per
// tensor, FP32 and UE8M0 scales; non-FP8 Linears run as bf16 in fp8 mode; and a small
// DeepSeek-V3 model's loss and gradients in bf16 / fp8 stay close to fp32.
// reference: DeepSeek-V3 paper §3.3 (Fprop, Dgrad, Wgrad quantisation), App. B.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/core/error.hpp"
#include "ds/core/rng.hpp"
#include "ds/model/linear.hpp"
#include "ds/ops/ops.hpp"
#include "model_test_util.hpp"

using namespace ds;
using namespace ds::model;
using namespace ds::model::testing;

namespace {

ops::Context ctx_of(ops::Precision p, ops::Fp8Granularity g = ops::Fp8Granularity::tile,
                    ops::ScaleFormat f = ops::ScaleFormat::fp32) {
  ops::Context c;
  c.impl = ops::Impl::optimized;
  c.threads = 2;
  c.linear = ops::LinearPrecision{p, g, f};
  return c;
}

Tensor randn(const Shape& s, double sd, uint64_t seed) {
  Tensor t = Tensor::empty(s);
  Rng rng(seed, 5);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(sd * rng.normal());
  return t;
}

// Row-major (R, C) matrix as doubles, and its transpose.
using Mat = std::vector<double>;
Mat to_mat(const Tensor& t) { return Mat(t.f32(), t.f32() + t.numel()); }
Mat transpose(const Mat& m, int64_t R, int64_t C) {
  Mat t(m.size());
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) t[size_t(c * R + r)] = m[size_t(r * C + c)];
  return t;
}

// E4M3 fake-quantisation of an (R, C) matrix in groups of gr x gc (clipped at the edges),
// written from the definition: s = max(amax, 1e-4 for activations) / 448 (UE8M0: the next
// power of two), zero weight groups s = 1, value = e4m3(x / s) * s in FP32.
Mat fake_quant(const Mat& x, int64_t R, int64_t C, int64_t gr, int64_t gc, bool act, bool pow2) {
  Mat out(x.size());
  for (int64_t r0 = 0; r0 < R; r0 += gr)
    for (int64_t c0 = 0; c0 < C; c0 += gc) {
      const int64_t r1 = std::min(R, r0 + gr), c1 = std::min(C, c0 + gc);
      float amax = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          amax = std::max(amax, std::fabs(float(x[size_t(r * C + c)])));
      float s = 1.0f;
      if (act || amax > 0) {
        s = std::max(amax, act ? 1e-4f : 0.0f) / 448.0f;
        if (pow2) s = std::exp2(std::ceil(std::log2(double(s)) - 1e-12));
      }
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          const float v = float(x[size_t(r * C + c)]);
          out[size_t(r * C + c)] = double(e4m3_to_f32(f32_to_e4m3(v / s)) * s);
        }
    }
  return out;
}

Mat bf16(const Mat& x) {
  Mat o(x.size());
  for (size_t i = 0; i < x.size(); ++i) o[i] = bf16_to_f32(f32_to_bf16(float(x[i])));
  return o;
}

// c (M, N) = a (M, K) b (N, K)^T in double, with sum |a||b| per entry for the tolerance.
void gemm_nt(const Mat& a, const Mat& b, int64_t M, int64_t N, int64_t K, Mat& c, Mat& mag) {
  c.assign(size_t(M * N), 0);
  mag.assign(size_t(M * N), 0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const double p = a[size_t(m * K + k)] * b[size_t(n * K + k)];
        c[size_t(m * N + n)] += p;
        mag[size_t(m * N + n)] += std::fabs(p);
      }
}

// got vs want within (K + 8) 2^-24 sum|products| (one FP32 sum of K exact-ish products),
// plus `base` (an accumulated-into gradient's starting value, exact).
void check_close(const Tensor& got, const Mat& want, const Mat& mag, int64_t K, const char* what) {
  int64_t bad = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double tol = double(K + 8) * std::ldexp(1.0, -24) * mag[size_t(i)] + 1e-30;
    if (!(std::fabs(double(got.f32()[i]) - want[size_t(i)]) <= tol) && bad++ < 3)
      FAIL_CHECK(std::string(what), "[", i, "] = ", got.f32()[i], " want ", want[size_t(i)],
                 " tol ", tol);
  }
  CHECK_MESSAGE(bad == 0, std::string(what));
}

double rel(const Tensor& a, const Tensor& b) {   // ||a - b|| / ||b||
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = double(a.f32()[i]) - b.f32()[i];
    num += d * d;
    den += double(b.f32()[i]) * b.f32()[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

struct Run {
  Tensor y, dx, dw;
};

// One forward + backward of `lin` in `ctx` (gradient starting from `g0`).
Run run(const Linear& lin, const ops::Context& ctx, const Tensor& x, const Tensor& dy,
        const Tensor& g0) {
  Run r;
  lin.w->grad.copy_from(g0);
  lin.forward(ctx, x, r.y);
  lin.backward(ctx, x, dy, r.dx);
  r.dw = lin.w->grad.clone();
  return r;
}

}  // namespace

TEST_CASE("Linear precision: fp32 / bf16 / fp8 against an independent composition") {
  const int64_t N = 260, In = 300, Out = 140;   // partial tiles along every dim
  ParamStore store;
  Linear lin(store, "l.weight", Out, In, 0.05, /*fp8=*/true, 0);
  Linear head(store, "h.weight", Out, In, 0.05, /*fp8=*/false, 0);
  store.alloc_grads();
  lin.w->value.copy_from(randn({Out, In}, 0.05, 1));
  head.w->value.copy_from(lin.w->value);
  // Inputs with outlier channels and tokens, so that tiles and tensors scale differently.
  Tensor x = randn({N, In}, 1.0, 2), dy = randn({N, Out}, 1e-6, 3);   // gradient-sized dy
  for (int64_t n = 0; n < N; ++n) x.f32()[n * In + 7] *= 50.0f;
  for (int64_t o = 0; o < Out; ++o) dy.f32()[5 * Out + o] *= 1e5f;
  const Tensor g0 = randn({Out, In}, 1e-2, 4);
  const Mat X = to_mat(x), W = to_mat(lin.w->value), DY = to_mat(dy), G0 = to_mat(g0);

  // fp32: the plain GEMMs, bit for bit.
  const Run r32 = run(lin, ctx_of(ops::Precision::fp32), x, dy, g0);
  {
    Tensor y = Tensor::empty({N, Out}), dx = Tensor::empty({N, In}), dw = g0.clone();
    ops::linear_forward(ctx_of(ops::Precision::fp32), x, lin.w->value, y);
    ops::linear_backward(ctx_of(ops::Precision::fp32), x, lin.w->value, dy, dx, dw);
    CHECK(std::memcmp(y.raw(), r32.y.raw(), y.nbytes()) == 0);
    CHECK(std::memcmp(dx.raw(), r32.dx.raw(), dx.nbytes()) == 0);
    CHECK(std::memcmp(dw.raw(), r32.dw.raw(), dw.nbytes()) == 0);
  }

  // The reference composition: y = Qx Qw^T, dx = Qdy Qw, dW = g0 + Qdy'^T Qx'.
  auto check = [&](const Run& r, const Mat& qx, const Mat& qw, const Mat& qdy, const Mat& qdyw,
                   const Mat& qxw, const char* what) {
    CAPTURE(what);
    Mat c, mag;
    gemm_nt(qx, qw, N, Out, In, c, mag);
    check_close(r.y, c, mag, In, "y");
    gemm_nt(qdy, transpose(qw, Out, In), N, In, Out, c, mag);
    check_close(r.dx, c, mag, Out, "dx");
    gemm_nt(transpose(qdyw, N, Out), transpose(qxw, N, In), Out, In, N, c, mag);
    for (size_t i = 0; i < c.size(); ++i) {
      c[i] += G0[i];
      mag[i] += std::fabs(G0[i]);
    }
    check_close(r.dw, c, mag, N, "dW");
  };

  {   // bf16
    const Run r = run(lin, ctx_of(ops::Precision::bf16), x, dy, g0);
    check(r, bf16(X), bf16(W), bf16(DY), bf16(DY), bf16(X), "bf16");
    CHECK(rel(r.y, r32.y) > 1e-4);   // the rounding is really there
    // A non-FP8 Linear in fp8 mode runs as bf16, bit for bit.
    const Run h = run(head, ctx_of(ops::Precision::fp8), x, dy, g0);
    CHECK(std::memcmp(h.y.raw(), r.y.raw(), h.y.nbytes()) == 0);
    CHECK(std::memcmp(h.dx.raw(), r.dx.raw(), h.dx.nbytes()) == 0);
    CHECK(std::memcmp(h.dw.raw(), r.dw.raw(), h.dw.nbytes()) == 0);
  }
  for (bool pow2 : {false, true}) {
    const auto fmt = pow2 ? ops::ScaleFormat::ue8m0 : ops::ScaleFormat::fp32;
    const auto tile_ctx = ctx_of(ops::Precision::fp8, ops::Fp8Granularity::tile, fmt);
    {   // fp8 tiles
      const Run r = run(lin, tile_ctx, x, dy, g0);
      const Mat qx = fake_quant(X, N, In, 1, 128, true, pow2);
      const Mat qw = fake_quant(W, Out, In, 128, 128, false, pow2);
      const Mat qdy = fake_quant(DY, N, Out, 1, 128, false, pow2);   // gradients: no clamp
      const Mat qdyw = fake_quant(DY, N, Out, 128, 1, false, pow2);
      const Mat qxw = fake_quant(qx, N, In, 128, 1, true, pow2);
      check(r, qx, qw, qdy, qdyw, qxw, pow2 ? "fp8 tiles ue8m0" : "fp8 tiles");
      const double e8 = rel(r.y, r32.y);
      const double e16 = rel(run(lin, ctx_of(ops::Precision::bf16), x, dy, g0).y, r32.y);
      INFO("forward error vs fp32: fp8 ", e8, ", bf16 ", e16);
      CHECK(e8 > 4 * e16);
      CHECK(e8 < 0.1);
    }
    {   // fp8 per tensor
      const Run r =
          run(lin, ctx_of(ops::Precision::fp8, ops::Fp8Granularity::tensor, fmt), x, dy, g0);
      const Mat qx = fake_quant(X, N, In, N, In, true, pow2);
      const Mat qw = fake_quant(W, Out, In, Out, In, false, pow2);
      const Mat qdy = fake_quant(DY, N, Out, N, Out, false, pow2);
      const Mat qxw = fake_quant(qx, N, In, N, In, true, pow2);
      check(r, qx, qw, qdy, qdy, qxw, pow2 ? "fp8 tensor ue8m0" : "fp8 tensor");
      // With one scale per tensor the outlier token of dy pushes the others down to E4M3's
      // subnormals: their input gradients are much worse than with 1x128 tiles.
      const Run rt = run(lin, tile_ctx, x, dy, g0);
      const Tensor want = r32.dx.slice0(6, N);
      const double et = rel(r.dx.slice0(6, N), want), ei = rel(rt.dx.slice0(6, N), want);
      INFO("dx error vs fp32 (ordinary tokens): tensor ", et, ", tiles ", ei);
      CHECK(et > 3 * ei);
    }
  }
}

TEST_CASE("Linear precision: a small model's loss and gradients in bf16 / fp8 stay near fp32") {
  // dims above and below 128 so that tiles are partial and full: dim 160, q_lora 144,
  // 128 tokens (one full 128x1 Wgrad tile).
  ModelArgs a = micro_args();
  a.vocab_size = 256; a.dim = 160; a.inter_dim = 256; a.moe_inter_dim = 64;
  a.q_lora_rank = 144; a.kv_lora_rank = 64; a.n_heads = 2;
  a.qk_nope_head_dim = 32; a.qk_rope_head_dim = 16; a.v_head_dim = 32;
  a.init_std = 0.02;
  Batch b;
  b.tokens = random_tokens(2, 64, a.vocab_size, 9);
  auto grads = [&](const ops::Context& ctx, StepResult& r) {
    ParamStore store;
    Transformer model(a, store);
    store.init(11);
    r = model.forward_backward(ctx, b, LossWeights{}, 1.0f);
    std::vector<Tensor> g;
    for (const Param& p : store.params()) g.push_back(p.grad.clone());
    return g;
  };
  StepResult r32, r32b, r16, r8, r8t;
  const auto g32 = grads(ctx_of(ops::Precision::fp32), r32);
  const auto g32b = grads(ctx_of(ops::Precision::fp32), r32b);
  const auto g16 = grads(ctx_of(ops::Precision::bf16), r16);
  const auto g8 = grads(ctx_of(ops::Precision::fp8), r8);
  const auto g8t = grads(ctx_of(ops::Precision::fp8, ops::Fp8Granularity::tensor), r8t);
  // ||g - g32|| / ||g32|| over all parameters at once.
  auto total_rel = [&](const std::vector<Tensor>& g) {
    double num = 0, den = 0;
    for (size_t i = 0; i < g.size(); ++i)
      for (int64_t j = 0; j < g[i].numel(); ++j) {
        const double d = double(g[i].f32()[j]) - g32[i].f32()[j];
        num += d * d;
        den += double(g32[i].f32()[j]) * g32[i].f32()[j];
      }
    return std::sqrt(num / den);
  };
  CHECK(r32b.loss == r32.loss);   // fp32 is deterministic: bit-identical reruns
  CHECK(total_rel(g32b) == 0);
  const double e16 = total_rel(g16), e8 = total_rel(g8), e8t = total_rel(g8t);
  MESSAGE("loss fp32 ", r32.loss, " bf16 ", r16.loss, " fp8 ", r8.loss, " fp8/tensor ", r8t.loss,
          " (fp8 - fp8/tensor ", r8.loss - r8t.loss, "); gradient rel. error bf16 ", e16,
          " fp8 ", e8, " fp8/tensor ", e8t);
  // BF16 keeps 8 significant bits (relative rounding <= 2^-9 = 0.2% per operand); FP8 E4M3
  // keeps 4 (<= 2^-4 = 6%, about 2% RMS per operand). Each GEMM's output inherits roughly the
  // operands' RMS error and a few layers compound it, so: bf16 within 2%, fp8 within 15%,
  // and fp8 clearly noisier than bf16 (the FP8 path is really taken).
  CHECK(e16 < 0.02);
  CHECK(e8 < 0.15);
  CHECK(e8t < 0.3);
  CHECK(e8 > 3 * e16);
  CHECK(std::fabs(r16.loss - r32.loss) < 1e-3 * r32.loss);
  CHECK(std::fabs(r8.loss - r32.loss) < 1e-2 * r32.loss);
}

// Linear::backward's accumulate_dx (MLA's q path into the kv path's dx, the non-stacked MLP's
// up projection): dx += what backward would have written, w.grad as without it, in fp32, bf16
// and fp8 (tiles, per tensor): bit for bit by default on the CPU (a temporary and an add_,
// ops::gemm_accumulates false), and with the sum in the GEMM forced (gemm_accumulate 1: the
// BLAS's beta in fp32/bf16, fp8 still through the temporary) within the FP32 summation bound;
// an undefined or wrongly shaped dx refused.
TEST_CASE("Linear: accumulate_dx adds the input gradient into dx") {
  const int64_t N = 130, In = 200, Out = 96;
  ParamStore store;
  Linear lin(store, "l.weight", Out, In, 0.05, /*fp8=*/true, 0);
  store.alloc_grads();
  lin.w->value.copy_from(randn({Out, In}, 0.05, 7));
  const Tensor x = randn({N, In}, 1.0, 8), dy = randn({N, Out}, 1e-3, 9);
  const Tensor dx0 = randn({N, In}, 1e-3, 10), g0 = randn({Out, In}, 1e-2, 11);
  for (ops::Context c :
       {ctx_of(ops::Precision::fp32), ctx_of(ops::Precision::bf16),
        ctx_of(ops::Precision::fp8), ctx_of(ops::Precision::fp8, ops::Fp8Granularity::tensor)}) {
    for (const int forced : {0, 1}) {
      CAPTURE(int(c.linear.mode));
      CAPTURE(forced);
      c.gemm_accumulate = int8_t(forced ? 1 : -1);
      CHECK(ops::gemm_accumulates(c) == bool(forced));
      const bool exact = !forced || c.linear.mode == ops::Precision::fp8;
      lin.w->grad.copy_from(g0);
      Tensor dx;
      lin.backward(c, x, dy, dx);
      const Tensor want_g = lin.w->grad.clone();
      Tensor want = dx0.clone();
      ops::add_(c, want, dx);
      lin.w->grad.copy_from(g0);
      Tensor acc = dx0.clone();
      lin.backward(c, x, dy, acc, true, true);
      if (exact) {
        CHECK(std::memcmp(acc.raw(), want.raw(), acc.nbytes()) == 0);
      } else {   // the same products; the target added inside the BLAS's sums
        double worst = 0, scale = 0;
        for (int64_t i = 0; i < acc.numel(); ++i) {
          worst = std::max(worst, std::fabs(double(acc.f32()[i]) - want.f32()[i]));
          scale = std::max(scale, std::fabs(double(want.f32()[i])));
        }
        CHECK(worst <= 1e-6 * scale);
      }
      CHECK(std::memcmp(lin.w->grad.raw(), want_g.raw(), want_g.nbytes()) == 0);
      Tensor none, small = Tensor::zeros({N - 1, In});
      CHECK_THROWS_WITH_AS(lin.backward(c, x, dy, none, true, true),
                           doctest::Contains("no input gradient to add into"), ds::Error);
      CHECK_THROWS_AS(lin.backward(c, x, dy, small, true, true), ds::Error);
    }
  }
}
