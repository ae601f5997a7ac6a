// Grouped BF16 GEMM on warpgroup MMAs (sm_90a; see gemm_grouped_sm90.cuh): the products of
// one grouped call (the routed experts of an MoE projection) in one launch, as the mma.sync
// kernel of gemm_grouped_bf16.cu does, over the same host table and tile grid, with
// wgmma.m64n128k16 instead of mma.sync.m16n8k16 + ldmatrix.
//   - Row-major c (M, N) = alpha * op(a) @ op(b) + beta * c per group; a stored (M, K) or
//     (K, M) when TA, b stored (K, N) or (N, K) when TB; BF16 in, FP32 accumulation and out.
//     The four (TA, TB) layouts are instantiations; the model uses (0,1) forward, (0,0) input
//     gradient and (1,0) weight gradient. An operand stored K-contiguous is staged K-major, one
//     stored M/N-contiguous MN-major (wgmma's transpose flags; no transposed copies).
//   - Block: 256 threads = 2 warpgroups, a 128x128 tile of c, warpgroup w rows 64w..64w+63
//     (64 FP32 accumulators per thread); two blocks per SM (97 KB of shared memory and at most
//     128 registers each), so that one block's prologue and epilogue run under the other's
//     products: expert GEMMs have short K (384 or 1024 in the forward).
//   - K in blocks of 64 through a 3-stage cp.async ring (16-byte copies, src-size 0 zero-fills
//     what lies past the matrix, so any M, N and K give exact sums). Main loop, per block kb:
//       wait for block kb's copies (block kb + 1 may be in flight), fence.proxy.async (cp.async
//       writes are generic-proxy writes, wgmma reads through the async proxy), barrier;
//       issue block kb's four wgmma as one group; wait until at most that group is pending
//       (block kb - 1's products are done in this thread); barrier (in every thread); refill
//       block kb - 1's stage with block kb + 2.
//     So the tensor cores always have the next group queued behind the running one, and each
//     block's copies have about two blocks' products to land.
//   - Epilogue straight from the accumulator fragments, float2 stores, c read only when
//     beta != 0.
//   - Index arithmetic in gemm_grouped_sm90_layout.hpp, which tests/kernels/
//     test_layout_grouped_sm90.cpp runs on the warp emulator (copies, ring, barriers, every
//     operand read through the descriptor models, the products and the epilogue's positions).
// Opt-in (DS_GROUPED_GEMM=wgmma; not yet run on a GPU): the MN-major operands rely on the
// descriptor layout that the probe of sm90_probe.cu settles.
// reference: PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate" (descriptors,
// swizzle modes, imm-trans-a / imm-trans-b), "cp.async", "fence.proxy.async".
#include "kernels/common.cuh"
#include "kernels/gemm_grouped_io.cuh"
#include "kernels/gemm_grouped_sm90.cuh"
#include "kernels/gemm_grouped_sm90_layout.hpp"
#include "kernels/mma_sm80.cuh"
#include "kernels/sm90_wgmma_bf16.cuh"

namespace ds::cuda {

namespace {

using gbf16::GroupTile;
using namespace gw90;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
using ptx::cp_commit;
using ptx::cp_wait;

// One operand's K block [k0, k0 + 64) of a 128-wide tile into shared memory at s (KC: stored
// (ext, K), staged K-major; else stored (K, ext), staged MN-major). Units past the matrix are
// zero-filled (the address passed is the operand's base, never read).
template <bool KC>
__device__ __forceinline__ void load_block(uint32_t s, const uint16_t* __restrict__ g, int ld,
                                           int ext, int K, int o0, int k0, int tid) {
  gemm_io::stage_chunks<kCopies>(s, g, ld, [&](int i, ChunkCopy& cc) {
    return block_copy<KC>(tid, i, ext, K, o0, k0, cc);
  });
}
#endif

template <bool TA, bool TB>
__global__ void __launch_bounds__(kThreads, 2)
    grouped_bf16_wgmma_kernel(const GroupTile* __restrict__ groups, int count, float alpha,
                              float beta) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = (ptx::smem_addr(smem_raw) + 1023u) & ~1023u;
  const int tid = int(threadIdx.x), wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;

