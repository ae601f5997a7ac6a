// Reference GEMM: c = alpha * op(a) @ op(b) + beta * c with plain loops and double
// accumulation; the yardstick for the OpenBLAS path and the double-precision gradient tests.
#include "ref.hpp"

namespace ds::ops::ref {

template <class T>
void matmul(const T* a, const T* b, T* c, int64_t M, int64_t N, int64_t K, bool trans_a,
            bool trans_b, T alpha, T beta) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < K; ++p) {
        double av = trans_a ? a[p * M + i] : a[i * K + p];   // a (K,M) or (M,K)
        double bv = trans_b ? b[j * K + p] : b[p * N + j];   // b (N,K) or (K,N)
        acc += av * bv;
      }
      T prev = beta == T(0) ? T(0) : beta * c[i * N + j];   // beta 0 ignores NaN in c (BLAS)
      c[i * N + j] = T(double(alpha) * acc) + prev;
    }
  }
}

template void matmul<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, bool,
                            bool, float, float);
template void matmul<double>(const double*, const double*, double*, int64_t, int64_t, int64_t,
                             bool, bool, double, double);

}  // namespace ds::ops::ref
