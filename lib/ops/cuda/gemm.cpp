// CUDA path of the GEMM ops (matmul, linear_forward, transpose): dtype checks, then the
// cuBLAS / transpose launchers of kernels/gemm.cu. The dispatchers (lib/ops/ops.cpp) have
// already checked the shapes.
//   matmul          F32 x F32: cuBLAS SGEMM without TF32 (FP32 products and sums, so results
//                   match the CPU path up to summation order); BF16 x BF16: tensor cores with
//                   FP32 accumulation and FP32 output.
//   linear_forward  y = x @ w^T. With BF16 weights and F32 activations x is rounded to BF16
//                   first (one scratch pass) and the BF16 tensor-core GEMM runs: much faster
//                   than widening w, but unlike the CPU path (which keeps x in FP32) the
//                   activations are rounded (relative error ~2^-9 per element, the usual
//                   mixed-precision inference trade-off). F32 weights with BF16 activations
//                   widen x to F32 and use SGEMM.
#include "ds/core/error.hpp"
#include "kernels/gemm.cuh"
#include "ops_cuda.hpp"

namespace ds::ops::cuda {

namespace {

void check_on_gpu(std::initializer_list<const Tensor*> ts, const char* op) {
  for (const Tensor* t : ts)
    DS_CHECK(!t->defined() || t->device() == Device::cuda, "{}: operand on {} in a CUDA call", op,
             device_name(t->device()));
}

}  // namespace

void matmul(const Context&, const Tensor& a, const Tensor& b, Tensor& c, bool trans_a,
            bool trans_b, float alpha, float beta) {
  DS_CHECK(c.dtype() == DType::f32, "matmul (cuda): c must be F32, got {}",
           dtype_name(c.dtype()));
  const int64_t M = c.size(0), N = c.size(1), K = trans_a ? a.size(0) : a.size(1);
  if (a.dtype() == DType::f32 && b.dtype() == DType::f32) {
    ds::cuda::sgemm_rm(a.data<float>(), b.data<float>(), c.data<float>(), M, N, K, trans_a,
                       trans_b, alpha, beta);
  } else if (a.dtype() == DType::bf16 && b.dtype() == DType::bf16) {
    ds::cuda::bf16_gemm_rm(a.data<uint16_t>(), b.data<uint16_t>(), c.data<float>(), M, N, K,
                           trans_a, trans_b, alpha, beta);
  } else {
    DS_THROW(InternalError, "matmul (cuda): a and b must both be F32 or both BF16, got {} and {}",
             dtype_name(a.dtype()), dtype_name(b.dtype()));
  }
}

void linear_forward(const Context& ctx, const Tensor& x, const Tensor& w, Tensor& y) {
  // ops.cpp routes here before its device check.
  check_on_gpu({&x, &w, &y}, "linear_forward");
  DS_CHECK(y.dtype() == DType::f32, "linear_forward (cuda): y must be F32, got {}",
           dtype_name(y.dtype()));
  const DType xt = x.dtype(), wt = w.dtype();
  DS_CHECK((xt == DType::f32 || xt == DType::bf16) && (wt == DType::f32 || wt == DType::bf16),
           "linear_forward (cuda): x and w must be F32 or BF16, got {} and {}", dtype_name(xt),
           dtype_name(wt));
  const int64_t N = x.size(0), O = w.size(0), I = w.size(1);
  if (xt == wt) {
    ds::ops::cuda::matmul(ctx, x, w, y, false, true, 1.0f, 0.0f);
  } else if (wt == DType::bf16) {
    ds::cuda::linear_f32x_bf16w(x.data<float>(), w.data<uint16_t>(), y.data<float>(), N, O, I);
  } else {
    ds::cuda::linear_bf16x_f32w(x.data<uint16_t>(), w.data<float>(), y.data<float>(), N, O, I);
  }
}

void transpose(const Context&, const Tensor& x, Tensor& out) {
  ds::cuda::transpose(x.raw(), out.raw(), x.size(0), x.size(1), int(dtype_size(x.dtype())));
}

}  // namespace ds::ops::cuda
