// The E4M3 quantisers' shared arithmetic (the amax on the bits, the scale, the code, its
// value, the round trip) and argument blocks, included by kernels/fp8_quant_tiles.cuh and
// kernels/fp8_quant_groups.cuh. Plain CUDA C++ without inline PTX, so that the host emulator
// (tests/kernels/cuda_emu.hpp) can run the kernels that use it; the rules that make it
// bit-identical to lib/ops/cpu/ref_fp8.cpp are listed at the top of kernels/fp8_quant.cu.
#pragma once
#ifdef __CUDACC__
#include <cuda_fp8.h>
#endif
#include <cstdint>

#include "kernels/fp8_quant.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::fp8q {
namespace {

constexpr int kBlk = 128;         // FP8 group width (ds::ops::kFp8Block)
constexpr float kE4M3Max = 448.0f;
constexpr float kActAmaxMin = 1e-4f;
constexpr float kScaleMin = 1.17549435e-38f;   // FLT_MIN, the least scale (act=false)

// |v|'s bits with NaN mapped to 0: integer max = amax of the finite values, or +inf's bits.
__device__ __forceinline__ uint32_t abs_bits(float v) {
  const uint32_t a = __float_as_uint(v) & 0x7fffffffu;
  return a > 0x7f800000u ? 0u : a;
}

// Smallest power of two >= s for finite s > 0 (exact, on the bits; subnormals included);
// other values unchanged. Matches fp8::pow2_ceil (frexp/ldexp).
__device__ __forceinline__ float pow2_ceil(float s) {
  if (!(s > 0.0f) || isinf(s)) return s;
  const uint32_t u = __float_as_uint(s);
  const uint32_t e = u >> 23, m = u & 0x7fffffu;
  if (e != 0) return m == 0 ? s : __uint_as_float((e + 1) << 23);   // e + 1 == 255: inf
  const uint32_t p = 1u << (31 - __clz(m));                            // subnormal
  return p == m ? s : __uint_as_float(p << 1);
}

__device__ __forceinline__ float scale_of(float amax, bool ue8m0, bool act) {
  if (act) amax = amax < kActAmaxMin ? kActAmaxMin : amax;
  else if (amax == 0.0f) return 1.0f;
  float s = __fdiv_rn(amax, kE4M3Max);
  if (s < kScaleMin) s = kScaleMin;   // as fp8::scale_of: a normal, never 0 or subnormal
  return ue8m0 ? pow2_ceil(s) : s;
}

__device__ __forceinline__ uint8_t quant_code(float x, float s) {
  if (isnan(x)) return signbit(x) ? 0xff : 0x7f;
  const float v = __fdiv_rn(x, s);
  if (isnan(v)) return 0xff;   // inf / inf: x86's default NaN is negative
  return uint8_t(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// Value of an E4M3 code (0x7f / 0xff NaN), as ds::e4m3_to_f32.
__device__ __forceinline__ float e4m3_value(uint8_t c) {
  const uint32_t mag = c & 0x7fu, sign = uint32_t(c & 0x80u) << 24;
  if (mag == 0x7fu) return __uint_as_float(0x7fc00000u);
  const uint32_t e = mag >> 3, m = mag & 7u;
  const float v = e == 0 ? float(m) * 0.001953125f   // subnormal: m * 2^-9, exact
                         : __uint_as_float(((e + 120u) << 23) | (m << 20));
  return __uint_as_float(__float_as_uint(v) | sign);
}

__device__ __forceinline__ void emit(float x, float s, int64_t at, uint8_t* q, float* fake) {
  const uint8_t c = quant_code(x, s);
  if (q) q[at] = c;
  if (fake) fake[at] = __fmul_rn(e4m3_value(c), s);
}

struct QArgs {
  const float* x;
  int64_t M, K;
  int64_t SC;   // scale columns
  bool ue8m0, act;
  uint8_t* q;
  float* scales;
  float* fake;
};

// One matrix of fp8_quantize_blocks_multi and its blocks' place in the grid: SR x SC blocks of
// 128x128, the first at grid block `first` (a prefix sum over the jobs).
struct BlockEntry {
  Fp8BlockJob job;
  int64_t SR, SC, first;
};

}  // namespace
}  // namespace ds::cuda::fp8q
