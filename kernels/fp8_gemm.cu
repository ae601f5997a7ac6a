// Portable FP8 GEMM (see fp8_gemm.cuh): one 128x128 tile of c per block of 8 warps (4 along M
// x 2 along N, 32x64 each); per 128-wide K block the operands are staged in shared memory
// (rows padded to 144 bytes so that the fragment reads hit 32 distinct banks), four
// mma.sync.m16n8k32 E4M3 steps give the block's FP32 partial sums, which are then promoted:
// acc = acc + (partial * a_scale) * b_scale, the reference's order of roundings. Rows, columns
// and K beyond the matrix are zero-filled / skipped. Only the summation order differs from
// the CPU reference (on the H200 mma.sync's FP8 sums matched the FP32 GEMM of the dequantised
// operands to nmse ~1e-12; wgmma's, with fewer carried bits as the DeepSeek-V3 report notes,
// to ~1e-8 — the 128-wide promotion bounds that error).
// Speed (H200, M = 4096): ~55-99 TFLOP/s, a quarter of the wgmma kernel; single-buffered, so
// meant for the shapes the Hopper kernel does not take.
// Grouped modes (template parameter Mode; the plain instantiation compiles to the same SASS as
// before they existed): m-grouped blocks take their b from a per-128-row-tile table (every
// tile lies in one group, offsets being multiples of 128); k-grouped blocks run the K blocks
// [kb0, kb1) of group blockIdx.y of a table of the non-empty groups, over operands whose row
// stride is Ktot (scale column = global K block), and add their sums into the group's c.
#include <algorithm>
#include <numeric>

#include "kernels/common.cuh"
#include "kernels/fp8_gemm.cuh"
#include "kernels/multi_tensor_table.cuh"

namespace ds::cuda {

namespace {

constexpr int kBM = 128, kBN = 128, kBK = 128, kPitch = kBK + 16;
// The m-grouped mode gives each tile one expert's b: the offsets are multiples of 128 (the
// FP8 block, checked by the launcher as % kBM), so a tile never straddles two groups only
// while the tile has 128 rows.
static_assert(kBM == 128, "m-grouped tiles assume 128-row groups");
constexpr int kThreads = 256;

enum class Mode { plain, m_grouped, k_grouped };

__device__ __forceinline__ float scale_at(const Fp8Operand& o, int64_t row, int64_t kb,
                                          int64_t sc) {
  return o.rows_per_scale == 0 ? o.scales[0] : o.scales[(row / o.rows_per_scale) * sc + kb];
}

// Tile order: groups of 8 tile rows sweep all tile columns, so that concurrently running
// blocks share operand rows in L2.
__device__ __forceinline__ void tile_of(int64_t id, int64_t tiles_m, int64_t tiles_n,
                                        int64_t* tm, int64_t* tn) {
  constexpr int64_t kGroup = 8;
  const int64_t width = kGroup * tiles_n, group = id / width, first = group * kGroup;
  const int64_t rows = tiles_m - first < kGroup ? tiles_m - first : kGroup;
  *tm = first + (id % width) % rows;
  *tn = (id % width) / rows;
}

// Stage rows [r0, r0 + 128) x K columns [k0, k0 + 128) of codes (rows, K) into s (128 x kPitch).
template <bool kVec>
__device__ __forceinline__ void stage(uint8_t* s, const uint8_t* __restrict__ codes,
                                      int64_t rows, int64_t K, int64_t r0, int64_t k0) {
  if constexpr (kVec) {
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int e = threadIdx.x + kThreads * t, r = e >> 3, ch = e & 7;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r0 + r < rows && k0 + ch * 16 < K)
        v = *reinterpret_cast<const uint4*>(codes + (r0 + r) * K + k0 + ch * 16);
      *reinterpret_cast<uint4*>(s + r * kPitch + ch * 16) = v;
    }
  } else {
    for (int e = threadIdx.x; e < kBM * kBK; e += kThreads) {
      const int r = e >> 7, k = e & 127;
      s[r * kPitch + k] = (r0 + r < rows && k0 + k < K) ? codes[(r0 + r) * K + k0 + k] : 0;
    }
  }
}

__device__ __forceinline__ void mma_e4m3(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();   // never launched below sm_89 (the build targets sm_90)
#endif
}

