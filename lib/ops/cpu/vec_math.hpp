// Vectorisable float math for the optimised kernels (internal header). exp_f: exp by range
// reduction x = n ln2 + r (|r| <= ln2/2, ln2 split in a short exact high part and a low
// correction), a degree-7 polynomial for e^r (classic minimax coefficients of single-precision
// exp), and 2^n applied as two exact power-of-two factors so subnormal results come out right.
// Branch-free and written with plain float/int operations so GCC auto-vectorises loops that
// call it at -O3 on baseline x86-64 (and on wider ISAs in target_clones functions).
// Accuracy: <= 2 ulp for x in [-103, 88.7] (tests/ops/test_vec_math.cpp); exp(-inf) = 0,
// x < -104 gives 0, x > 88.72 gives +inf (float overflow), NaN stays NaN.
#pragma once
#include <bit>
#include <cstdint>
#include <limits>

// Hot loops get an AVX-512, an AVX2 and a baseline build, chosen at load time (ifunc). GCC
// only: clang (the fuzz build, scripts/fuzz.sh) does not clone function templates, so there
// they get the baseline build alone.
#if defined(__clang__)
#define DS_CLONES
#else
#define DS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

namespace ds::ops::opt {

// 2^i as a float for i in [-126, 127] (exponent field built directly).
inline float pow2i(int32_t i) { return std::bit_cast<float>(uint32_t(i + 127) << 23); }

inline float exp_f(float xin) {
  float x = xin < -104.0f ? -104.0f : xin;       // -inf -> 0 after scaling; NaN passes both
  x = x > 88.72f ? 88.72f : x;
  constexpr float kShift = 12582912.0f;          // 1.5 * 2^23: t's low bits hold round(x/ln2)
  const float t = x * 1.44269504088896341f + kShift;
  const float n = t - kShift;                    // round(x / ln2), in [-150, 128]
  const int32_t ni = std::bit_cast<int32_t>(t) - 0x4B400000;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;   // ln2 = hi + lo, n*hi exact
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;                    // e^r
  const int32_t h = ni >> 1;                     // 2^n = 2^h * 2^(n-h), both normal
  const float y = p * pow2i(h) * pow2i(ni - h);
  return xin > 88.72f ? std::numeric_limits<float>::infinity() : y;   // overflow
}

}  // namespace ds::ops::opt
