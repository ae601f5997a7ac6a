// The AVX2 small-M "NT" kernels shared by the F32 GEMM (gemm_avx2.cpp) and the BF16-weight
// linear (gemm_bf16.cpp), the 8-lane counterparts of small_nt_avx512.hpp for CPUs without
// AVX-512 (AMD Zen 2/3, Intel client parts): c(MM, N) = alpha * x(MM, K) w(N, K)^T + beta * c,
// dot products over k in 8-lane FP32 accumulators, each weight row streamed once. The weight
// element type is float or uint16_t (bf16, widened exactly in registers).
// - one input row (decode at batch 1, bound by the weights' bytes): small_nt1_avx2 reads the
//   rows one after another. Blocks of 4 or 8 interleaved rows, with or without a software
//   prefetch, decoded up to 30% slower end to end on an AMD EPYC (docs/benchmarks.md).
// - 2-4 input rows: small_nt_avx2, R rows per block (each weight vector feeds MM FMAs, and
//   the register blocking pays), prefetching the next block a cache line ahead.
// Internal header: include only from files that check avx2_available().
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#ifndef DS_AVX2
#define DS_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace ds::ops::opt::gemm {
namespace {

DS_AVX2 inline void store1_avx2(float* c, float s, float alpha, float beta) {
  *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
}

// Horizontal sum of 8 lanes.
DS_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lanes [0, n) set (0 <= n <= 8), for maskload/maskstore.
DS_AVX2 inline __m256i lane_mask8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

DS_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
DS_AVX2 inline __m256 load8(const uint16_t* p) {   // 8 bf16 -> 8 floats (exact)
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
// The first n (< 8) elements, zeros after; reads nothing past p + n.
DS_AVX2 inline __m256 load8_tail(const float* p, int64_t n) {
  return _mm256_maskload_ps(p, lane_mask8(n));
}
DS_AVX2 inline __m256 load8_tail(const uint16_t* p, int64_t n) {
  uint16_t t[8] = {};
  std::memcpy(t, p, size_t(n) * sizeof(uint16_t));
  return load8(t);
}

// w is N x K with rows contiguous (leading dim ldw); x is MM rows of K (leading dim ldx).
template <int MM, int R, typename T>
DS_AVX2 void small_nt_avx2(const float* x, int64_t ldx, const T* w, int64_t ldw, float* c,
                           int64_t ldc, int64_t N, int64_t K, float alpha, float beta) {
  const int64_t K8 = K & ~int64_t(7), rest = K - K8;
  int64_t j = 0;
  for (; j + R <= N; j += R) {
    __m256 acc[MM][R];
    for (int m = 0; m < MM; ++m)
      for (int q = 0; q < R; ++q) acc[m][q] = _mm256_setzero_ps();
    const T* wr = w + j * ldw;
    for (int64_t k = 0; k < K8; k += 8) {
      __m256 wv[R];
      for (int q = 0; q < R; ++q) wv[q] = load8(wr + q * ldw + k);
      if (k % (64 / sizeof(T)) == 0)   // the next block's rows, one cache line per row ahead
        for (int q = 0; q < R; ++q)
          _mm_prefetch(reinterpret_cast<const char*>(wr + (R + q) * ldw + k), _MM_HINT_T0);
      for (int m = 0; m < MM; ++m) {
        const __m256 xv = _mm256_loadu_ps(x + m * ldx + k);
        for (int q = 0; q < R; ++q) acc[m][q] = _mm256_fmadd_ps(xv, wv[q], acc[m][q]);
      }
    }
    if (rest) {
      __m256 wv[R];
      for (int q = 0; q < R; ++q) wv[q] = load8_tail(wr + q * ldw + K8, rest);
      for (int m = 0; m < MM; ++m) {
        const __m256 xv = load8_tail(x + m * ldx + K8, rest);
        for (int q = 0; q < R; ++q) acc[m][q] = _mm256_fmadd_ps(xv, wv[q], acc[m][q]);
      }
    }
    for (int m = 0; m < MM; ++m)
      for (int q = 0; q < R; ++q)
        store1_avx2(c + m * ldc + j + q, hsum8(acc[m][q]), alpha, beta);
  }
  if (j < N) small_nt_avx2<MM, 1, T>(x, ldx, w + j * ldw, ldw, c + j, ldc, N - j, K, alpha, beta);
}

// One input row (decode, M = 1): weight rows one after another, each a single sequential
// stream, with four independent accumulators per row so that the FMA latency does not bound
// an in-cache row.
template <typename T>
DS_AVX2 void small_nt1_avx2(const float* x, const T* w, int64_t ldw, float* c, int64_t N,
                            int64_t K, float alpha, float beta) {
  const int64_t K32 = K & ~int64_t(31), K8 = K & ~int64_t(7), rest = K - K8;
  for (int64_t j = 0; j < N; ++j) {
    const T* wr = w + j * ldw;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k < K32; k += 32) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), load8(wr + k), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), load8(wr + k + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 16), load8(wr + k + 16), a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 24), load8(wr + k + 24), a3);
    }
    for (; k < K8; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), load8(wr + k), a0);
    if (rest) a1 = _mm256_fmadd_ps(load8_tail(x + K8, rest), load8_tail(wr + K8, rest), a1);
    store1_avx2(c + j, hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))),
                alpha, beta);
  }
}

// Weight rows per block for MM input rows: MM * R accumulators, R weight vectors and one
// input vector within the 16 ymm registers.
template <int MM>
constexpr int kRowsAvx2 = MM <= 2 ? 4 : 3;

}  // namespace
}  // namespace ds::ops::opt::gemm
