// Hopper FP8 GEMM (see sm90_fp8_gemm.cuh). Block: 256 threads = 2 warpgroups, a 128x128 tile
// of c, warpgroup w owning rows 64w..64w+63 (wgmma m64n128k32, 64 FP32 partial sums and 64
// accumulators per thread). Per 128-wide K block (= one scale block):
//   * all threads cp.async the A (128 x 128 B) and B (128 x 128 B) tiles of a future block into
//     a 4-stage ring, rows beyond M/N and K beyond K zero-filled (src-size 0);
//   * shared layout = wgmma's K-major 128-byte swizzle: row r's 16-byte chunk c sits at
//     r*128 + ((c ^ (r % 8)) * 16) in a 1024-byte-aligned tile, so a descriptor with
//     SBO = 1024 (8 rows) covers the tile and each k32 step just advances the start address
//     by 32 bytes (the hardware applies the XOR on the address bits);
//   * each warpgroup issues 4 wgmma (the first with scale-d = 0, which restarts the partial
//     sums), waits, and promotes: acc += partial * (a_scale * b_scale) (per column for b
//     grouped 1x128).
// Writes made by cp.async are generic-proxy writes; wgmma reads through the async proxy, hence
// fence.proxy.async before the barrier that publishes a stage.
// The kernel body exists only in the sm_90a build (__CUDA_ARCH_FEAT_SM90_ALL); a probe
// kernel tells the host which build the driver loaded.
// Measured (H200, M = 4096, DeepSeek-V3 projection shapes, bench/gpu/bench_gemm.cpp): 210-440
// TFLOP/s against cuBLAS BF16's 490-780; nmse vs the FP32 GEMM of the dequantised operands
// ~1.2e-8 (the FP8 tensor-core accumulation). The 128x128 tile moves 32 KB per 4 MFLOP, more
// than L2 feeds at the FP8 rate: larger tiles (TMA multicast across a cluster, BN 192/256 with
// setmaxnreg) and overlapping the promotion with the next block's wgmma are the next steps.
// Main loop (template parameter kOverlap, chosen per process by set_fp8_gemm_overlap; on by
// default, DS_FP8_GEMM=wgmma turns it off): without it each K block's wgmma are waited for
// before its promotion; with kOverlap the block's
// partial sums alternate between two register sets, so that block kb - 1 is promoted while
// block kb's wgmma run (wait_group 1), and the ring prefetches 2 blocks ahead instead of 3
// (the stage of block kb - 2 is free once every thread has waited for it).
// Grouped modes (template parameter Mode; the plain instantiation compiles to the same SASS as
// before they existed): an m-grouped block loads its b from a per-128-row-tile table (every
// tile lies in one group); a k-grouped block runs the K blocks [kb0, kb1) of group blockIdx.y
// of a table of the non-empty groups (rows keep the stride Ktot, scale column = global K
// block) and adds its sums into the group's c. Both fit in registers (the plain kernel uses
// ~180 of 255).
// reference: PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate" (matrix
// descriptor, swizzle modes, register fragments of D); DeepGEMM's FP32 promotion.
#include <atomic>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/fp8_ksplit.hpp"
#include "kernels/fp8_ksplit_reduce.cuh"   // ksplit_reduce_kernel
#include "kernels/mma_sm80.cuh"
#include "kernels/multi_tensor_table.cuh"
#include "kernels/sm90_fp8_gemm.cuh"
#include "kernels/sm90_wgmma.cuh"

