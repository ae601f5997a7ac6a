// Dense GEMMs through cuBLAS and the shared-memory tiled transpose (see gemm.cuh).
// Row-major <-> column-major: a row-major (R, C) matrix is the column-major (C, R) matrix of
// its transpose, so the row-major c = op(a) op(b) is computed as the column-major
// c^T = op(b)^T op(a)^T: swap the operands and the M/N extents, keep the transpose flags.
#include "kernels/common.cuh"
#include "kernels/gemm.cuh"
#include "kernels/transpose_kernels.cuh"

namespace ds::cuda {

namespace {

struct ColMajorArgs {
  cublasOperation_t op_first, op_second;   // op of b, op of a (the swapped order)
  int64_t ld_b, ld_a;
};

ColMajorArgs col_major(int64_t M, int64_t N, int64_t K, bool ta, bool tb) {
  ColMajorArgs g;
  g.op_first = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  g.op_second = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  g.ld_b = tb ? K : N;   // row length of b: (N, K) when tb, else (K, N)
  g.ld_a = ta ? M : K;   // row length of a: (K, M) when ta, else (M, K)
  return g;
}

}  // namespace

void sgemm_rm_on(cublasHandle_t h, const float* a, const float* b, float* c, int64_t M,
                 int64_t N, int64_t K, bool ta, bool tb, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  // The handle is shared: make sure no earlier user left TF32 (or another reduced mode) on.
  DS_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  const ColMajorArgs g = col_major(M, N, K, ta, tb);
  // cuBLAS requires ld >= 1 even for empty K.
  DS_CUBLAS_CHECK(cublasSgemm_64(h, g.op_first, g.op_second, N, M, K, &alpha, b,
                                 g.ld_b > 0 ? g.ld_b : 1, a, g.ld_a > 0 ? g.ld_a : 1, &beta, c,
                                 N));
}

void bf16_gemm_rm_on(cublasHandle_t h, const uint16_t* a, const uint16_t* b, float* c,
                     int64_t M, int64_t N, int64_t K, bool ta, bool tb, float alpha,
                     float beta) {
  if (M == 0 || N == 0) return;
  DS_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  const ColMajorArgs g = col_major(M, N, K, ta, tb);
  DS_CUBLAS_CHECK(cublasGemmEx_64(h, g.op_first, g.op_second, N, M, K, &alpha, b, CUDA_R_16BF,
                                  g.ld_b > 0 ? g.ld_b : 1, a, CUDA_R_16BF,
                                  g.ld_a > 0 ? g.ld_a : 1, &beta, c, CUDA_R_32F, N,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void bf16_gemm_rm_bf16out_on(cublasHandle_t h, const uint16_t* a, const uint16_t* b,
                             uint16_t* c, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
                             float alpha) {
  if (M == 0 || N == 0) return;
  // FP32 sums rounded to BF16 once: no split-K partial sums reduced in BF16
  DS_CUBLAS_CHECK(cublasSetMathMode(
      h, cublasMath_t(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  const ColMajorArgs g = col_major(M, N, K, ta, tb);
  const float beta = 0.0f;
  DS_CUBLAS_CHECK(cublasGemmEx_64(h, g.op_first, g.op_second, N, M, K, &alpha, b, CUDA_R_16BF,
                                  g.ld_b > 0 ? g.ld_b : 1, a, CUDA_R_16BF,
                                  g.ld_a > 0 ? g.ld_a : 1, &beta, c, CUDA_R_16BF, N,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void sgemm_rm(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K, bool ta,
              bool tb, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  sgemm_rm_on(cublas(), a, b, c, M, N, K, ta, tb, alpha, beta);
}

void bf16_gemm_rm(const uint16_t* a, const uint16_t* b, float* c, int64_t M, int64_t N,
                  int64_t K, bool ta, bool tb, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  bf16_gemm_rm_on(cublas(), a, b, c, M, N, K, ta, tb, alpha, beta);
}

using namespace xpose;   // the kernels (transpose_kernels.cuh)

void f32_to_bf16_codes(const float* x, uint16_t* y, int64_t n) {
  if (n <= 0) return;
  to_bf16_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(x, y, n);
  DS_CUDA_LAUNCHED();
}

void bf16_codes_to_f32(const uint16_t* x, float* y, int64_t n) {
  if (n <= 0) return;
  from_bf16_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(x, y, n);
  DS_CUDA_LAUNCHED();
}

void linear_f32x_bf16w(const float* x, const uint16_t* w, float* y, int64_t N, int64_t O,
                       int64_t I) {
  auto* xb = static_cast<uint16_t*>(scratch(size_t(N * I) * sizeof(uint16_t)));
  f32_to_bf16_codes(x, xb, N * I);
  bf16_gemm_rm(xb, w, y, N, O, I, false, true, 1.0f, 0.0f);
}

void linear_bf16x_f32w(const uint16_t* x, const float* w, float* y, int64_t N, int64_t O,
                       int64_t I) {
  auto* xf = static_cast<float*>(scratch(size_t(N * I) * sizeof(float)));
  bf16_codes_to_f32(x, xf, N * I);
  sgemm_rm(xf, w, y, N, O, I, false, true, 1.0f, 0.0f);
}

void transpose(const void* x, void* out, int64_t M, int64_t K, int elem_bytes) {
  if (M == 0 || K == 0) return;
  const int64_t tiles_k = cdiv(K, kTile), tiles_m = cdiv(M, kTile);
  if (tiles_k > 0x7fffffffLL) {   // never in practice: K < 2^36
    raise_cuda("transpose: K too large", cudaErrorInvalidValue, __FILE__, __LINE__);
  }
  const dim3 grid(unsigned(tiles_k), unsigned(tiles_m < 65535 ? tiles_m : 65535));
  const dim3 block(kTile, kRowsPerPass);
  switch (elem_bytes) {
    case 4:
      transpose_kernel<uint32_t><<<grid, block, 0, stream()>>>(
          static_cast<const uint32_t*>(x), static_cast<uint32_t*>(out), M, K);
      break;
    case 2:
      transpose_kernel<uint16_t><<<grid, block, 0, stream()>>>(
          static_cast<const uint16_t*>(x), static_cast<uint16_t*>(out), M, K);
      break;
    case 1:
      transpose_kernel<uint8_t><<<grid, block, 0, stream()>>>(
          static_cast<const uint8_t*>(x), static_cast<uint8_t*>(out), M, K);
      break;
    default:
      raise_cuda("transpose: element size must be 1, 2 or 4 bytes", cudaErrorInvalidValue,
                 __FILE__, __LINE__);
  }
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
