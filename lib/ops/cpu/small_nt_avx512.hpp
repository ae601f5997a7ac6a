// The AVX-512 small-M "NT" kernel shared by the F32 GEMM (gemm_avx512.cpp) and the BF16-weight
// linear (gemm_bf16.cpp): c(MM, N) = alpha * x(MM, K) w(N, K)^T + beta * c for decode sizes,
// R weight rows at a time, dot products over k in 16-lane FP32 accumulators, so each weight
// row is streamed once. The weight element type is float or uint16_t (bf16, widened exactly
// in registers). Internal header: include only from files that check avx512_available().
#pragma once
#include <immintrin.h>

#include <cstdint>

#ifndef DS_AVX512
#define DS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
#endif

namespace ds::ops::opt::gemm {
namespace {

DS_AVX512 inline void store1(float* c, float s, float alpha, float beta) {
  *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
}

// Horizontal sum of 16 lanes (in-register shuffles only).
DS_AVX512 inline float hsum(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
  return _mm512_cvtss_f32(v);
}

// 16 bf16 -> 16 floats (exact): zero-extend to 32 bits, shift left by 16.
DS_AVX512 inline __m512 widen(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

DS_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
DS_AVX512 inline __m512 load16(const uint16_t* p) {
  return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
DS_AVX512 inline __m512 load16(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
DS_AVX512 inline __m512 load16(__mmask16 m, const uint16_t* p) {
  return widen(_mm256_maskz_loadu_epi16(m, p));
}

// w is N x K with rows contiguous (leading dim ldw); x is MM rows of K (leading dim ldx).
template <int MM, int R, typename T>
DS_AVX512 void small_nt(const float* x, int64_t ldx, const T* w, int64_t ldw, float* c,
                        int64_t ldc, int64_t N, int64_t K, float alpha, float beta) {
  const int64_t K16 = K & ~int64_t(15);
  const __mmask16 tail = __mmask16((1u << (K - K16)) - 1);
  int64_t j = 0;
  for (; j + R <= N; j += R) {
    __m512 acc[MM][R];
    for (int m = 0; m < MM; ++m)
      for (int q = 0; q < R; ++q) acc[m][q] = _mm512_setzero_ps();
    const T* wr = w + j * ldw;
    for (int64_t k = 0; k < K16; k += 16) {
      __m512 wv[R];
      for (int q = 0; q < R; ++q) wv[q] = load16(wr + q * ldw + k);
      for (int m = 0; m < MM; ++m) {
        const __m512 xv = _mm512_loadu_ps(x + m * ldx + k);
        for (int q = 0; q < R; ++q) acc[m][q] = _mm512_fmadd_ps(xv, wv[q], acc[m][q]);
      }
    }
    if (tail) {
      __m512 wv[R];
      for (int q = 0; q < R; ++q) wv[q] = load16(tail, wr + q * ldw + K16);
      for (int m = 0; m < MM; ++m) {
        const __m512 xv = _mm512_maskz_loadu_ps(tail, x + m * ldx + K16);
        for (int q = 0; q < R; ++q) acc[m][q] = _mm512_fmadd_ps(xv, wv[q], acc[m][q]);
      }
    }
    for (int m = 0; m < MM; ++m)
      for (int q = 0; q < R; ++q) store1(c + m * ldc + j + q, hsum(acc[m][q]), alpha, beta);
  }
  if (j < N) small_nt<MM, 1, T>(x, ldx, w + j * ldw, ldw, c + j, ldc, N - j, K, alpha, beta);
}

}  // namespace
}  // namespace ds::ops::opt::gemm
