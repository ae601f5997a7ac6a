// The online-softmax step and the accumulator-to-operand repacking shared by the tensor-core
// attention forwards: the mma.sync kernels (flash_attention_tc.cu) and the wgmma kernel
// (flash_attention_sm90.cu). Both hold S and O in the m16n8 accumulator layout: fragment
// [nt][c] of a 16-row tile is row lane/4 + 8 (c >= 2), column nt*8 + 2 (lane%4) + (c & 1);
// wgmma's m64nN accumulators are that layout for each warp's 16 rows (index 4 nt + c).
// reference: Dao, "FlashAttention-2" (2023), Algorithm 1; PTX ISA mma.m16n8k16 and wgmma
// register fragments.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/flash_attention_common.cuh"

namespace ds::cuda::flash {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
// A fragment (16 rows x 16 k) from the accumulators of n-tiles 2kk, 2kk+1 (rows x 8 cols each).
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4],
                                         const float (&c1)[4]) {
  a[0] = pack2(c0[0], c0[1]);
  a[1] = pack2(c0[2], c0[3]);
  a[2] = pack2(c1[0], c1[1]);
  a[3] = pack2(c1[2], c1[3]);
}
__device__ __forceinline__ float fast_exp2(float x) {   // ex2.approx: 2^-inf = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// One online-softmax step for one 16-row m-tile (rows i0 = lane/4, i1 = i0 + 8 of it): mask,
// scale to log2 units, new running max, P = 2^(s - m) in place, the row sums; returns the
// factors (rows i0, i1) that rescale O, which rescale_o applies (softmax_step does both; the
// pipelined wgmma forward rescales once the previous tile's P V is done).
template <int NT>
__device__ __forceinline__ float2 softmax_probs(float (&s)[NT][4], float& m0, float& m1,
                                                float& l0, float& l1, float sl, bool need, int i0,
                                                int i1, int kb, int T, const int32_t* sb,
                                                int s0, int s1, int lane) {
  float mx0 = m0, mx1 = m1;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      float x = s[nt][c] * sl;
      if (need) {
        const int j = kb + nt * 8 + (lane & 3) * 2 + (c & 1);
        if (!(c < 2 ? visible(i0, j, T, sb, s0) : visible(i1, j, T, sb, s1))) x = -INFINITY;
      }
      s[nt][c] = x;
      if (c < 2) mx0 = fmaxf(mx0, x); else mx1 = fmaxf(mx1, x);
    }
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
  const float mu0 = mx0 == -INFINITY ? 0.f : mx0, mu1 = mx1 == -INFINITY ? 0.f : mx1;
  const float al0 = fast_exp2(m0 - mu0), al1 = fast_exp2(m1 - mu1);
  float r0 = 0.f, r1 = 0.f;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    s[nt][0] = fast_exp2(s[nt][0] - mu0);
    s[nt][1] = fast_exp2(s[nt][1] - mu0);
    s[nt][2] = fast_exp2(s[nt][2] - mu1);
    s[nt][3] = fast_exp2(s[nt][3] - mu1);
    r0 += s[nt][0] + s[nt][1];
    r1 += s[nt][2] + s[nt][3];
  }
  l0 = l0 * al0 + r0;
  l1 = l1 * al1 + r1;
  m0 = mx0;
  m1 = mx1;
  return make_float2(al0, al1);
}
template <int NO>
__device__ __forceinline__ void rescale_o(float (&o)[NO][4], float2 al) {
#pragma unroll
  for (int nt = 0; nt < NO; ++nt) {
    o[nt][0] *= al.x; o[nt][1] *= al.x;
    o[nt][2] *= al.y; o[nt][3] *= al.y;
  }
}
template <int NT, int NO>
__device__ __forceinline__ void softmax_step(float (&s)[NT][4], float (&o)[NO][4], float& m0,
                                             float& m1, float& l0, float& l1, float sl, bool need,
                                             int i0, int i1, int kb, int T, const int32_t* sb,
                                             int s0, int s1, int lane) {
  rescale_o(o, softmax_probs(s, m0, m1, l0, l1, sl, need, i0, i1, kb, T, sb, s0, s1, lane));
}

}  // namespace ds::cuda::flash
