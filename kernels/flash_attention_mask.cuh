// The attention kernels' visibility rule and per-block key / query bounds (causal, plus the
// SFT segment mask), shared by the SIMT, mma.sync and wgmma kernels. Plain CUDA C++ without
// inline PTX or CUDA headers of its own, so that the host emulator (tests/kernels/cuda_emu.hpp)
// can run the kernels that use it (kernels/flash_attention_simt.cuh).
#pragma once
#include <cstdint>

namespace ds::cuda::flash {

// Query t sees key j (t < T, j <= t, same segment). sb: this batch row's segments or null;
// st: seg[t] (unused without segments).
__device__ __forceinline__ bool visible(int t, int j, int T, const int32_t* sb, int st) {
  return t < T && j <= t && (sb == nullptr || __ldg(sb + j) == st);
}

// Per-CTA key / query bounds from the segment pre-pass: the smallest kfirst of the CTA's
// queries (keys before it are invisible to all of them), the largest klast + 1 of its keys.
__device__ __forceinline__ int block_klo(const int32_t* kfirst, int64_t rowbase, int q0, int T,
                                         int nrows, int* sh) {
  if (threadIdx.x == 0) *sh = kfirst ? T : 0;
  __syncthreads();
  if (kfirst)   // strided: correct for any nrows, also more rows than threads
    for (int r = int(threadIdx.x); r < nrows && q0 + r < T; r += int(blockDim.x))
      atomicMin(sh, kfirst[rowbase + q0 + r]);
  __syncthreads();
  return *sh;
}
__device__ __forceinline__ int block_qhi(const int32_t* klast, int64_t rowbase, int k0, int T,
                                         int nrows, int* sh) {
  if (threadIdx.x == 0) *sh = klast ? 0 : T;
  __syncthreads();
  if (klast)
    for (int r = int(threadIdx.x); r < nrows && k0 + r < T; r += int(blockDim.x))
      atomicMax(sh, klast[rowbase + k0 + r] + 1);
  __syncthreads();
  return *sh;
}

}  // namespace ds::cuda::flash
