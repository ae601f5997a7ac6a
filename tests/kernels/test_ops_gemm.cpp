// GPU vs CPU-reference tests of the GEMM group of the CUDA path (lib/ops/cuda/gemm.cpp over
// kernels/gemm.cu): matmul with F32 operands (cuBLAS SGEMM without TF32: FP32 arithmetic, so
// only the summation order differs) and BF16 operands (tensor cores, compared with the CPU
// GEMM of the same BF16-rounded values), all four transpose combinations, alpha/beta
// (accumulating from the same nonzero c on both sides), odd shapes; linear_forward with F32
// and BF16 weights and activations; transpose of 4-, 2- and 1-byte dtypes (bit-exact).
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "gpu_harness.hpp"

namespace ds::gpu_test {
namespace {

struct Dims {
  int64_t M, N, K;
};
const Dims kShapes[] = {{1, 1, 1}, {3, 5, 7}, {129, 257, 130}, {512, 384, 1024}};

// BF16 codes of x, and x rounded to BF16 as F32.
Tensor bf16_codes(const Tensor& x) {
  Tensor t = Tensor::empty(x.shape(), DType::bf16);
  for (int64_t i = 0; i < x.numel(); ++i) t.data<uint16_t>()[i] = f32_to_bf16(x.f32()[i]);
  return t;
}
Tensor bf16_rounded(const Tensor& x) {
  Tensor t = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) t.f32()[i] = bf16_to_f32(f32_to_bf16(x.f32()[i]));
  return t;
}

Tensor clone(const Tensor& x) {
  Tensor t = Tensor::empty(x.shape(), x.dtype());
  t.copy_from(x);
  return t;
}

std::string label(const char* op, const Dims& d, bool ta, bool tb, float alpha, float beta) {
  return std::string(op) + " M=" + std::to_string(d.M) + " N=" + std::to_string(d.N) +
         " K=" + std::to_string(d.K) + " ta=" + std::to_string(ta) + " tb=" +
         std::to_string(tb) + " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta);
}

}  // namespace

TEST_CASE("gpu matmul F32 and BF16 match the CPU reference") {
  const std::pair<float, float> coefs[] = {{1.0f, 0.0f}, {0.5f, -1.25f}};
  for (const Dims& d : kShapes)
    for (int tr = 0; tr < 4; ++tr)
      for (auto [alpha, beta] : coefs) {
        const bool ta = tr & 1, tb = tr & 2;
        const Tensor a = rand_f32(ta ? Shape{d.K, d.M} : Shape{d.M, d.K});
        const Tensor b = rand_f32(tb ? Shape{d.N, d.K} : Shape{d.K, d.N});
        const Tensor c0 = rand_f32({d.M, d.N});
        // F32: exact FP32 products; summation order only.
        {
          Arena ar;
          Tensor ga = ar.upload(a), gb = ar.upload(b);
          Tensor gc = beta == 0.0f ? ar.empty({d.M, d.N}) : ar.upload(c0);
          ops::matmul(gpu(), ga, gb, gc, ta, tb, alpha, beta);
          Tensor want = beta == 0.0f ? Tensor::zeros({d.M, d.N}) : clone(c0);
          ops::matmul(cpu_ref(), a, b, want, ta, tb, alpha, beta);
          const std::string what = label("matmul f32", d, ta, tb, alpha, beta);
          expect_close(gc, want, 1e-10, what.c_str());
          CHECK(ar.check());
        }
        // BF16: the CPU GEMM of the rounded values (products exact in FP32).
        {
          Arena ar;
          Tensor ga = ar.upload(bf16_codes(a)), gb = ar.upload(bf16_codes(b));
          Tensor gc = beta == 0.0f ? ar.empty({d.M, d.N}) : ar.upload(c0);
          ops::matmul(gpu(), ga, gb, gc, ta, tb, alpha, beta);
          Tensor want = beta == 0.0f ? Tensor::zeros({d.M, d.N}) : clone(c0);
          ops::matmul(cpu_ref(), bf16_rounded(a), bf16_rounded(b), want, ta, tb, alpha, beta);
          const std::string what = label("matmul bf16", d, ta, tb, alpha, beta);
          expect_close(gc, want, 1e-9, what.c_str());
          CHECK(ar.check());
        }
      }
}

