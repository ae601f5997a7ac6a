// The MoE layer's expert sort of its (token, k) pairs (ops::moe_sort_pairs on the GPU):
// included by kernels/moe_route.cu, which launches it one block per expert after the count
// kernel, and by the host emulation test tests/kernels/test_emu_moe_sort.cpp, which runs this
// same kernel on a CPU against the reference. Plain CUDA C++ without inline PTX, so that the
// emulator (tests/kernels/cuda_emu.hpp) can run it.
#pragma once
#include <cstdint>

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::moesort {
namespace {

constexpr int kSortThreads = 256, kSortPer = 8;   // a tile: 2048 pairs, 8 consecutive a thread

// One block per expert e. Its first slot is the sum of the counts before e; the block walks
// idx in tiles, each thread counts the hits among its 8 consecutive pairs, a block-wide
// exclusive scan of those counts (warp shuffles, then the warps' totals in shared memory)
// gives each thread its first slot, and the thread writes its hits in pair order. Threads
// and tiles follow p, so expert e's slots hold its pairs ascending (the CPU's stable order).
// Every thread keeps the running slot itself (the same sum everywhere): no shared counter.
__global__ void sort_pairs_kernel(const int32_t* __restrict__ idx, int64_t NK, int64_t K,
                                  const int32_t* __restrict__ counts,
                                  int32_t* __restrict__ pair_src, int32_t* __restrict__ pair_tok,
                                  int32_t* __restrict__ pair_slot) {
  __shared__ int warp_total[kSortThreads / 32];
  const int e = int(blockIdx.x), lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  int64_t slot = 0;
  for (int j = 0; j < e; ++j) slot += counts[j];
  for (int64_t t0 = 0; t0 < NK; t0 += int64_t(kSortThreads) * kSortPer) {
    const int64_t p0 = t0 + int64_t(threadIdx.x) * kSortPer;
    int hits = 0;
    unsigned mask = 0;   // bit i: pair p0 + i goes to e
#pragma unroll
    for (int i = 0; i < kSortPer; ++i)
      if (p0 + i < NK && idx[p0 + i] == e) {
        mask |= 1u << i;
        ++hits;
      }
    int incl = hits;   // inclusive scan over the warp
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    if (lane == 31) warp_total[warp] = incl;
    __syncthreads();
    int before = 0, total = 0;
#pragma unroll
    for (int w = 0; w < kSortThreads / 32; ++w) {
      const int t = warp_total[w];
      before += w < warp ? t : 0;
      total += t;
    }
    int64_t j = slot + before + (incl - hits);
    for (int i = 0; i < kSortPer; ++i)
      if (mask & (1u << i)) {
        pair_src[j] = int32_t(p0 + i);
        pair_tok[j] = int32_t((p0 + i) / K);
        if (pair_slot) pair_slot[p0 + i] = int32_t(j);
        ++j;
      }
    slot += total;
    __syncthreads();   // warp_total is read by all before the next tile writes it
  }
}

}  // namespace
}  // namespace ds::cuda::moesort