// tile_b (m-grouped): (M/128) b operands, one per row tile; kgroups (k-grouped): the
// non-empty groups, one per blockIdx.y, K = Ktot, or null and the one group in `one` (an FP8
// Linear's Wgrad: no table to upload). Unused otherwise.
template <Mode kMode, bool kVec>
__global__ void __launch_bounds__(kThreads)
    fp8_gemm_fallback_kernel(Fp8Operand a, Fp8Operand b, float* __restrict__ c, int64_t M,
                             int64_t N, int64_t K, const Fp8Operand* __restrict__ tile_b,
                             const Fp8KGroup* __restrict__ kgroups, Fp8KGroup one) {
  constexpr bool kGrouped = kMode != Mode::plain;
  __shared__ __align__(16) uint8_t sa[kBM * kPitch];
  __shared__ __align__(16) uint8_t sb[kBN * kPitch];
  // Grouped modes only. The plain kernel holds its 20 scale offsets in registers and takes
  // all 255; the grouped ones keep the block's group in shared memory, read where used
  // (group_b: m-grouped b; group_k: k-grouped c and K blocks), and stage each K block's scales
  // of the tile's 128 rows of a and of b there (one per thread). That leaves k-grouped
  // spill-free; m-grouped (b's codes reloaded per K block) still spills a few words, 1 store
  // and <= 7 L1-resident loads per K block against ~1400 instructions.
  __shared__ Fp8Operand group_b;
  __shared__ Fp8KGroup group_k;
  __shared__ float tile_s[kBM + kBN];   // a rows, then b rows
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp & 3, wn = warp >> 2;   // warp tile rows wm*32, columns wn*64
  int64_t tm, tn;
  tile_of(blockIdx.x, (M + kBM - 1) / kBM, (N + kBN - 1) / kBN, &tm, &tn);
  const int64_t m0 = tm * kBM, n0 = tn * kBN;
  const int64_t kblocks = (K + kBK - 1) / kBK;
  if constexpr (kGrouped) {
    if (threadIdx.x == 0) {
      if constexpr (kMode == Mode::m_grouped) group_b = tile_b[tm];
      else group_k = kgroups ? kgroups[blockIdx.y] : one;
    }
    __syncthreads();
  }
  const auto b_codes = [&]() -> const uint8_t* {
    if constexpr (kMode == Mode::m_grouped) return group_b.codes;
    else return b.codes;
  };
  const auto kb_end = [&]() -> int64_t {
    if constexpr (kMode == Mode::k_grouped) return group_k.kb1;
    else return kblocks;
  };
  int64_t kb_first = 0;
  if constexpr (kMode == Mode::k_grouped) kb_first = group_k.kb0;
  // Grouped: thread i stages the scale of row i of the a tile (i < 128) or of row i - 128 of
  // the b tile: own_scale[kb * own_step] (step 0 for a per-tensor scale).
  const float* own_scale = nullptr;
  int own_step = 0;
  if constexpr (kGrouped) {
    const bool is_a = threadIdx.x < kBM;
    const int rps = is_a ? a.rows_per_scale : b.rows_per_scale;
    const int64_t r = is_a ? m0 + threadIdx.x : n0 + threadIdx.x - kBM;
    const int64_t last = (is_a ? M : N) - 1;
    own_scale = is_a ? a.scales : kMode == Mode::m_grouped ? group_b.scales : b.scales;
    if (rps != 0) own_scale += ((r < last ? r : last) / rps) * kblocks;
    own_step = rps != 0;
  }

  // Rows and columns this thread owns (clamped for the scale reads; stores are guarded).
  int64_t rows[2][2], cols[8][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = m0 + wm * 32 + mt * 16 + g + 8 * h;
      rows[mt][h] = r < M ? r : M - 1;
    }
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t n = n0 + wn * 64 + nt * 8 + 2 * t + h;
      cols[nt][h] = n < N ? n : N - 1;
    }

  float acc[2][8][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

  for (int64_t kb = kb_first; kb < kb_end(); ++kb) {
    __syncthreads();   // the previous block's fragments have been read
    stage<kVec>(sa, a.codes, M, K, m0, kb * kBK);
    stage<kVec>(sb, b_codes(), N, K, n0, kb * kBK);
    if constexpr (kGrouped) tile_s[threadIdx.x] = own_scale[kb * own_step];
    __syncthreads();

    float part[2][8][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) part[mt][nt][i] = 0.0f;

#pragma unroll
    for (int ks = 0; ks < kBK / 32; ++ks) {
      // A fragment (m16 x k32, row): {row g, k 4t..4t+3}, {row g+8, ...}, then k + 16.
      uint32_t af[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const uint8_t* p = sa + (wm * 32 + mt * 16 + g) * kPitch + ks * 32 + 4 * t;
        af[mt][0] = *reinterpret_cast<const uint32_t*>(p);
        af[mt][1] = *reinterpret_cast<const uint32_t*>(p + 8 * kPitch);
        af[mt][2] = *reinterpret_cast<const uint32_t*>(p + 16);
        af[mt][3] = *reinterpret_cast<const uint32_t*>(p + 8 * kPitch + 16);
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        // B fragment (k32 x n8, col): column n = g, k 4t..4t+3 and k + 16: b's row n.
        const uint8_t* p = sb + (wn * 64 + nt * 8 + g) * kPitch + ks * 32 + 4 * t;
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(p);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(p + 16);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) mma_e4m3(part[mt][nt], af[mt], b0, b1);
      }
    }

    // Promotion. Accumulator fragment: i = 0, 1 row g, columns 2t, 2t+1; i = 2, 3 row g + 8.
    const int64_t sca = (K + kBK - 1) / kBK;
    float s_a[2][2], s_b[8][2];
    if constexpr (!kGrouped) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) s_a[mt][h] = scale_at(a, rows[mt][h], kb, sca);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int h = 0; h < 2; ++h) s_b[nt][h] = scale_at(b, cols[nt][h], kb, sca);
    } else {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) s_a[mt][h] = tile_s[wm * 32 + mt * 16 + g + 8 * h];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int h = 0; h < 2; ++h) s_b[nt][h] = tile_s[kBM + wn * 64 + nt * 8 + 2 * t + h];
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          acc[mt][nt][i] = __fadd_rn(
              acc[mt][nt][i],
              __fmul_rn(__fmul_rn(part[mt][nt][i], s_a[mt][i >> 1]), s_b[nt][i & 1]));
  }

  if constexpr (kMode == Mode::k_grouped) c = group_k.c;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t r = m0 + wm * 32 + mt * 16 + g + 8 * (i >> 1);
        const int64_t n = n0 + wn * 64 + nt * 8 + 2 * t + (i & 1);
        if (r < M && n < N) {
          if constexpr (kMode == Mode::k_grouped) c[r * N + n] += acc[mt][nt][i];
          else c[r * N + n] = acc[mt][nt][i];
        }
      }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <Mode kMode>