namespace ds::cuda {

namespace {

constexpr int kBM = 128, kBN = 128, kBK = 128, kStages = 4, kThreads = 256;
// The m-grouped mode gives each tile one expert's b: the offsets are multiples of 128 (the
// FP8 block, checked by the launcher as % kBM), so a tile never straddles two groups only
// while the tile has 128 rows.
static_assert(kBM == 128, "m-grouped tiles assume 128-row groups");
constexpr int kTileBytes = kBM * kBK;                       // A or B tile of one stage
constexpr int kSmemBytes = kStages * 2 * kTileBytes + 1024;  // + room to align to 1024

enum class Mode { plain, m_grouped, k_grouped };

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ float scale_at(const Fp8Operand& o, int64_t row, int64_t kb,
                                          int64_t sc) {
  return o.rows_per_scale == 0 ? o.scales[0] : o.scales[(row / o.rows_per_scale) * sc + kb];
}

__device__ __forceinline__ void tile_of(int64_t id, int64_t tiles_m, int64_t tiles_n,
                                        int64_t* tm, int64_t* tn) {
  constexpr int64_t kGroup = 8;   // 8 tile rows sweep the tile columns together (L2 reuse)
  const int64_t width = kGroup * tiles_n, group = id / width, first = group * kGroup;
  const int64_t rows = tiles_m - first < kGroup ? tiles_m - first : kGroup;
  *tm = first + (id % width) % rows;
  *tn = (id % width) / rows;
}

using ptx::cp16;        // cp.async 16 bytes, zero fill when the predicate is false
using ptx::cp_commit;
using ptx::cp_wait;

// 128 rows x 128 K-bytes of codes (rows, K) from (r0, k0) into the swizzled tile at `dst`.
__device__ __forceinline__ void load_tile(uint32_t dst, const uint8_t* codes, int64_t rows,
                                          int64_t K, int64_t r0, int64_t k0) {
#pragma unroll
  for (int t = 0; t < 4; ++t) {
    const int e = threadIdx.x + kThreads * t, r = e >> 3, ch = e & 7;
    const bool ok = r0 + r < rows && k0 + ch * 16 < K;
    const uint8_t* src = ok ? codes + (r0 + r) * K + k0 + ch * 16 : codes;
    cp16(dst + r * 128 + ((ch ^ (r & 7)) << 4), src, ok);
  }
}

using sm90::smem_desc;   // K-major, 128B swizzle (sm90_wgmma.cuh)

__device__ __forceinline__ void fence_operands(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d (64 x 128 per warpgroup) = A (64 x 32) * B (128 x 32)^T + (scale_d ? d : 0).
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[64], uint64_t da, uint64_t db,
                                                 int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
        "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
        "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
        "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),
        "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),
        "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),
        "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),
        "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d));
}

// acc += part * (a_scale * b_scale) for K block kb. Fragment i: column (i / 4) * 8 + 2t +
// (i & 1), row g + 8 * ((i / 2) & 1); rows[h] this thread's two rows (clamped).
template <bool kBPerColumn>
__device__ __forceinline__ void promote(float (&acc)[64], const float (&part)[64],
                                        const Fp8Operand& a, const Fp8Operand& b,
                                        const int64_t (&rows)[2], int64_t n0, int64_t N, int t,
                                        int64_t kb, int64_t sc) {
  const float sa0 = scale_at(a, rows[0], kb, sc), sa1 = scale_at(a, rows[1], kb, sc);
  if constexpr (!kBPerColumn) {
    const float sb = scale_at(b, n0, kb, sc);   // one b scale per 128-row block of b
    const float s0 = sa0 * sb, s1 = sa1 * sb;
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = fmaf(part[i], (i & 2) ? s1 : s0, acc[i]);
  } else {   // b 1x128 (rows_per_scale 1, launch): scale (n, kb) without scale_at's division
    const float* bs = b.scales + kb;
#pragma unroll
    for (int j = 0; j < 16; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t n = n0 + j * 8 + 2 * t + e;
        const float sb = bs[(n < N ? n : N - 1) * sc];
        acc[4 * j + e] = fmaf(part[4 * j + e] * sa0, sb, acc[4 * j + e]);
        acc[4 * j + 2 + e] = fmaf(part[4 * j + 2 + e] * sa1, sb, acc[4 * j + 2 + e]);
      }
  }
}

// The four k32 wgmma of one 128-wide K block from the stage at `sa` into part (reset first),
// committed as one group; not waited for.
__device__ __forceinline__ void issue_block(float (&part)[64], uint32_t sa, int wg) {
  const uint64_t da = smem_desc(sa + uint32_t(wg) * 64 * 128);
  const uint64_t db = smem_desc(sa + kTileBytes);
  fence_operands(part);
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
  for (int ks = 0; ks < kBK / 32; ++ks)
    wgmma_m64n128k32(part, da + uint64_t(2 * ks), db + uint64_t(2 * ks), ks);   // +32 B
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// tile_b (m-grouped): (M/128) b operands, one per row tile; kgroups (k-grouped): the
// non-empty groups, one per blockIdx.y, K = Ktot, or null and the one group in `one`. Unused
// otherwise.
// kOverlap: the promotion of K block kb - 1 runs while block kb's wgmma are in flight (two
// sets of partial sums, prefetch distance 2 instead of 3); otherwise each block's wgmma are
// waited for before its promotion.
template <Mode kMode, bool kBPerColumn, bool kOverlap>
__global__ void __launch_bounds__(kThreads, 1)
    fp8_gemm_sm90_kernel(Fp8Operand a, Fp8Operand b, float* __restrict__ c, int64_t M, int64_t N,
                         int64_t K, const Fp8Operand* __restrict__ tile_b,
                         const Fp8KGroup* __restrict__ kgroups, Fp8KGroup one) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = (uint32_t(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  int64_t tm, tn;
  tile_of(blockIdx.x, (M + kBM - 1) / kBM, (N + kBN - 1) / kBN, &tm, &tn);
  const int64_t m0 = tm * kBM, n0 = tn * kBN;
  const int64_t kblocks = (K + kBK - 1) / kBK;
  // This block's K blocks: [kb_first, kb_first + nkb).
  int64_t kb_first = 0, nkb = kblocks;
  if constexpr (kMode == Mode::m_grouped) b = tile_b[tm];
  if constexpr (kMode == Mode::k_grouped) {
    const Fp8KGroup grp = kgroups ? kgroups[blockIdx.y] : one;
    c = grp.c;
    kb_first = grp.kb0;
    nkb = grp.kb1 - grp.kb0;
  }
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;

  // This thread's rows (fragment rows g and g + 8 of its warp's 16), clamped for scale reads.
  int64_t rows[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t r = m0 + wg * 64 + warp * 16 + g + 8 * h;
    rows[h] = r < M ? r : M - 1;
  }

  auto stage_a = [&](int s) { return base + uint32_t(s) * 2 * kTileBytes; };
  auto load_block = [&](int s, int64_t it) {   // block kb_first + it into stage s
    load_tile(stage_a(s), a.codes, M, K, m0, (kb_first + it) * kBK);
    load_tile(stage_a(s) + kTileBytes, b.codes, N, K, n0, (kb_first + it) * kBK);
  };
  const int64_t sc = kblocks;   // scale columns
  float acc[64];
  if constexpr (!kOverlap) {
    float part[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = part[i] = 0.0f;
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < nkb) load_block(s, s);
      cp_commit();
    }
    for (int64_t it = 0; it < nkb; ++it) {
      cp_wait<kStages - 2>();   // this thread's copies of block it have landed
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncthreads();                // everyone's have; the slot refilled below is free
      const int64_t next = it + kStages - 1;
      if (next < nkb) load_block(int(next % kStages), next);
      cp_commit();
      issue_block(part, stage_a(int(it % kStages)), wg);
      asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
      fence_operands(part);
      promote<kBPerColumn>(acc, part, a, b, rows, n0, N, t, kb_first + it, sc);
    }
  } else {
    // head(it): wait for block it's copies and publish them; refill the stage of block it - 2
    // (its wgmma were waited for by every thread before this barrier) with block it + 2.
    // body(it): issue block it into one register set, wait for block it - 1's group only and
    // promote it while block it runs. ptxas keeps a wgmma group in flight only within the
    // loop body (a group live across the back edge, with the promotion's FFMAs reading
    // accumulators, makes it serialise every wgmma: warning C7514), hence pairs of blocks,
    // rotated so that a barrier follows each promotion, and a full wait at the end of a pair.
    float part0[64], part1[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = part0[i] = part1[i] = 0.0f;
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      if (s < nkb) load_block(s, s);
      cp_commit();
    }
    auto head = [&](int64_t it) {
      cp_wait<1>();   // block it + 1 may still be in flight
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncthreads();
      if (it + 2 < nkb) load_block(int((it + 2) % kStages), it + 2);
      cp_commit();
    };
    auto body = [&](int64_t it, float (&cur)[64], float (&prev)[64]) {
      issue_block(cur, stage_a(int(it % kStages)), wg);
      fence_operands(cur);   // in flight: not to be touched before the wait that covers it
      asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
      fence_operands(prev);
      if (it > 0) promote<kBPerColumn>(acc, prev, a, b, rows, n0, N, t, kb_first + it - 1, sc);
    };
    if (nkb > 0) head(0);
    int64_t it = 0;
    for (; it + 1 < nkb; it += 2) {
      body(it, part0, part1);
      head(it + 1);
      body(it + 1, part1, part0);
      if (it + 2 < nkb) head(it + 2);
      asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    }
    if (it < nkb) body(it, part0, part1);
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    if (nkb > 0) {   // the last block: part0 when nkb is odd, else part1
      if (nkb & 1) {
        fence_operands(part0);
        promote<kBPerColumn>(acc, part0, a, b, rows, n0, N, t, kb_first + nkb - 1, sc);
      } else {
        fence_operands(part1);
        promote<kBPerColumn>(acc, part1, a, b, rows, n0, N, t, kb_first + nkb - 1, sc);
      }
    }
  }
  cp_wait<0>();

#pragma unroll
  for (int i = 0; i < 64; ++i) {
    const int64_t r = m0 + wg * 64 + warp * 16 + g + 8 * ((i >> 1) & 1);
    const int64_t n = n0 + (i >> 2) * 8 + 2 * t + (i & 1);
    if (r < M && n < N) {
      if constexpr (kMode == Mode::k_grouped) c[r * N + n] += acc[i];
      else c[r * N + n] = acc[i];
    }
  }
#endif
}

// set_fp8_gemm_overlap; on by default: on the H200 (commit c135dd4) it passed its tests and ran
// 7 of bench_gemm's 8 shapes 1-9% faster (one 4% slower)
std::atomic<bool> g_overlap{true};
// set_fp8_ksplit: off by default until it has run on a GPU; the split launches so far
std::atomic<bool> g_ksplit{false};
std::atomic<int64_t> g_ksplit_launches{0};

template <Mode kMode, bool kBPerColumn, bool kOverlap>
void launch_mode(dim3 grid, const Fp8Operand& a, const Fp8Operand& b, float* c, int64_t M,
                 int64_t N, int64_t K, const Fp8Operand* tile_b, const Fp8KGroup* kgroups,
                 const Fp8KGroup& one) {
  static const bool attr = [] {
    DS_CUDA_CHECK(cudaFuncSetAttribute(fp8_gemm_sm90_kernel<kMode, kBPerColumn, kOverlap>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
    return true;
  }();
  (void)attr;
  fp8_gemm_sm90_kernel<kMode, kBPerColumn, kOverlap><<<grid, kThreads, kSmemBytes, stream()>>>(
      a, b, c, M, N, K, tile_b, kgroups, one);
  DS_CUDA_LAUNCHED();
}

// b's grouping picks the promotion (per column for 1x128, per 128-row block otherwise);
// set_fp8_gemm_overlap the main loop.
template <Mode kMode>
void launch(int b_rows_per_scale, dim3 grid, const Fp8Operand& a, const Fp8Operand& b, float* c,
            int64_t M, int64_t N, int64_t K, const Fp8Operand* tile_b,
            const Fp8KGroup* kgroups, const Fp8KGroup& one = {}) {
  const bool col = b_rows_per_scale == 1;
  if (g_overlap.load(std::memory_order_relaxed)) {
    if (col) launch_mode<kMode, true, true>(grid, a, b, c, M, N, K, tile_b, kgroups, one);
    else launch_mode<kMode, false, true>(grid, a, b, c, M, N, K, tile_b, kgroups, one);
  } else {
    if (col) launch_mode<kMode, true, false>(grid, a, b, c, M, N, K, tile_b, kgroups, one);
    else launch_mode<kMode, false, false>(grid, a, b, c, M, N, K, tile_b, kgroups, one);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

[[noreturn]] void unsupported(const char* what) {
  raise_cuda(what, cudaErrorInvalidValue, __FILE__, __LINE__);
}

__global__ void sm90a_probe_kernel(int* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *out = 1;
#else
  *out = 0;
#endif
}

}  // namespace

bool sm90a_loaded() {   // sm90_wgmma.cuh
  static const bool loaded = [] {
    if (sm_major() != 9) return false;
    int* d = nullptr;
    int h = 0;
    if (cudaMalloc(&d, sizeof(int)) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    sm90a_probe_kernel<<<1, 1, 0, stream()>>>(d);
    const bool ok = cudaGetLastError() == cudaSuccess &&
                    cudaMemcpyAsync(&h, d, sizeof(int), cudaMemcpyDeviceToHost, stream()) ==
                        cudaSuccess &&
                    cudaStreamSynchronize(stream()) == cudaSuccess;
    cudaFree(d);
    return ok && h == 1;
  }();
  return loaded;
}

void set_fp8_gemm_overlap(bool on) { g_overlap.store(on); }
bool fp8_gemm_overlap() { return g_overlap.load(); }
void set_fp8_ksplit(bool on) { g_ksplit.store(on); }
bool fp8_ksplit() { return g_ksplit.load(); }
int64_t fp8_ksplit_launches() { return g_ksplit_launches.load(); }

bool fp8_gemm_nt_sm90_supported(const Fp8Operand& a, const Fp8Operand& b, int64_t M, int64_t N,
                                int64_t K) {
  (void)M;
  (void)N;
  return K > 0 && K % 16 == 0 && aligned16(a.codes) && aligned16(b.codes) && sm90a_loaded();
}

void fp8_gemm_nt_sm90(const Fp8Operand& a, const Fp8Operand& b, float* c, int64_t M, int64_t N,
                      int64_t K) {
  if (M == 0 || N == 0) return;
  if (!fp8_gemm_nt_sm90_supported(a, b, M, N, K))
    unsupported("fp8_gemm_nt_sm90: needs an sm_90a device, K % 16 == 0 and 16-byte aligned codes");
  const dim3 grid(unsigned(cdiv(M, kBM) * cdiv(N, kBN)));
  launch<Mode::plain>(b.rows_per_scale, grid, a, b, c, M, N, K, nullptr, nullptr);
}

bool fp8_gemm_nt_grouped_sm90_supported(const Fp8Operand& a, const Fp8Operand* b, int groups,
                                        int64_t N, int64_t K) {
  for (int g = 0; g < groups; ++g)
    if (!aligned16(b[g].codes)) return false;
  return fp8_gemm_nt_sm90_supported(a, a, 0, N, K);   // K, a's alignment and the device
}

void fp8_gemm_nt_grouped_sm90(const Fp8Operand& a, const Fp8Operand* b, const int64_t* offsets,
                              int groups, float* c, int64_t N, int64_t K) {
  const std::vector<Fp8Operand> tab = fp8_tile_operands(b, offsets, groups);
  const int64_t M = offsets[groups];
  if (M == 0 || N == 0) return;
  if (!fp8_gemm_nt_grouped_sm90_supported(a, b, groups, N, K))
    unsupported("fp8_gemm_nt_grouped_sm90: needs an sm_90a device, K % 16 == 0 and 16-byte "
                "aligned codes");
  // The stream-ordered free at the end of the scope runs after the kernel.
  const PoolBuffer buf(tab.size() * sizeof(Fp8Operand));
  upload_table(tab, buf);
  const dim3 grid(unsigned(cdiv(M, kBM) * cdiv(N, kBN)));
  launch<Mode::m_grouped>(b[0].rows_per_scale, grid, a, Fp8Operand{}, c, M, N, K,
                          buf.as<Fp8Operand>(), nullptr);
}

bool fp8_gemm_nt_kgrouped_sm90_supported(const Fp8Operand& a, const Fp8Operand& b,
                                         const int64_t* offsets, int groups, int64_t M,
                                         int64_t N) {
  return fp8_gemm_nt_sm90_supported(a, b, M, N, offsets[groups]);
}

void fp8_gemm_nt_kgrouped_sm90(const Fp8Operand& a, const Fp8Operand& b, const int64_t* offsets,
                               int groups, float* const* c, int64_t M, int64_t N) {
  const std::vector<Fp8KGroup> tab = fp8_kgroups(c, offsets, groups);
  if (M == 0 || N == 0 || tab.empty()) return;
  if (!fp8_gemm_nt_kgrouped_sm90_supported(a, b, offsets, groups, M, N))
    unsupported("fp8_gemm_nt_kgrouped_sm90: needs an sm_90a device and 16-byte aligned codes");
  const int64_t tiles = cdiv(M, kBM) * cdiv(N, kBN);
  const int s = tab.size() == 1 && g_ksplit.load(std::memory_order_relaxed)
                    ? ksplit::splits(tiles, tab[0].kb1 - tab[0].kb0, sm_count())
                    : 1;
  if (s > 1) {   // one group over few tiles (a Wgrad): its K blocks split, fp8_ksplit.hpp
    const int64_t n = M * N;
    const PoolBuffer ws(size_t(s) * size_t(n) * sizeof(float));
    memset0(ws.as<void>(), size_t(s) * size_t(n) * sizeof(float));
    std::vector<Fp8KGroup> parts;   // slice i: part i's sums (none empty: splits <= nkb / 4)
    for (int i = 0; i < s; ++i) {
      const ksplit::Part p = ksplit::part(tab[0].kb0, tab[0].kb1, s, i);
      parts.push_back({ws.as<float>() + int64_t(i) * n, p.kb0, p.kb1});
    }
    const PoolBuffer buf(parts.size() * sizeof(Fp8KGroup));
    upload_table(parts, buf);
    launch<Mode::k_grouped>(b.rows_per_scale, dim3(unsigned(tiles), unsigned(parts.size())), a,
                            b, nullptr, M, N, offsets[groups], nullptr, buf.as<Fp8KGroup>());
    const unsigned blocks = grid_for(n, 256, int64_t(sm_count()) * 8);
    ksplit::ksplit_reduce_kernel<<<blocks, 256, 0, stream()>>>(ws.as<float>(), s, n, tab[0].c);
    DS_CUDA_LAUNCHED();
    g_ksplit_launches.fetch_add(1);
    return;
  }
  const dim3 grid(unsigned(tiles), unsigned(tab.size()));
  if (tab.size() == 1) {   // the group by value: no table upload (an FP8 Linear's Wgrad)
    launch<Mode::k_grouped>(b.rows_per_scale, grid, a, b, nullptr, M, N, offsets[groups],
                            nullptr, nullptr, tab[0]);
    return;
  }
  const PoolBuffer buf(tab.size() * sizeof(Fp8KGroup));
  upload_table(tab, buf);
  launch<Mode::k_grouped>(b.rows_per_scale, grid, a, b, nullptr, M, N, offsets[groups], nullptr,
                          buf.as<Fp8KGroup>());
}

}  // namespace ds::cuda
