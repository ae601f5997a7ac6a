// The wgmma attention's operand preparation: the transposed BF16 copies x^T of q, k, v and dO
// (convert_t) and the fused dK/dV pass's per-query stats table {lse, D}. Included by
// kernels/flash_attention_sm90.cu, which launches them, and by the host emulation test
// tests/kernels/test_emu_attention_prep.cpp, which runs this same source on a CPU against the
// reference. Plain CUDA C++ without inline PTX or CUDA's BF16 header: BF16 values are their
// 16-bit codes (kernels/bf16_io.cuh, RNE with NaN kept quiet, as __float2bfloat16_rn for
// every non-NaN value), so that the emulator (tests/kernels/cuda_emu.hpp) can run it.
#pragma once
#include <cmath>   // INFINITY
#include <cstdint>

#include "kernels/bf16_io.cuh"
#include "kernels/flash_attention_sm90_layout.hpp"   // t_index

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::flash {
namespace {

__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ float widen(uint16_t code) { return bf16_to_f32(code); }

// x (B, T, H, Dv) F32 or BF16 codes -> x^T (B, H, Dv, Tp) BF16 codes, zero for rows t >= T (V^T
// for the forward; K^T, Q^T, dO^T for the backward; BF16 sources are copied exactly). grid
// (Tp/64, B*H); any block size.
template <class Src>
__global__ void to_bf16_t_kernel(const Src* __restrict__ v, uint16_t* __restrict__ vt, int T,
                                 int H, int Dv, int Tp) {
  __shared__ float tile[64][65];
  const int bh = int(blockIdx.y), b = bh / H, h = bh % H, t0 = int(blockIdx.x) * 64;
  for (int d0 = 0; d0 < Dv; d0 += 64) {
    for (int e = int(threadIdx.x); e < 64 * 64; e += int(blockDim.x)) {   // reads along d
      const int tt = e >> 6, dd = e & 63, t = t0 + tt, d = d0 + dd;
      tile[tt][dd] =
          t < T && d < Dv ? widen(v[((int64_t(b) * T + t) * H + h) * Dv + d]) : 0.f;
    }
    __syncthreads();
    for (int e = int(threadIdx.x); e < 64 * 64; e += int(blockDim.x)) {   // writes along t
      const int dd = e >> 6, tt = e & 63, d = d0 + dd;
      if (d < Dv) vt[fa90::t_index(bh, d, t0 + tt, Dv, Tp)] = f32_to_bf16(tile[tt][dd]);
    }
    __syncthreads();
  }
}

// qs (B*H, Tp) = {lse, D} of each query, {+inf, 0} for t >= T: the fused dK/dV pass's
// per-query stats, two queries in one 16-byte load. n = B*H*Tp.
__global__ void pack_query_stats_kernel(const float* __restrict__ lse,
                                        const float* __restrict__ D, float2* __restrict__ qs,
                                        int T, int Tp, int64_t n) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t bh = i / Tp;
  const int t = int(i % Tp);
  qs[i] = t < T ? make_float2(lse[bh * T + t], D[bh * T + t]) : make_float2(INFINITY, 0.f);
}

}  // namespace
}  // namespace ds::cuda::flash
