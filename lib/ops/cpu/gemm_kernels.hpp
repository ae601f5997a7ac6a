// Native single-precision GEMM kernels used by opt::matmul (opt_gemm.cpp): a packed,
// register-blocked AVX-512 GEMM and a small-M (decode) path that streams op(b) once, in an
// AVX-512, an AVX2 (gemm_avx2.cpp) and a portable (omp simd) flavour. All compute the
// row-major block c(M,N) (leading dim ldc) = alpha * op(a)(M,K) op(b)(K,N) + beta * c with
// BLAS semantics (beta == 0 never reads c). op(a)(i,k) = ta ? a[k*lda+i] : a[i*lda+k];
// op(b)(k,j) likewise.
// Single-threaded; deterministic (fixed blocking, independent of the caller's thread count).
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

namespace ds::ops::opt::gemm {

// DS_GEMM (read once, checked up front by check_environment): native (the default: the
// fastest kernels this CPU runs), portable (the small-M kernels' portable flavour and no
// packed AVX-512 GEMM: what a CPU without AVX2 gets) or blas (every F32 product through
// OpenBLAS). The last two exist for before/after benchmarks.
enum class Mode { native, portable, blas };
Mode mode();

// True when the CPU runs AVX-512F/BW/VL (checked once).
bool avx512_available();
// True when the CPU runs AVX2 and FMA (checked once).
bool avx2_available();

void gemm_avx512(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb,
                 float* c, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha, float beta);

constexpr int64_t kSmallM = 4;   // small-M kernels accept 1 <= M <= kSmallM

void small_m_avx512(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb,
                    float* c, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
                    float beta);
void small_m_avx2(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb,
                  float* c, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
                  float beta);
void small_m_portable(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb,
                      float* c, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
                      float beta);

// BF16-weight small-M kernels (gemm_bf16.cpp): c(M,N) (leading dim ldc) = x(M,K) w(N,K)^T,
// x rows contiguous in k (leading dim ldx), w BF16 rows (leading dim ldw) widened to float in
// registers, FP32 products and sums; 1 <= M <= kSmallM; overwrites c.
void small_m_bf16_avx512(const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, float* c,
                         int64_t ldc, int64_t M, int64_t N, int64_t K);
void small_m_bf16_avx2(const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, float* c,
                       int64_t ldc, int64_t M, int64_t N, int64_t K);
void small_m_bf16_portable(const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, float* c,
                           int64_t ldc, int64_t M, int64_t N, int64_t K);

// The fastest small-M kernels this CPU runs: AVX-512, else AVX2, else portable (always the
// portable ones under DS_GEMM=portable).
using SmallMKernel = void (*)(const float*, int64_t, bool, const float*, int64_t, bool, float*,
                              int64_t, int64_t, int64_t, int64_t, float, float);
using SmallMBf16Kernel = void (*)(const float*, int64_t, const uint16_t*, int64_t, float*,
                                  int64_t, int64_t, int64_t, int64_t);
SmallMKernel small_m_kernel();
SmallMBf16Kernel small_m_bf16_kernel();

// Shared by the SIMD small-M kernels. op(a)'s M rows contiguous in k: a itself (ldx = lda), or
// for ta a gathered M x K copy in a per-thread buffer (ldx = K) valid until the next call.
inline const float* small_m_rows(const float* a, int64_t lda, bool ta, int64_t M, int64_t K,
                                 int64_t& ldx) {
  ldx = lda;
  if (!ta) return a;
  thread_local std::vector<float> buf;
  buf.resize(size_t(M * K));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) buf[size_t(m * K + k)] = a[k * lda + m];
  ldx = K;
  return buf.data();
}

// f(std::integral_constant<int, M>{}) for 1 <= M <= kSmallM: M as a template argument.
template <typename F>
void with_small_m(int64_t M, F&& f) {
  switch (M) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}

}  // namespace ds::ops::opt::gemm
