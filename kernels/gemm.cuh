// Dense GEMM launchers (cuBLAS) and the tiled transpose, pointer level: the CUDA side of the
// ops matmul / linear_forward / transpose (lib/ops/cuda/gemm.cpp). Plain C++ header (no CUDA
// types) so that g++ can include it. All matrices are row-major and contiguous; everything
// runs on ds::cuda::stream().
#pragma once
#include <cstdint>

namespace ds::cuda {

// c (M, N) = alpha * op(a) @ op(b) + beta * c, row-major; a is (M, K), or (K, M) when ta;
// b is (K, N), or (N, K) when tb. FP32 SGEMM with CUBLAS_DEFAULT_MATH (no TF32), so the
// products and sums are FP32 like the CPU path (only the summation order differs).
// beta == 0: c is not read (may hold NaN).
void sgemm_rm(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K, bool ta,
              bool tb, float alpha, float beta);
// Same with BF16 operands (uint16 codes), FP32 output and FP32 accumulation (tensor cores).
void bf16_gemm_rm(const uint16_t* a, const uint16_t* b, float* c, int64_t M, int64_t N,
                  int64_t K, bool ta, bool tb, float alpha, float beta);
// Mixed-dtype linear layers y (N, O) = x (N, I) @ w (O, I)^T: the activations are converted
// (into scratch) to the weights' dtype first, then sgemm_rm / bf16_gemm_rm runs. BF16 weights
// therefore round x to BF16 (RNE).
void linear_f32x_bf16w(const float* x, const uint16_t* w, float* y, int64_t N, int64_t O,
                       int64_t I);
void linear_bf16x_f32w(const uint16_t* x, const float* w, float* y, int64_t N, int64_t O,
                       int64_t I);
// y[i] = bf16(x[i]) (RNE, NaN kept quiet), y[i] = float(bf16 code x[i]).
void f32_to_bf16_codes(const float* x, uint16_t* y, int64_t n);
void bf16_codes_to_f32(const uint16_t* x, float* y, int64_t n);
// out (K, M) = x (M, K)^T for elements of 1, 2 or 4 bytes.
void transpose(const void* x, void* out, int64_t M, int64_t K, int elem_bytes);

}  // namespace ds::cuda
