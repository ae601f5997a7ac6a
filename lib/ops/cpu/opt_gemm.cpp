// Optimised GEMM: row-major cblas_sgemm (OpenBLAS, threads set by ops::set_cpu_threads).
// c(M,N) = alpha * op(a) @ op(b) + beta * c.
#include <cblas.h>

#include <algorithm>

#include "opt.hpp"

namespace ds::ops::opt {

void matmul(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K,
            bool trans_a, bool trans_b, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) {   // empty sum: c = beta * c (BLAS semantics, beta 0 overwrites)
    for (int64_t i = 0; i < M * N; ++i) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return;
  }
  const int64_t lda = std::max<int64_t>(1, trans_a ? M : K);   // a (K,M) or (M,K)
  const int64_t ldb = std::max<int64_t>(1, trans_b ? K : N);   // b (N,K) or (K,N)
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, blasint(M), blasint(N), blasint(K), alpha, a,
              blasint(lda), b, blasint(ldb), beta, c, blasint(N));
}

}  // namespace ds::ops::opt
