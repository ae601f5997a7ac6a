// The global-memory side shared by the two grouped BF16 GEMM kernels (gemm_grouped_bf16.cu on
// mma.sync, gemm_grouped_sm90.cu on wgmma): staging an operand's block of a tile with
// zero-filling cp.async, and the epilogue's pair of FP32 outputs. Device code (nvcc only).
#pragma once
#include <cstdint>

#include "kernels/gemm_grouped_bf16_layout.hpp"   // gbf16::ChunkCopy
#include "kernels/mma_sm80.cuh"                   // ptx::cp16

namespace ds::cuda::gemm_io {

// N 16-byte copies of one thread into the stage at shared address s: copy i is where
// map(i, cc) puts it (cc: the shared offset and the first element (row, col) of g, row-major
// with leading dimension ld); map returns false for a chunk past the matrix, which is
// zero-filled (the address passed is g itself, never read).
template <int N, class Map>
__device__ __forceinline__ void stage_chunks(uint32_t s, const uint16_t* __restrict__ g, int ld,
                                             Map map) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    gbf16::ChunkCopy cc;
    const bool ok = map(i, cc);
    ptx::cp16(s + cc.soff, ok ? g + int64_t(cc.row) * ld + cc.col : g, ok);
  }
}

// c[col], c[col + 1] of row crow = alpha * (x, y) + beta * the old values (not read when beta
// is 0); crow + col 8-byte aligned (c and its row length checked on the host).
__device__ __forceinline__ void store_pair(float* crow, int col, float x, float y, float alpha,
                                           float beta) {
  float2 v = make_float2(alpha * x, alpha * y);
  if (beta != 0.0f) {
    const float2 old = __ldcg(reinterpret_cast<const float2*>(crow + col));
    v.x = fmaf(beta, old.x, v.x);
    v.y = fmaf(beta, old.y, v.y);
  }
  __stcg(reinterpret_cast<float2*>(crow + col), v);
}

}  // namespace ds::cuda::gemm_io