void launch(bool vec, dim3 grid, const Fp8Operand& a, const Fp8Operand& b, float* c, int64_t M,
            int64_t N, int64_t K, const Fp8Operand* tile_b, const Fp8KGroup* kgroups,
            const Fp8KGroup& one = {}) {
  if (vec)
    fp8_gemm_fallback_kernel<kMode, true>
        <<<grid, kThreads, 0, stream()>>>(a, b, c, M, N, K, tile_b, kgroups, one);
  else
    fp8_gemm_fallback_kernel<kMode, false>
        <<<grid, kThreads, 0, stream()>>>(a, b, c, M, N, K, tile_b, kgroups, one);
  DS_CUDA_LAUNCHED();
}

[[noreturn]] void bad_offsets(const char* what) {
  raise_cuda(what, cudaErrorInvalidValue, __FILE__, __LINE__);
}

// partial_end (k-grouped): offsets equal to the last may end inside a 128 block.
void check_offsets(const int64_t* offsets, int groups, bool partial_end = false) {
  if (groups < 0 || offsets[0] != 0) bad_offsets("fp8 grouped GEMM: offsets[0] must be 0");
  for (int g = 0; g < groups; ++g)
    if (offsets[g + 1] < offsets[g] ||
        (offsets[g + 1] % kBM != 0 && !(partial_end && offsets[g + 1] == offsets[groups])))
      bad_offsets("fp8 grouped GEMM: offsets must be non-decreasing multiples of 128");
}

}  // namespace

