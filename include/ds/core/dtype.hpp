// Scalar number formats: bf16 and the two OCP FP8 formats (e4m3fn, e5m2).
// Conversions from float round to nearest, ties to even. FP8 conversions saturate:
// a finite value (or an infinity) beyond the largest finite value becomes that value
// (448 for e4m3fn, 57344 for e5m2); NaN stays NaN. bf16 keeps infinities and NaN.
// reference: OCP 8-bit Floating Point Specification (OFP8) rev 1.0; spec §3.1.
#pragma once
#include <cstdint>
#include <cstring>
#include <string_view>

namespace ds {

enum class DType : uint8_t { f32, bf16, f16, f8_e4m3, f8_e5m2, i32, i64, u8, u16, u32 };
std::string_view dtype_name(DType t);   // "F32", "BF16", ... (safetensors spelling)
size_t dtype_size(DType t);             // bytes per element

inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// bf16: the top 16 bits of an IEEE float32.
inline float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t(h) << 16); }
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                          // RNE
  return uint16_t(u >> 16);
}

constexpr float kE4M3Max = 448.0f;
constexpr float kE5M2Max = 57344.0f;

float e4m3_to_f32(uint8_t v);
float e5m2_to_f32(uint8_t v);
uint8_t f32_to_e4m3(float f);   // RNE, saturating, NaN -> 0x7f (sign kept)
uint8_t f32_to_e5m2(float f);   // RNE, saturating, NaN -> 0x7f (sign kept)

// half precision (IEEE binary16), needed to read F16 safetensors.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace ds
