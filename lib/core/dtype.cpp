// bf16 / fp16 / fp8 (e4m3fn, e5m2) conversions; see include/ds/core/dtype.hpp.
// FP8 encoding works on the exact float value: scale into the target's integer grid,
// round to nearest even with the FPU (nearbyint in the default rounding mode), saturate.
#include "ds/core/dtype.hpp"

#include <cfenv>
#include <cmath>

#include "ds/core/error.hpp"

namespace ds {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::f8_e4m3: return "F8_E4M3";
    case DType::f8_e5m2: return "F8_E5M2";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    case DType::u16: return "U16";
    case DType::u32: return "U32";
  }
  DS_UNREACHABLE("dtype_name");
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: case DType::i32: case DType::u32: return 4;
    case DType::bf16: case DType::f16: case DType::u16: return 2;
    case DType::f8_e4m3: case DType::f8_e5m2: case DType::u8: return 1;
    case DType::i64: return 8;
  }
  DS_UNREACHABLE("dtype_size");
}

namespace {

// Generic small-float decode: `ebits` exponent bits, `mbits` mantissa bits, bias.
float decode_minifloat(unsigned mag, int ebits, int mbits, int bias) {
  unsigned e = mag >> mbits, m = mag & ((1u << mbits) - 1);
  if (e == 0) return std::ldexp(float(m), 1 - bias - mbits);            // subnormal
  return std::ldexp(float((1u << mbits) | m), int(e) - bias - mbits);    // normal
}

// Encode |x| (finite, >= 0) to the nearest code with RNE; codes above max_code saturate.
unsigned encode_minifloat(float ax, int mbits, int bias, unsigned max_code) {
  if (ax == 0.0f) return 0;
  int exp2;
  std::frexp(ax, &exp2);               // ax = f * 2^exp2, f in [0.5, 1)
  int e = exp2 - 1;                    // ax in [2^e, 2^(e+1))
  int min_normal_e = 1 - bias;
  if (e < min_normal_e) e = min_normal_e;   // subnormal range shares the min exponent's step
  float step = std::ldexp(1.0f, e - mbits);
  float q = std::nearbyint(ax / step);      // RNE in the default rounding mode (exact division)
  if (q == 0.0f) return 0;                  // rounds to zero
  // q counts steps of size 2^(e-mbits); rebuild the code from the rounded value.
  double v = double(q) * double(step);
  int ve;
  std::frexp(v, &ve);
  int E = ve - 1;
  unsigned code;
  if (E < min_normal_e) {
    code = unsigned(q);                                   // subnormal (or rounds up to min normal)
  } else {
    unsigned biased = unsigned(E + bias);
    unsigned mant = unsigned(std::ldexp(v, -E + mbits)) - (1u << mbits);
    code = (biased << mbits) | mant;
  }
  return code > max_code ? max_code : code;
}

}  // namespace

float e4m3_to_f32(uint8_t v) {
  unsigned mag = v & 0x7f;
  float s = (v & 0x80) ? -1.0f : 1.0f;
  if (mag == 0x7f) return std::nanf("");
  return s * decode_minifloat(mag, 4, 3, 7);
}

float e5m2_to_f32(uint8_t v) {
  unsigned mag = v & 0x7f;
  float s = (v & 0x80) ? -1.0f : 1.0f;
  if (mag == 0x7c) return s * INFINITY;
  if (mag > 0x7c) return std::nanf("");
  return s * decode_minifloat(mag, 5, 2, 15);
}

uint8_t f32_to_e4m3(float f) {
  uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (std::isnan(f)) return sign | 0x7f;
  float ax = std::fabs(f);
  if (std::isinf(ax) || ax >= kE4M3Max) return sign | 0x7e;   // saturate to 448
  return sign | uint8_t(encode_minifloat(ax, 3, 7, 0x7e));
}

uint8_t f32_to_e5m2(float f) {
  uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (std::isnan(f)) return sign | 0x7f;
  float ax = std::fabs(f);
  if (std::isinf(ax) || ax >= kE5M2Max) return sign | 0x7b;   // saturate to 57344
  return sign | uint8_t(encode_minifloat(ax, 2, 15, 0x7b));
}

float f16_to_f32(uint16_t h) {
  unsigned mag = h & 0x7fff;
  float s = (h & 0x8000) ? -1.0f : 1.0f;
  if ((mag >> 10) == 0x1f) return (mag & 0x3ff) ? std::nanf("") : s * INFINITY;
  return s * decode_minifloat(mag, 5, 10, 15);
}

uint16_t f32_to_f16(float f) {
  uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (std::isnan(f)) return sign | 0x7e00;
  float ax = std::fabs(f);
  if (std::isinf(ax)) return sign | 0x7c00;
  // IEEE overflow: values that round beyond 65504 become infinity (not saturating).
  if (ax >= 65520.0f) return sign | 0x7c00;
  return sign | uint16_t(encode_minifloat(ax, 10, 15, 0x7bff));
}

}  // namespace ds
