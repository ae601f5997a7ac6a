// BF16 conversions and the F32-or-BF16 loads and stores the elementwise and MoE kernels share
// (included by kernels/common.cuh). Plain CUDA C++ without inline PTX or CUDA headers of its
// own, so that the host emulator (tests/kernels/cuda_emu.hpp) can run the kernels that use it
// (kernels/moe_combine.cuh).
#pragma once
#include <cstdint>

namespace ds::cuda {

__device__ __forceinline__ float bf16_to_f32(uint16_t b) {
  return __uint_as_float(uint32_t(b) << 16);
}
// Round to nearest even, NaN kept quiet (same as ds::f32_to_bf16 on the CPU).
__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
// Four values rounded to BF16 and stored at element 4*i of `out`: the codes as one 8-byte
// store (CODES; little-endian, element 0 in the low half) or their F32 values as one 16-byte
// store. out must be 8- or 16-byte aligned.
template <bool CODES>
__device__ __forceinline__ void store_bf16x4(void* out, int64_t i, float4 v) {
  const uint32_t a = f32_to_bf16(v.x), b = f32_to_bf16(v.y), c = f32_to_bf16(v.z),
                 d = f32_to_bf16(v.w);
  if constexpr (CODES)
    static_cast<uint2*>(out)[i] = make_uint2(a | (b << 16), c | (d << 16));
  else
    static_cast<float4*>(out)[i] = make_float4(__uint_as_float(a << 16), __uint_as_float(b << 16),
                                               __uint_as_float(c << 16), __uint_as_float(d << 16));
}
// Inputs that are F32, or (BF16) BF16 codes widened exactly: four elements at element 4*i
// (one 16-byte load, or one 8-byte load of codes; p 16- or 8-byte aligned), or element i.
template <bool BF16>
__device__ __forceinline__ float4 load_in4(const void* p, int64_t i) {
  if constexpr (BF16) {
    const uint2 u = static_cast<const uint2*>(p)[i];
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                       __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
  } else {
    return static_cast<const float4*>(p)[i];
  }
}
template <bool BF16>
__device__ __forceinline__ float load_in1(const void* p, int64_t i) {
  if constexpr (BF16) return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  else return static_cast<const float*>(p)[i];
}

}  // namespace ds::cuda
