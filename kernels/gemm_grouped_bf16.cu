// Grouped BF16 GEMM (see gemm_grouped_bf16.cuh): all products of one grouped call, the routed
// experts of one MoE projection, in one launch instead of one cuBLAS call per expert.
//   - Row-major c (M, N) = alpha * op(a) @ op(b) + beta * c per group; a stored (M, K) or
//     (K, M) when TA, b stored (K, N) or (N, K) when TB; BF16 codes in, FP32 accumulation
//     (mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32), FP32 out. The four (TA, TB) layouts are
//     template instantiations; the model uses (0,1) forward, (0,0) input gradient and (1,0)
//     weight gradient (K = the group's token count).
//   - Scheduling: the host builds a table of per-group descriptors (longest K first) whose
//     first_tile is the prefix sum of the groups' 128x128 tile counts; grid.x = all tiles; a
//     block finds its group by binary search over first_tile, then its (m-tile, n-tile), n
//     fastest.
//   - Block: 128x128 c tile, 256 threads = 8 warps as 2 (M) x 4 (N), warp tile 64x32 (4 m16 x
//     4 n8 mma tiles, 64 FP32 accumulators per thread). K in slices of 32 through a 3-stage
//     cp.async pipeline (16-byte chunks of 8 BF16; a chunk past the matrix is zero-filled with
//     src-size 0, so any M, N and any K — aligned or not when K is the strided dimension —
//     give exact sums), fragments by ldmatrix (.trans for the tiles stored K-major).
//   - Shared tiles: an operand stored K-contiguous ((M, K) a, (N, K) b) is staged [128][40]
//     (rows of 32 padded to 40 BF16 = 80 bytes: the 8 row addresses of an ldmatrix phase fall
//     in 8 distinct 4-bank groups); one stored K-major ((K, M) a, (K, N) b) is staged
//     [32][136] (272-byte rows: again 8 distinct bank groups). 60 KiB for 3 stages at most.
//   - Epilogue straight from the accumulator fragments, float2 stores, c read only when
//     beta != 0.
//   - The index arithmetic (tile geometry, copy mapping, ldmatrix lane offsets, accumulator
//     positions, tile decomposition) lives in gemm_grouped_bf16_layout.hpp, which a CPU test
//     runs through an emulation of cp.async / ldmatrix / mma
//     (tests/kernels/test_layout_grouped_bf16.cpp).
// reference: PTX ISA, "Matrix Fragments for mma.m16n8k16" and "ldmatrix"; cp.async.
#include <algorithm>
#include <climits>
#include <numeric>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/gemm_grouped_bf16.cuh"
#include "kernels/gemm_grouped_io.cuh"
#include "kernels/gemm_grouped_bf16_layout.hpp"
#include "kernels/gemm_grouped_sm90.cuh"
#include "kernels/mma_sm80.cuh"
#include "kernels/multi_tensor_table.cuh"

namespace ds::cuda {

namespace {

using namespace gbf16;   // tile geometry and index arithmetic

using ptx::cp_commit;
using ptx::cp_wait;
using ptx::ldsm4;
using ptx::ldsm4t;
using ptx::mma_bf16;

// One operand's K slice [k0, k0 + 32) of a 128-wide tile into the stage at shared address s:
// copies slice_copy<KC>(tid, i) for i < kCopies (gemm_grouped_bf16_layout.hpp). ext: the
// operand's extent along M (a) or N (b); KC: stored (ext, K), else (K, ext). Chunks past the
// matrix are zero-filled (the address passed is the operand's base, never read).
template <bool KC>
__device__ __forceinline__ void load_slice(uint32_t s, const uint16_t* __restrict__ g, int ld,
                                           int ext, int K, int o0, int k0, int tid) {
  gemm_io::stage_chunks<kCopies>(s, g, ld, [&](int i, ChunkCopy& cc) {
    return slice_copy<KC>(tid, i, ext, K, o0, k0, cc);
  });
}

// One 128x128 tile of c per block. Every index (copy mapping, ldmatrix lane addresses and
// steps, accumulator positions, tile decomposition) comes from gemm_grouped_bf16_layout.hpp;
// tests/kernels/test_layout_grouped_bf16.cpp runs this body on the CPU in the same order, so
// keep the two in step when either changes.
template <bool TA, bool TB>
__global__ void __launch_bounds__(kThreads, 2)
    grouped_bf16_gemm_kernel(const GroupTile* __restrict__ groups, int count, float alpha,
                             float beta) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ uint4 smem[];
  constexpr int kABytes = stage_bytes<!TA>(), kBBytes = stage_bytes<TB>();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp_m(warp), wn = warp_n(warp);   // warp tile rows wm*64.., cols wn*32..