void fp8_gemm_nt_fallback(const Fp8Operand& a, const Fp8Operand& b, float* c, int64_t M,
                          int64_t N, int64_t K) {
  if (M == 0 || N == 0) return;
  if (K == 0) {   // empty sums
    DS_CUDA_CHECK(cudaMemsetAsync(c, 0, size_t(M * N) * sizeof(float), stream()));
    return;
  }
  const int64_t tiles = cdiv(M, kBM) * cdiv(N, kBN);
  const bool vec = K % 16 == 0 && aligned16(a.codes) && aligned16(b.codes);
  launch<Mode::plain>(vec, dim3(unsigned(tiles)), a, b, c, M, N, K, nullptr, nullptr);
}

std::vector<Fp8Operand> fp8_tile_operands(const Fp8Operand* b, const int64_t* offsets,
                                          int groups) {
  check_offsets(offsets, groups);
  std::vector<Fp8Operand> tab(size_t(offsets[groups] / kBM));
  for (int g = 0; g < groups; ++g)
    for (int64_t t = offsets[g] / kBM; t < offsets[g + 1] / kBM; ++t) tab[size_t(t)] = b[g];
  return tab;
}

std::vector<Fp8KGroup> fp8_kgroups(float* const* c, const int64_t* offsets, int groups) {
  check_offsets(offsets, groups, true);
  std::vector<int> order(size_t(groups > 0 ? groups : 0));
  std::iota(order.begin(), order.end(), 0);
  const auto len = [&](int g) { return offsets[g + 1] - offsets[g]; };
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return len(x) > len(y); });
  std::vector<Fp8KGroup> tab;
  for (int g : order)
    if (len(g) > 0) tab.push_back({c[g], offsets[g] / kBK, cdiv(offsets[g + 1], kBK)});
  if (tab.size() > 65535) bad_offsets("fp8 k-grouped GEMM: more than 65535 non-empty groups");
  return tab;
}

void fp8_gemm_nt_grouped_fallback(const Fp8Operand& a, const Fp8Operand* b,
                                  const int64_t* offsets, int groups, float* c, int64_t N,
                                  int64_t K) {
  const std::vector<Fp8Operand> tab = fp8_tile_operands(b, offsets, groups);
  const int64_t M = offsets[groups];
  if (M == 0 || N == 0) return;
  if (K == 0) {   // empty sums
    DS_CUDA_CHECK(cudaMemsetAsync(c, 0, size_t(M * N) * sizeof(float), stream()));
    return;
  }
  bool vec = K % 16 == 0 && aligned16(a.codes);
  for (const Fp8Operand& o : tab) vec = vec && aligned16(o.codes);
  // The stream-ordered free at the end of the scope runs after the kernel.
  const PoolBuffer buf(tab.size() * sizeof(Fp8Operand));
  upload_table(tab, buf);
  const int64_t tiles = cdiv(M, kBM) * cdiv(N, kBN);
  const Fp8Operand b_grouping{nullptr, nullptr, b[0].rows_per_scale};   // the same for all
  launch<Mode::m_grouped>(vec, dim3(unsigned(tiles)), a, b_grouping, c, M, N, K,
                          buf.as<Fp8Operand>(), nullptr);
}

void fp8_gemm_nt_kgrouped_fallback(const Fp8Operand& a, const Fp8Operand& b,
                                   const int64_t* offsets, int groups, float* const* c,
                                   int64_t M, int64_t N) {
  const std::vector<Fp8KGroup> tab = fp8_kgroups(c, offsets, groups);
  if (M == 0 || N == 0 || tab.empty()) return;
  const int64_t Ktot = offsets[groups];   // the last K block may be partial
  const bool vec = Ktot % 16 == 0 && aligned16(a.codes) && aligned16(b.codes);
  const dim3 grid(unsigned(cdiv(M, kBM) * cdiv(N, kBN)), unsigned(tab.size()));
  if (tab.size() == 1) {   // the group by value: no table upload
    launch<Mode::k_grouped>(vec, grid, a, b, nullptr, M, N, Ktot, nullptr, nullptr, tab[0]);
    return;
  }
  const PoolBuffer buf(tab.size() * sizeof(Fp8KGroup));
  upload_table(tab, buf);
  launch<Mode::k_grouped>(vec, grid, a, b, nullptr, M, N, Ktot, nullptr, buf.as<Fp8KGroup>());
}

}  // namespace ds::cuda