TEST_CASE("gpu linear_forward with F32 and BF16 weights") {
  const Dims shapes[] = {{1, 1, 1}, {7, 33, 129}, {300, 130, 257}};
  for (const Dims& d : shapes) {   // x (M, K), w (N, K), y (M, N)
    const Tensor x = rand_f32({d.M, d.K}), w = rand_f32({d.N, d.K});
    const std::string dims = " M=" + std::to_string(d.M) + " N=" + std::to_string(d.N) +
                             " K=" + std::to_string(d.K);
    {   // F32 weights, F32 activations: SGEMM
      Arena ar;
      Tensor gy = ar.empty({d.M, d.N});
      ops::linear_forward(gpu(), ar.upload(x), ar.upload(w), gy);
      Tensor want = Tensor::empty({d.M, d.N});
      ops::linear_forward(cpu_ref(), x, w, want);
      expect_close(gy, want, 1e-10, ("linear f32/f32" + dims).c_str());
      CHECK(ar.check());
    }
    const Tensor wb = bf16_codes(w);
    // CPU reference: BF16 weights widened exactly, x as given.
    Tensor want_exact = Tensor::empty({d.M, d.N}), want_rx = Tensor::empty({d.M, d.N});
    ops::linear_forward(cpu_ref(), x, wb, want_exact);
    ops::linear_forward(cpu_ref(), bf16_rounded(x), wb, want_rx);
    {   // BF16 weights, F32 activations: the GPU rounds x to BF16 (documented in gemm.cpp)
      Arena ar;
      Tensor gy = ar.empty({d.M, d.N});
      ops::linear_forward(gpu(), ar.upload(x), ar.upload(wb), gy);
      expect_close(gy, want_rx, 1e-9, ("linear f32 x, bf16 w vs rounded x" + dims).c_str());
      expect_close(gy, want_exact, 1e-4, ("linear f32 x, bf16 w vs exact x" + dims).c_str());
      CHECK(ar.check());
    }
    {   // BF16 weights, BF16 activations
      Arena ar;
      Tensor gy = ar.empty({d.M, d.N});
      ops::linear_forward(gpu(), ar.upload(bf16_codes(x)), ar.upload(wb), gy);
      expect_close(gy, want_rx, 1e-9, ("linear bf16/bf16" + dims).c_str());
      CHECK(ar.check());
    }
    {   // F32 weights, BF16 activations: x widened, SGEMM
      Arena ar;
      Tensor gy = ar.empty({d.M, d.N});
      ops::linear_forward(gpu(), ar.upload(bf16_codes(x)), ar.upload(w), gy);
      Tensor want = Tensor::empty({d.M, d.N});
      ops::linear_forward(cpu_ref(), bf16_rounded(x), w, want);
      expect_close(gy, want, 1e-10, ("linear bf16 x, f32 w" + dims).c_str());
      CHECK(ar.check());
    }
  }
}

// The input gradient added into dx by the GEMM itself (ops::linear_backward's dx_beta, what
// model::Linear and the router do on the GPU, ops::gemm_accumulates): the GPU's own
// linear_backward into a temporary plus add_, F32 and BF16 operands, dw as without it.
TEST_CASE("gpu linear_backward adds into dx with dx_beta 1") {
  const Dims shapes[] = {{1, 1, 1}, {7, 33, 129}, {300, 130, 257}, {256, 1024, 384}};
  for (const Dims& d : shapes) {   // x (M, K), w (N, K), dy (M, N), dx (M, K)
    for (const bool bf16 : {false, true}) {
      CAPTURE(d.M);
      CAPTURE(d.N);
      CAPTURE(d.K);
      CAPTURE(bf16);
      Tensor x = rand_f32({d.M, d.K}), w = rand_f32({d.N, d.K}), dy = rand_f32({d.M, d.N});
      if (bf16) {
        x = bf16_codes(x);
        w = bf16_codes(w);
        dy = bf16_codes(dy);
      }
      const Tensor dx0 = rand_f32({d.M, d.K}), dw0 = rand_f32({d.N, d.K});
      Arena ar;
      const Tensor gx = ar.upload(x), gw = ar.upload(w), gdy = ar.upload(dy);
      Tensor t = ar.empty({d.M, d.K}), want = ar.upload(dx0), dw_want = ar.upload(dw0);
      ops::linear_backward(gpu(), gx, gw, gdy, t, dw_want);
      ops::add_(gpu(), want, t);
      Tensor dx = ar.upload(dx0), dw = ar.upload(dw0);
      ops::linear_backward(gpu(), gx, gw, gdy, dx, dw, 1.0f);
      expect_close(dx, download(want), 1e-6, "dx += dy @ w");
      expect_close(dw, download(dw_want), 0.0, "dw unchanged by dx_beta", 0.0);
      CHECK(ar.check());
    }
  }
}

TEST_CASE("gpu transpose of 4-, 2- and 1-byte dtypes is exact") {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1},  {1, 37},   {37, 1},  {33, 65},
                                                {300, 129}, {1000, 3}, {64, 2048}};
  const DType dtypes[] = {DType::f32, DType::i32, DType::bf16, DType::u8, DType::f8_e4m3};
  for (DType dt : dtypes)
    for (auto [M, K] : shapes) {
      Tensor x = Tensor::empty({M, K}, dt);
      auto* p = static_cast<uint8_t*>(x.raw());
      for (size_t i = 0; i < x.nbytes(); ++i) p[i] = uint8_t(rng()() >> 13);
      Arena ar;
      Tensor gout = ar.empty({K, M}, dt);
      ops::transpose(gpu(), ar.upload(x), gout);
      Tensor want = Tensor::empty({K, M}, dt);
      ops::transpose(cpu_ref(), x, want);
      const Tensor got = download(gout);
      INFO("transpose " << dtype_name(dt) << " " << M << "x" << K);
      CHECK(std::memcmp(got.raw(), want.raw(), want.nbytes()) == 0);
      CHECK(ar.check());
    }
}

}  // namespace ds::gpu_test