  const int tile = int(blockIdx.x);
  const GroupTile& gd = groups[gbf16::group_of(groups, count, tile)];
  const uint16_t* __restrict__ a = gd.a;
  const uint16_t* __restrict__ b = gd.b;
  float* __restrict__ c = gd.c;
  const int M = gd.M, N = gd.N, K = gd.K, lda = gd.lda, ldb = gd.ldb, ldc = gd.ldc;
  const gbf16::TileOrigin org = gbf16::tile_origin(tile, gd.first_tile, N);
  const int m0 = org.m0, n0 = org.n0;

  auto load = [&](int kb) {   // K block kb into stage kb % kStages, one commit group
    const int s = kb % kStages;
    load_block<!TA>(stage_a(base, s), a, lda, M, K, m0, kb * kBK, tid);
    load_block<TB>(stage_b(base, s), b, ldb, N, K, n0, kb * kBK, tid);
  };

  float acc[16][4];   // d[nt][c]: row acc_row(wg, warp, lane, c), column acc_col(nt, lane) + c&1
#pragma unroll
  for (int nt = 0; nt < 16; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[nt][i] = 0.0f;

  const int nk = k_blocks(K);
#pragma unroll
  for (int s = 0; s < kPrefetch; ++s) {   // blocks 0 and 1 (empty groups past the end)
    if (s < nk) load(s);
    cp_commit();
  }
  for (int kb = 0; kb < nk; ++kb) {
    // committed: kStages - 1 + kb groups; block kb's is complete once at most one is pending
    cp_wait<kCpPending>();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    const int s = kb % kStages;
    sm90::fence_acc(acc);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk)
      sm90::wgmma_ss_n128<a_mn_major<TA>(), b_mn_major<TB>()>(
          acc, a_desc(a_mn_major<TA>(), a_step<TA>(stage_a(base, s), wg, kk)),
          b_desc(b_mn_major<TB>(), b_step<TB>(stage_b(base, s), kk)), 1);
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    static_assert(kWgmmaPending == 1, "the wait below");
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");   // block kb - 1 done
    sm90::fence_acc(acc);
    __syncthreads();   // ... in every thread: its stage, (kb + 2) % kStages, is free
    if (kb + kPrefetch < nk) load(kb + kPrefetch);
    cp_commit();
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  sm90::fence_acc(acc);
  cp_wait<0>();   // only empty groups can be pending here; leave none behind

  // Epilogue: N is even, so col < N implies col + 1 < N, and c + row * ldc + col is 8-byte
  // aligned (c and ldc checked on the host).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = m0 + acc_row(wg, warp, lane, 2 * h);
    if (row >= M) continue;
    float* crow = c + int64_t(row) * ldc;
#pragma unroll
    for (int nt = 0; nt < 16; ++nt) {
      const int col = n0 + acc_col(nt, lane);
      if (col >= N) continue;
      gemm_io::store_pair(crow, col, acc[nt][2 * h], acc[nt][2 * h + 1], alpha, beta);
    }
  }
#else
  __trap();   // launched only where sm90a_loaded()
#endif
}

template <bool TA, bool TB>
void launch(const GroupTile* table, int count, int64_t tiles, float alpha, float beta) {
  static const bool attr = [] {   // once per instantiation (one device per process)
    DS_CUDA_CHECK(cudaFuncSetAttribute(grouped_bf16_wgmma_kernel<TA, TB>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       kSmemBytes));
    // the largest shared-memory carveout, so that two blocks fit an SM
    DS_CUDA_CHECK(cudaFuncSetAttribute(grouped_bf16_wgmma_kernel<TA, TB>,
                                       cudaFuncAttributePreferredSharedMemoryCarveout,
                                       int(cudaSharedmemCarveoutMaxShared)));
    return true;
  }();
  (void)attr;
  grouped_bf16_wgmma_kernel<TA, TB>
      <<<unsigned(tiles), kThreads, kSmemBytes, stream()>>>(table, count, alpha, beta);
  DS_CUDA_LAUNCHED();
}

}  // namespace

void grouped_bf16_wgmma_launch(const gbf16::GroupTile* table, int count, int64_t tiles, bool ta,
                               bool tb, float alpha, float beta) {
  if (!ta && tb) launch<false, true>(table, count, tiles, alpha, beta);
  else if (!ta && !tb) launch<false, false>(table, count, tiles, alpha, beta);
  else if (ta && !tb) launch<true, false>(table, count, tiles, alpha, beta);
  else launch<true, true>(table, count, tiles, alpha, beta);
}

}  // namespace ds::cuda
