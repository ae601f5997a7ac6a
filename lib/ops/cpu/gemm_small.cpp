// Portable small-M GEMM (see gemm_kernels.hpp): for decode-sized M (<= kSmallM) every row of
// op(b) is read once and used for all M outputs. b^T (NT/TN with tb): one dot product per
// (m, j) over a contiguous row of b, vectorised with omp simd reductions; b (NN/TN): axpy of
// the rows of b into the M output rows. Used when AVX-512 is missing.
#include <cstddef>
#include <vector>

#include "gemm_kernels.hpp"

namespace ds::ops::opt::gemm {

void small_m_portable(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb,
                      float* c, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
                      float beta) {
  thread_local std::vector<float> xbuf, acc;
  xbuf.resize(size_t(M * K));
  for (int64_t m = 0; m < M; ++m)   // op(a) rows, contiguous
    for (int64_t k = 0; k < K; ++k) xbuf[size_t(m * K + k)] = ta ? a[k * lda + m] : a[m * lda + k];
  const float* x = xbuf.data();
  if (tb) {
    for (int64_t j = 0; j < N; ++j) {
      const float* w = b + j * ldb;
      for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * K;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < K; ++k) s += xm[k] * w[k];
        float* cp = c + m * ldc + j;
        *cp = beta == 0.0f ? alpha * s : alpha * s + beta * *cp;
      }
    }
    return;
  }
  acc.assign(size_t(M * N), 0.0f);
  for (int64_t k = 0; k < K; ++k) {
    const float* bk = b + k * ldb;
    for (int64_t m = 0; m < M; ++m) {
      const float xv = x[m * K + k];
      float* am = acc.data() + m * N;
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) am[j] += xv * bk[j];
    }
  }
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < N; ++j) {
      float* cp = c + m * ldc + j;
      const float s = acc[size_t(m * N + j)];
      *cp = beta == 0.0f ? alpha * s : alpha * s + beta * *cp;
    }
}

}  // namespace ds::ops::opt::gemm
