// AVX2 small-M GEMM kernels (see gemm_kernels.hpp) for CPUs without AVX-512: the decode-sized
// products (M <= kSmallM rows) stream op(b) once, as the AVX-512 ones do, in 8-lane FP32.
// op(b) = b^T goes to small_nt1_avx2 for one input row and to small_nt_avx2 for 2-4 (dot
// products along contiguous weight rows), op(b) = b to small_nn_avx2 (axpy of b's rows into
// 8-wide output accumulators). The packed large-M GEMM stays with OpenBLAS on these CPUs: an
// AVX2 port of the packed AVX-512 kernel was no faster at the model's shapes
// (docs/performance.md, "A CPU without AVX-512"). Only functions marked DS_AVX2 use
// AVX2/FMA; they are reached only after avx2_available() (small_m_kernel()).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "gemm_kernels.hpp"
#include "small_nt_avx2.hpp"

namespace ds::ops::opt::gemm {

namespace {

// op(b) = b (K x N, rows contiguous): 8 * V output columns at a time.
template <int MM>
DS_AVX2 void small_nn_avx2(const float* x, int64_t ldx, const float* b, int64_t ldb, float* c,
                           int64_t ldc, int64_t N, int64_t K, float alpha, float beta) {
  constexpr int V = MM <= 2 ? 4 : 2;   // MM * V accumulators + V rows of b + 1 input
  for (int64_t j = 0; j < N; j += 8 * V) {
    __m256i mk[V];
    bool full = true;
    for (int v = 0; v < V; ++v) {
      const int64_t left = std::clamp<int64_t>(N - j - 8 * v, 0, 8);
      mk[v] = lane_mask8(left);
      full = full && left == 8;
    }
    __m256 acc[MM][V];
    for (int m = 0; m < MM; ++m)
      for (int v = 0; v < V; ++v) acc[m][v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      const float* bk = b + k * ldb + j;
      __m256 bv[V];
      for (int v = 0; v < V; ++v)
        bv[v] = full ? _mm256_loadu_ps(bk + 8 * v) : _mm256_maskload_ps(bk + 8 * v, mk[v]);
      for (int m = 0; m < MM; ++m) {
        const __m256 xv = _mm256_set1_ps(x[m * ldx + k]);
        for (int v = 0; v < V; ++v) acc[m][v] = _mm256_fmadd_ps(xv, bv[v], acc[m][v]);
      }
    }
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (int m = 0; m < MM; ++m)
      for (int v = 0; v < V; ++v) {
        float* cp = c + m * ldc + j + 8 * v;
        __m256 y = _mm256_mul_ps(va, acc[m][v]);
        if (beta != 0.0f) y = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cp, mk[v]), y);
        _mm256_maskstore_ps(cp, mk[v], y);
      }
  }
}

template <int MM>
void small_dispatch_avx2(const float* x, int64_t ldx, const float* b, int64_t ldb, bool tb,
                         float* c, int64_t ldc, int64_t N, int64_t K, float alpha, float beta) {
  if (!tb) small_nn_avx2<MM>(x, ldx, b, ldb, c, ldc, N, K, alpha, beta);
  else if (MM == 1) small_nt1_avx2(x, b, ldb, c, N, K, alpha, beta);
  else small_nt_avx2<MM, kRowsAvx2<MM>>(x, ldx, b, ldb, c, ldc, N, K, alpha, beta);
}

}  // namespace

bool avx2_available() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

void small_m_avx2(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb,
                  float* c, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
                  float beta) {
  int64_t ldx;
  const float* x = small_m_rows(a, lda, ta, M, K, ldx);
  with_small_m(M, [&](auto mm) {
    small_dispatch_avx2<decltype(mm)::value>(x, ldx, b, ldb, tb, c, ldc, N, K, alpha, beta);
  });
}

void small_m_bf16_avx2(const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, float* c,
                       int64_t ldc, int64_t M, int64_t N, int64_t K) {
  if (M == 1) {
    small_nt1_avx2(x, w, ldw, c, N, K, 1.0f, 0.0f);
    return;
  }
  with_small_m(M, [&](auto mm) {
    constexpr int MM = decltype(mm)::value;
    small_nt_avx2<MM, kRowsAvx2<MM>>(x, ldx, w, ldw, c, ldc, N, K, 1.0f, 0.0f);
  });
}

SmallMKernel small_m_kernel() {
  if (mode() == Mode::portable) return small_m_portable;
  return avx512_available() ? small_m_avx512 : avx2_available() ? small_m_avx2 : small_m_portable;
}

SmallMBf16Kernel small_m_bf16_kernel() {
  if (mode() == Mode::portable) return small_m_bf16_portable;
  return avx512_available() ? small_m_bf16_avx512
         : avx2_available() ? small_m_bf16_avx2
                            : small_m_bf16_portable;
}

}  // namespace ds::ops::opt::gemm