  // The group (binary search over first_tile), then the tile's origin in c.
  const int tile = int(blockIdx.x);
  const GroupTile& gd = groups[group_of(groups, count, tile)];
  const uint16_t* __restrict__ a = gd.a;
  const uint16_t* __restrict__ b = gd.b;
  float* __restrict__ c = gd.c;
  const int M = gd.M, N = gd.N, K = gd.K, lda = gd.lda, ldb = gd.ldb, ldc = gd.ldc;
  const TileOrigin org = tile_origin(tile, gd.first_tile, N);
  const int m0 = org.m0, n0 = org.n0;

  const uint32_t sa = uint32_t(__cvta_generic_to_shared(smem));
  const uint32_t sb = sa + kStages * kABytes;
  const uint32_t a_lane = AFrag<TA>::lane_off(lane, wm), b_lane = BFrag<TB>::lane_off(lane, wn);

  float acc[4][4][4];
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

  const int ktiles = k_slices(K);
  // Prologue: slices 0 .. kStages-2 (one commit group each, empty past the end).
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) {
      load_slice<!TA>(sa + s * kABytes, a, lda, M, K, m0, s * kBK, tid);
      load_slice<TB>(sb + s * kBBytes, b, ldb, N, K, n0, s * kBK, tid);
    }
    cp_commit();
  }
  int rd = 0, wr = kStages - 1;   // stage read this iteration, stage loaded this iteration
  for (int kt = 0; kt < ktiles; ++kt) {
    // Groups committed so far: kStages - 1 + kt; slice kt is complete once at most
    // kStages - 2 are pending. The barrier makes every thread's copies visible and ensures
    // that all warps are done with stage wr (read in iteration kt - 1) before it is refilled.
    cp_wait<kStages - 2>();
    __syncthreads();
    const int nk = kt + kStages - 1;
    if (nk < ktiles) {
      load_slice<!TA>(sa + wr * kABytes, a, lda, M, K, m0, nk * kBK, tid);
      load_slice<TB>(sb + wr * kBBytes, b, ldb, N, K, n0, nk * kBK, tid);
    }
    cp_commit();

    const uint32_t as = sa + rd * kABytes + a_lane, bs = sb + rd * kBBytes + b_lane;
#pragma unroll
    for (int ks = 0; ks < kBK / 16; ++ks) {
      uint32_t af[4][4];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        const uint32_t p = as + ks * AFrag<TA>::kKs + mt * AFrag<TA>::kMt;
        if constexpr (AFrag<TA>::kTrans) ldsm4t(af[mt], p);
        else ldsm4(af[mt], p);
      }
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t bf[4];   // {b0, b1} of n-tile 2np, then of n-tile 2np + 1
        const uint32_t p = bs + ks * BFrag<TB>::kKs + np * BFrag<TB>::kNp;
        if constexpr (BFrag<TB>::kTrans) ldsm4t(bf, p);
        else ldsm4(bf, p);
#pragma unroll
        for (int mt = 0; mt < 4; ++mt) {
          mma_bf16(acc[mt][2 * np], af[mt], bf[0], bf[1]);
          mma_bf16(acc[mt][2 * np + 1], af[mt], bf[2], bf[3]);
        }
      }
    }
    rd = next_stage(rd);
    wr = next_stage(wr);
  }
  cp_wait<0>();   // only empty groups can be pending here; leave none behind

  // Epilogue: acc[mt][nt][2h], [2h + 1] are c at row m0 + acc_row, columns n0 + acc_col and
  // + 1. N is even, so col < N implies col + 1 < N, and c + row*ldc + col is 8-byte aligned
  // (c and ldc checked on the host).
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m0 + acc_row(wm, mt, lane, h);
      if (row >= M) continue;
      float* crow = c + int64_t(row) * ldc;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int col = n0 + acc_col(wn, nt, lane);
        if (col >= N) continue;
        gemm_io::store_pair(crow, col, acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1], alpha, beta);
      }
    }
