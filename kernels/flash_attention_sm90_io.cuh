// The wgmma attention kernels' (flash_attention_sm90.cu) global-memory side and ring
// barrier: block rows and tiles into the shared layout of flash_attention_sm90_layout.hpp by
// zero-filling cp.async, the rows of an F32 output from the accumulators, the barrier that
// publishes a ring stage. Device code of the sm_90a build only.
#pragma once
#include <cstdint>

#include "kernels/flash_attention_common.cuh"
#include "kernels/flash_attention_sm90_layout.hpp"
#include "kernels/mma_sm80.cuh"

namespace ds::cuda::flash {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Rows [r0, r0 + ROWS) of one head of a (B, T, H, D) BF16 tensor (row stride rs) -> chunks(D)
// swizzled tiles of ROWS rows at dst; rows past T and columns past D zero-filled.
template <int ROWS, int D, int NT>
__device__ __forceinline__ void load_rows(uint32_t dst, const bf16* src, int64_t rs, int r0,
                                          int T) {
  static_assert(ROWS * fa90::chunks(D) * 8 % NT == 0, "load_rows: copies per thread");
#pragma unroll
  for (int i = 0; i < fa90::row_copies(ROWS, D, NT); ++i) {
    const fa90::RowCopy x = fa90::row_copy(int(threadIdx.x) + i * NT, ROWS);
    const int col = fa90::row_copy_col(x);
    const bool ok = r0 + x.r < T && col < D;
    ptx::cp16(dst + fa90::row_copy_dst(x, ROWS), ok ? src + int64_t(r0 + x.r) * rs + col : src,
              ok);
  }
}

// Rows tb..tb+63 of a transposed copy (N rows of Tp, one head at xth) -> N rows x 128 bytes
// (ok false: zeros, nothing read; for a tile at or past Tp).
template <int N, int NT>
__device__ __forceinline__ void load_t(uint32_t dst, const bf16* xth, int Tp, int tb,
                                       bool ok = true) {
  static_assert(N * 8 % NT == 0, "load_t: copies per thread");
#pragma unroll
  for (int i = 0; i < fa90::t_copies(N, NT); ++i) {
    const int e = int(threadIdx.x) + i * NT, r = fa90::t_copy_row(e), u = fa90::t_copy_unit(e);
    ptx::cp16(dst + fa90::swizzled(r, u),
              ok ? xth + fa90::t_index(0, r, tb + u * 8, N, Tp) : xth, ok);
  }
}

// Rows i0 and i1 (this thread's two accumulator rows) of a (B, T, H, 8 NT) F32 output from the
// accumulators, scaled by f0 / f1; rows at or past T are not written.
template <int NT>
__device__ __forceinline__ void store_rows(float* out, const float (&acc)[NT][4], int64_t head,
                                           int H, int T, int i0, int i1, int lane, float f0,
                                           float f1) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int col = nt * 8 + (lane & 3) * 2;
    if (i0 < T)
      *reinterpret_cast<float2*>(out + (head + int64_t(i0) * H) * (8 * NT) + col) =
          make_float2(acc[nt][0] * f0, acc[nt][1] * f0);
    if (i1 < T)
      *reinterpret_cast<float2*>(out + (head + int64_t(i1) * H) * (8 * NT) + col) =
          make_float2(acc[nt][2] * f1, acc[nt][3] * f1);
  }
}

// The ring's barrier over the block's NT threads: __syncthreads in lockstep; staggered or
// pipelined (NAMED), the warpgroups meet it at different points of their code, so it is
// named barrier 1 (bar.sync counts arrivals, whatever instruction each warp arrives from).
template <bool NAMED, int NT>
__device__ __forceinline__ void ring_barrier() {
  if constexpr (NAMED) asm volatile("bar.sync 1, %0;\n" ::"n"(NT) : "memory");
  else __syncthreads();
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace ds::cuda::flash
