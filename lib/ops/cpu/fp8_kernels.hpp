// FP8 kernels of the ops layer (internal header): the group geometry shared by every FP8 op,
// the scale rule, a branch-free E4M3 rounding that the optimised loops vectorise, and the
// reference (ref_fp8.cpp, plain loops on ds/core/dtype.hpp's casts) and optimised
// (opt_fp8.cpp, OpenMP) kernels. Semantics: include/ds/ops/fp8.hpp; no checks here.
// reference: DeepSeek-V3 inference/kernel.py act_quant / weight_dequant / fp8_gemm.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "ds/core/dtype.hpp"
#include "ds/ops/fp8.hpp"

namespace ds::ops::fp8 {

// Groups of gr rows x gc columns tile an (M, K) matrix; the scale grid is (SR, SC), row-major.
// tensor: one group of the whole matrix.
struct Layout {
  int64_t M = 0, K = 0;    // matrix
  int64_t gr = 1, gc = 1;  // group rows, group columns
  int64_t SR = 0, SC = 0;  // scale grid: ceil(M / gr), ceil(K / gc)
  int64_t idx(int64_t i, int64_t j) const { return (i / gr) * SC + j / gc; }
};
Layout layout(int64_t M, int64_t K, Fp8Group g);

constexpr float kActAmaxMin = 1e-4f;   // act_quant's clamp of activation amax

// Smallest power of two >= s (s > 0 finite); other values unchanged. Exact (frexp).
inline float pow2_ceil(float s) {
  if (!(s > 0.0f) || std::isinf(s)) return s;
  int e = 0;
  const float m = std::frexp(s, &e);   // s = m * 2^e, m in [0.5, 1)
  return m == 0.5f ? s : std::ldexp(1.0f, e);
}

// Scale of a group from its amax (max |x| over the finite elements; inf if any is infinite).
// Without the activation clamp (weights, activation gradients) the scale is at least
// FLT_MIN: amax / 448 below it (amax < 5.3e-36) would be subnormal, with too few bits to carry
// the group (or 0, and every 0 / 0 a NaN code), and a checkpoint's scales must be positive
// normals. Such a group's elements below FLT_MIN * 2^-10 round to 0.
inline float scale_of(float amax, ScaleFormat fmt, bool act) {
  if (act) amax = amax < kActAmaxMin ? kActAmaxMin : amax;
  else if (amax == 0.0f) return 1.0f;
  float s = amax / kE4M3Max;
  if (s < std::numeric_limits<float>::min()) s = std::numeric_limits<float>::min();
  return fmt == ScaleFormat::ue8m0 ? pow2_ceil(s) : s;
}

// |v| as the bits of a float, NaN mapped to 0: for non-negative floats the integer order is
// the value order, so a running max over these (exact, order-free) is the amax of the finite
// values, or the bits of +inf.
inline int32_t abs_bits(float v) {
  const int32_t a = std::bit_cast<int32_t>(v) & 0x7fffffff;
  return a > 0x7f800000 ? 0 : a;
}

// The value of f32_to_e4m3(v) as a float (RNE, saturating at +-448, NaN kept), as integer
// selects on the bits so that loops over it vectorise (GCC if-converts the selects only when
// it may assume FP arithmetic does not trap: opt_fp8.cpp is compiled so). Normals: round the
// FP32 mantissa to 3 bits; below the smallest normal 2^-6: to a multiple of 2^-9 by adding
// 2^14 (whose FP32 ulp is 2^-9) and subtracting it again.
inline float e4m3_round(float v) {
  const int32_t u = std::bit_cast<int32_t>(v);
  const int32_t a = u & 0x7fffffff;
  const int32_t sign = u ^ a;
  const float ax = std::bit_cast<float>(a);
  // unsigned: for NaN inputs (a near 2^31) the sum wraps; that lane is replaced by a below
  const uint32_t ua = uint32_t(a);
  const int32_t normal = int32_t((ua + 0x7ffffu + ((ua >> 20) & 1u)) & 0xfff00000u);
  const int32_t sub = std::bit_cast<int32_t>((ax + 16384.0f) - 16384.0f);
  int32_t r = a < 0x3c800000 ? sub : normal;   // 0x3c800000 = 2^-6
  r = a >= 0x43e00000 ? 0x43e00000 : r;        // >= 448 (and inf): 448
  r = a > 0x7f800000 ? a : r;                  // NaN stays NaN
  return std::bit_cast<float>(r | sign);
}

// Code of a value that is exactly representable in E4M3 (an e4m3_round result).
inline uint8_t e4m3_code(float r) {
  const int32_t u = std::bit_cast<int32_t>(r);
  const int32_t a = u & 0x7fffffff;
  const int32_t sign = (u >> 24) & 0x80;
  const int32_t normal = (((a >> 23) - 120) << 3) | ((a >> 20) & 7);   // bias 127 -> 7
  const int32_t sub = int32_t(std::bit_cast<float>(a) * 512.0f);       // multiples of 2^-9
  int32_t c = a < 0x3c800000 ? sub : normal;
  c = a > 0x7f800000 ? 0x7f : c;
  return uint8_t(c | sign);
}

// The 256 code values as floats.
const float* e4m3_table();

}  // namespace ds::ops::fp8

namespace ds::ops::ref {
// x (M,K) -> q (M,K) codes, s (SR,SC) scales.
void fp8_quantize(const float* x, const fp8::Layout& L, ScaleFormat fmt, bool act, uint8_t* q,
                  float* s);
void fp8_dequantize(const uint8_t* q, const float* s, const fp8::Layout& L, float* out);
void fp8_fake_quant(const float* x, const fp8::Layout& L, ScaleFormat fmt, bool act, float* out);
void bf16_round(const float* x, float* out, int64_t n);
// c (M,N) = sum_kb (sum_{k in kb} a[m,k] b[n,k]) * as(m,kb) * bs(n,kb); la over a (M,K), lb
// over b (N,K); the partial sum in FP32, k ascending.
void fp8_gemm_nt(const uint8_t* a, const float* as, const fp8::Layout& la, const uint8_t* b,
                 const float* bs, const fp8::Layout& lb, float* c);
}  // namespace ds::ops::ref

namespace ds::ops::opt {
void fp8_quantize(const float* x, const fp8::Layout& L, ScaleFormat fmt, bool act, uint8_t* q,
                  float* s, int nt);
void fp8_dequantize(const uint8_t* q, const float* s, const fp8::Layout& L, float* out, int nt);
void fp8_fake_quant(const float* x, const fp8::Layout& L, ScaleFormat fmt, bool act, float* out,
                    int nt);
void bf16_round(const float* x, float* out, int64_t n, int nt);
// Codes decoded to FP32 once; per K-block one FP32 GEMM of the exact products (OpenBLAS /
// native kernels) over a panel of rows, then the scaled promotion into c.
void fp8_gemm_nt(const uint8_t* a, const float* as, const fp8::Layout& la, const uint8_t* b,
                 const float* bs, const fp8::Layout& lb, float* c, int nt);
}  // namespace ds::ops::opt