#else
  __trap();   // never launched below sm_80 (the build targets sm_90)
#endif
}

template <bool TA, bool TB>
void launch(const GroupTile* table, int count, int64_t tiles, float alpha, float beta) {
  constexpr int bytes = smem_bytes<TA, TB>();
  static bool configured = false;   // once per instantiation (one device per process)
  if (!configured) {
    DS_CUDA_CHECK(cudaFuncSetAttribute(grouped_bf16_gemm_kernel<TA, TB>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    configured = true;
  }
  grouped_bf16_gemm_kernel<TA, TB>
      <<<unsigned(tiles), kThreads, bytes, stream()>>>(table, count, alpha, beta);
  DS_CUDA_LAUNCHED();
}

constexpr int64_t kMaxDim = INT_MAX - 256;   // m0 + 127 etc. stay in int

bool aligned(const void* p, uintptr_t n) { return (reinterpret_cast<uintptr_t>(p) & (n - 1)) == 0; }

}  // namespace

bool grouped_bf16_kernel_fits(const GemmDesc* d, int count, bool ta, bool tb) {
  int64_t tiles = 0;
  for (int i = 0; i < count; ++i) {
    const GemmDesc& x = d[i];
    if (x.M <= 0 || x.N <= 0 || x.K <= 0 || x.M > kMaxDim || x.N > kMaxDim || x.K > kMaxDim)
      return false;
    const int64_t contiguous_a = ta ? x.M : x.K, contiguous_b = tb ? x.K : x.N;
    if (contiguous_a % 8 != 0 || contiguous_b % 8 != 0 || x.N % 2 != 0) return false;
    if (!aligned(x.a, 16) || !aligned(x.b, 16) || !aligned(x.c, 8)) return false;
    tiles += tile_count(x.M, x.N);
    if (tiles > INT_MAX) return false;
  }
  return true;
}

void grouped_bf16_kernel(const GemmDesc* d, int count, bool ta, bool tb, float alpha,
                         float beta, bool wgmma) {
  if (count <= 0) return;
  // Groups with the longest K first: blocks start roughly in blockIdx order, so the longest
  // tiles (the weight gradients of the busiest experts) do not form the tail of the grid.
  std::vector<int> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return d[i].K > d[j].K; });
  std::vector<GroupTile> table(static_cast<size_t>(count));
  int64_t tiles = 0;
  for (int i = 0; i < count; ++i) {
    const GemmDesc& x = d[order[size_t(i)]];
    GroupTile& e = table[size_t(i)];
    e.a = static_cast<const uint16_t*>(x.a);
    e.b = static_cast<const uint16_t*>(x.b);
    e.c = static_cast<float*>(x.c);
    e.M = int(x.M);
    e.N = int(x.N);
    e.K = int(x.K);
    e.lda = int(ta ? x.M : x.K);
    e.ldb = int(tb ? x.K : x.N);
    e.ldc = int(x.N);
    e.first_tile = int(tiles);
    e.pad = 0;
    tiles += tile_count(x.M, x.N);
  }
  // One copy of the table (staged from pageable memory by the runtime); the stream-ordered
  // free at the end of the scope runs after the kernel.
  const PoolBuffer buf(table.size() * sizeof(GroupTile));
  upload_table(table, buf);
  const GroupTile* dtable = buf.as<GroupTile>();
  if (wgmma) {
    grouped_bf16_wgmma_launch(dtable, count, tiles, ta, tb, alpha, beta);
    return;
  }
  if (!ta && tb) launch<false, true>(dtable, count, tiles, alpha, beta);
  else if (!ta && !tb) launch<false, false>(dtable, count, tiles, alpha, beta);
  else if (ta && !tb) launch<true, false>(dtable, count, tiles, alpha, beta);
  else launch<true, true>(dtable, count, tiles, alpha, beta);
}

}  // namespace ds::cuda
