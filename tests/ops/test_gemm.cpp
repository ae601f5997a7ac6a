// GEMM and linear: OpenBLAS path vs the reference loops for every transpose combination,
// alpha/beta and odd shapes (guard rows around c); linear backward accumulates dw and skips
// an undefined dx; linear gradients vs finite differences in double.
#include "cpu/ref.hpp"
#include "ds/core/error.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

TEST_CASE("matmul: optimized == reference over transposes, odd shapes, alpha/beta") {
  const int64_t dims[] = {1, 3, 17, 64, 130};
  for (int64_t M : dims)
    for (int64_t N : {int64_t(1), int64_t(17), int64_t(130)})
      for (int64_t K : {int64_t(1), int64_t(3), int64_t(64), int64_t(130)})
        for (int tr = 0; tr < 4; ++tr) {
          const bool ta = tr & 1, tb = tr & 2;
          Tensor a = rand_f32(ta ? Shape{K, M} : Shape{M, K});
          Tensor b = rand_f32(tb ? Shape{N, K} : Shape{K, N});
          Tensor c0 = rand_f32({M, N});
          Guarded cr({M, N}), co({M, N});
          cr.t.copy_from(c0);
          co.t.copy_from(c0);
          const float alpha = 0.75f, beta = (M + N) % 2 ? 0.5f : 0.0f;
          matmul(ref_ctx(), a, b, cr.t, ta, tb, alpha, beta);
          matmul(opt_ctx(), a, b, co.t, ta, tb, alpha, beta);
          INFO("M ", M, " N ", N, " K ", K, " ta ", ta, " tb ", tb);
          // |entries| <= 1: float rounding of a K-term dot product stays below ~K * 2^-24
          CHECK(max_abs_diff(co.t, cr.t) < 1e-6 * double(K + 1));
          CHECK(cr.intact());
          CHECK(co.intact());
        }
}

TEST_CASE("matmul: beta 0 overwrites NaN in c; K = 0 scales by beta") {
  Tensor a = rand_f32({3, 4}), b = rand_f32({4, 5});
  for (Context ctx : {ref_ctx(), opt_ctx()}) {
    Tensor c = Tensor::empty({3, 5});
    for (int i = 0; i < 15; ++i) c.f32()[i] = NAN;
    matmul(ctx, a, b, c, false, false);
    CHECK(count_nonfinite(ctx, c) == 0);
    Tensor a0 = Tensor::empty({3, 0}), b0 = Tensor::empty({0, 5});
    for (int i = 0; i < 15; ++i) c.f32()[i] = 2.0f;
    matmul(ctx, a0, b0, c, false, false, 1.0f, 0.5f);
    CHECK(c.f32()[7] == 1.0f);
  }
}

TEST_CASE("matmul/linear: shape errors and the CUDA path are reported") {
  Tensor a = rand_f32({3, 4}), b = rand_f32({5, 5}), c = Tensor::empty({3, 5});
  CHECK_THROWS_AS(matmul(opt_ctx(), a, b, c, false, false), InternalError);
  Context cu = opt_ctx();
  cu.device = Device::cuda;
  Tensor b2 = rand_f32({4, 5});
  // CPU tensors under a CUDA context: InternalError (mixed devices), or CudaError in a
  // build without CUDA; either way the op refuses.
  CHECK_THROWS_AS(matmul(cu, a, b2, c, false, false), Error);
  Tensor y = Tensor::empty({3, 6});
  CHECK_THROWS_AS(linear_forward(opt_ctx(), a, b2, y), InternalError);
}

TEST_CASE("linear: forward/backward optimized == reference; dw accumulates; dx optional") {
  for (int64_t N : {1, 7, 130})
    for (int64_t in : {3, 64})
      for (int64_t out : {1, 17, 96}) {
        Tensor x = rand_f32({N, in}), w = rand_f32({out, in}), dy = rand_f32({N, out});
        Tensor yr = Tensor::empty({N, out}), yo = Tensor::empty({N, out});
        linear_forward(ref_ctx(), x, w, yr);
        linear_forward(opt_ctx(), x, w, yo);
        CHECK(max_abs_diff(yo, yr) < 1e-6 * double(in));
        Tensor dw0 = rand_f32({out, in});
        Tensor dxr = Tensor::empty({N, in}), dxo = Tensor::empty({N, in});
        Tensor dwr = dw0.clone(), dwo = dw0.clone();
        linear_backward(ref_ctx(), x, w, dy, dxr, dwr);
        linear_backward(opt_ctx(), x, w, dy, dxo, dwo);
        CHECK(max_abs_diff(dxo, dxr) < 1e-6 * double(out));
        CHECK(max_abs_diff(dwo, dwr) < 1e-6 * double(N + 1));
        // dw accumulated: dwr - dw0 == dy^T x (computed separately)
        Tensor g = Tensor::empty({out, in});
        matmul(ref_ctx(), dy, x, g, true, false);
        double err = 0;
        for (int64_t i = 0; i < g.numel(); ++i)
          err = std::max(err, std::fabs(double(dwr.f32()[i]) - dw0.f32()[i] - g.f32()[i]));
        CHECK(err < 1e-4);
        Tensor none, dw2 = dw0.clone();
        linear_backward(opt_ctx(), x, w, dy, none, dw2);
        CHECK(max_abs_diff(dw2, dwo) == 0);
        // dx_beta 1: dx += dy @ w (both implementations), dw as before
        const Tensor dx0 = rand_f32({N, in});
        for (const Context& c : {ref_ctx(), opt_ctx()}) {
          Tensor dxa = dx0.clone(), dw3 = dw0.clone();
          linear_backward(c, x, w, dy, dxa, dw3, 1.0f);
          double e = 0;
          for (int64_t i = 0; i < dxa.numel(); ++i)
            e = std::max(e, std::fabs(double(dxa.f32()[i]) - dx0.f32()[i] - dxr.f32()[i]));
          CHECK(e < 1e-5 * double(out + 1));
          CHECK(max_abs_diff(dw3, dwr) < 1e-6 * double(N + 1));
        }
      }
}

TEST_CASE("linear: gradients vs finite differences (double)") {
  const int64_t N = 4, in = 5, out = 3;
  std::vector<double> x = rand_vec(N * in), w = rand_vec(out * in), wy = rand_vec(N * out);
  auto loss = [&] {
    std::vector<double> y(N * out);
    ref::matmul<double>(x.data(), w.data(), y.data(), N, out, in, false, true, 1.0, 0.0);
    return dot(y, wy);
  };
  std::vector<double> dx(N * in), dw(out * in, 0.0);
  ref::matmul<double>(wy.data(), w.data(), dx.data(), N, in, out, false, false, 1.0, 0.0);
  ref::matmul<double>(wy.data(), x.data(), dw.data(), out, in, N, true, false, 1.0, 1.0);
  grad_check(x, loss, dx, "linear dx");
  grad_check(w, loss, dw, "linear dw");
}
