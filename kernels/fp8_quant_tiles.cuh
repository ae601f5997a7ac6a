// The E4M3 quantisers that read x in rows (1x128, the transposed 128x1) or in whole 128x128
// tiles (DS_FP8_QUANT=tiles, also for the many-matrix weight quantisation). Included by
// kernels/fp8_quant.cu, which launches them, and by the host emulation test
// tests/kernels/test_emu_fp8_quant.cpp, which runs these same kernels on a CPU against the
// reference. Plain CUDA C++ without inline PTX, so that the emulator (tests/kernels/
// cuda_emu.hpp) can run it; the arithmetic is fp8_quant_math.cuh's, and the rules that make it
// bit-identical to lib/ops/cpu/ref_fp8.cpp are listed at the top of fp8_quant.cu.
#pragma once
#include <cstdint>

#include "kernels/fp8_quant.cuh"
#include "kernels/fp8_quant_math.cuh"
#include "kernels/multi_tensor_index.hpp"

// Internal linkage: each including translation unit (the CUDA library, the emulation test,
// which links that library too) has its own copy.
namespace ds::cuda::fp8q {
namespace {

// 1x128: one warp per (row, 128-column block); lane l holds columns l, l+32, l+64, l+96.
__global__ void quant_row_kernel(QArgs p) {
  const int lane = threadIdx.x & 31;
  const int64_t groups = p.M * p.SC;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t g = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); g < groups;
       g += warps) {
    const int64_t i = g / p.SC, j0 = (g % p.SC) * kBlk;
    float v[4];
    uint32_t amax = 0;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int64_t j = j0 + lane + 32 * t;
      v[t] = j < p.K ? p.x[i * p.K + j] : 0.0f;
      amax = max(amax, abs_bits(v[t]));
    }
    amax = __reduce_max_sync(0xffffffffu, amax);
    const float s = scale_of(__uint_as_float(amax), p.ue8m0, p.act);
    if (lane == 0 && p.scales) p.scales[g] = s;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int64_t j = j0 + lane + 32 * t;
      if (j < p.K) emit(v[t], s, i * p.K + j, p.q, p.fake);
    }
  }
}

// fp8_quantize_transposed: a block (32, 8) per 128-row strip x 32 columns, thread (tx, ty)
// holding rows ty + 8r of column tx (the amax over the 128 rows of a column); the codes go
// through a shared tile [column][row] (rows padded to 132 bytes: the writes of 32 columns at
// one row hit 32 banks) and leave as contiguous rows of qt.
__global__ void quant_cols_t_kernel(const float* __restrict__ x, int64_t M, int64_t K,
                                    bool ue8m0, bool act, uint8_t* __restrict__ qt,
                                    float* __restrict__ st) {
  constexpr int kPitch = kBlk + 4;
  __shared__ uint32_t sh[8][32];
  __shared__ __align__(4) uint8_t tile[32 * kPitch];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 32 + tx;
  const int64_t j0 = int64_t(blockIdx.x) * 32, SCt = (M + kBlk - 1) / kBlk;
  const int64_t strips = SCt;
  for (int64_t rb = blockIdx.y; rb < strips; rb += gridDim.y) {
    const int64_t i0 = rb * kBlk, j = j0 + tx;
    float v[16];
    uint32_t amax = 0;
#pragma unroll
    for (int r = 0; r < 16; ++r) {
      const int64_t i = i0 + ty + 8 * r;
      v[r] = (i < M && j < K) ? x[i * K + j] : 0.0f;
      amax = max(amax, abs_bits(v[r]));
    }
    __syncthreads();   // sh and tile reused across strips
    sh[ty][tx] = amax;
    __syncthreads();
    amax = 0;
#pragma unroll
    for (int t = 0; t < 8; ++t) amax = max(amax, sh[t][tx]);   // over the 128 rows
    const float s = scale_of(__uint_as_float(amax), ue8m0, act);
    if (ty == 0 && j < K) st[j * SCt + rb] = s;
#pragma unroll
    for (int r = 0; r < 16; ++r) tile[tx * kPitch + ty + 8 * r] = quant_code(v[r], s);
    __syncthreads();
    // qt row j0 + jl, columns i0 .. i0 + 127: 128 contiguous bytes per column of x.
    for (int idx = tid; idx < 32 * kBlk; idx += 256) {
      const int jl = idx / kBlk, il = idx % kBlk;
      const int64_t i = i0 + il, jj = j0 + jl;
      if (i < M && jj < K) qt[jj * M + i] = tile[jl * kPitch + il];
    }
  }
}

// The tile quantisers (DS_FP8_QUANT=tiles; fp8_quant.cuh fp8_quantize_tiles): x (M, K) F32
// read once, as 128x128 tiles, into the 1x128 quantisation, the 128x1 one written transposed,
// or both. Block 256 threads = 8 warps; warp w holds the tile's rows 16w .. 16w + 15, lane l
// its columns 4l .. 4l + 3 (one 16-byte load a row: a warp reads a row's 512 contiguous
// bytes). grid (ceil(K / 128), row strips wrapping over grid.y).
//   kRows: 1x128 groups (the tile's 128 columns of a row are one group; a warp reduction):
//          scales s (M, ceil(K/128)) and codes q (M, K), a lane's 4 codes one 4-byte store;
//   kFake: the 128x1 groups are those of fp8_fake_quant(x, row_1x128) (e4m3(code) * scale of
//          the row quantisation, in registers) instead of x's: the Wgrad operand of an FP8
//          Linear's input, which the forward quantised 1x128;
//   kCols: 128x1 groups (a column's amax over the tile's rows: each thread's 16 rows, then
//          the 8 warps' through shared memory): scales st (K, ceil(M/128)) and qt (K, M), the
//          codes of x^T, each lane's 16 rows of a column one 16-byte store.
// Needs K % 4 == 0, x 16-byte and q 4-byte aligned, and with kCols M % 16 == 0 and qt 16-byte
// aligned (fp8_quantize_tiles checks, else the plain kernels run). Elements outside x are
// zeros, which change no amax, and are not written.
// A thread's share of a tile: v[r][u] = x[i0 + r, j + u] for r < 16, u < 4, one 16-byte load
// a row; zeros outside x (jin: the 4 columns are inside, K % 4 == 0).
__device__ __forceinline__ void load_rows(const float* x, int64_t M, int64_t K, int64_t i0,
                                          int64_t j, bool jin, float (&v)[16][4]) {
#pragma unroll
  for (int r = 0; r < 16; ++r) {
    float4 t = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (jin && i0 + r < M) t = *reinterpret_cast<const float4*>(x + (i0 + r) * K + j);
    v[r][0] = t.x;
    v[r][1] = t.y;
    v[r][2] = t.z;
    v[r][3] = t.w;
  }
}

struct TileArgs {
  const float* x;
  int64_t M, K;
  bool ue8m0, act;
  uint8_t* q;
  float* s;
  uint8_t* qt;
  float* st;
};

// Whether quant_tiles_kernel takes p (fake: the 128x1 groups of the round trip), and its grid
// (row strips beyond 65535 wrap): the launcher's (fp8_quant.cu fp8_quantize_tiles) and the
// emulation test's.
inline bool tiles_fit(const TileArgs& p, bool fake) {
  auto bits = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr); };
  const bool rows = p.q != nullptr, cols = p.qt != nullptr;
  if ((!rows && !cols) || (fake && !cols) || (rows && !p.s) || (cols && !p.st)) return false;
  if (p.K % 4 != 0 || bits(p.x) % 16 != 0 || (rows && bits(p.q) % 4 != 0)) return false;
  return !cols || (p.M % 16 == 0 && bits(p.qt) % 16 == 0);
}
inline dim3 tiles_grid(int64_t M, int64_t K) {
  int64_t strips = (M + kBlk - 1) / kBlk;
  strips = strips < 1 ? 1 : strips > 65535 ? 65535 : strips;
  return dim3(unsigned((K + kBlk - 1) / kBlk), unsigned(strips));
}

template <bool kRows, bool kCols, bool kFake>
__global__ void __launch_bounds__(256) quant_tiles_kernel(TileArgs p) {
  __shared__ __align__(16) uint32_t sh[8][kBlk];   // per warp, the column amax of its 16 rows
  const int lane = int(threadIdx.x) & 31, w = int(threadIdx.x) >> 5;
  const int64_t cb = blockIdx.x, j = cb * kBlk + 4 * lane;
  const int64_t SC = (p.K + kBlk - 1) / kBlk, strips = (p.M + kBlk - 1) / kBlk;
  const bool jin = j < p.K;   // K % 4 == 0: the lane's 4 columns all in, or all out
  for (int64_t rb = blockIdx.y; rb < strips; rb += gridDim.y) {
    const int64_t i0 = rb * kBlk + 16 * w;
    float v[16][4];   // v[r][u] = x[i0 + r, j + u]
    load_rows(p.x, p.M, p.K, i0, j, jin, v);
    if constexpr (kRows || kFake) {
      float srow[16];
#pragma unroll
      for (int r = 0; r < 16; ++r) {
        uint32_t a = max(max(abs_bits(v[r][0]), abs_bits(v[r][1])),
                         max(abs_bits(v[r][2]), abs_bits(v[r][3])));
        a = __reduce_max_sync(0xffffffffu, a);   // the row's 128 columns
        srow[r] = scale_of(__uint_as_float(a), p.ue8m0, p.act);
      }
#pragma unroll
      for (int r = 0; r < 16; ++r) {
        const float s = srow[r];   // (the scales first: ptxas then keeps to registers)
        uint32_t codes = 0;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const uint8_t c = quant_code(v[r][u], s);
          codes |= uint32_t(c) << (8 * u);
          if constexpr (kFake) v[r][u] = __fmul_rn(e4m3_value(c), s);
        }
        if constexpr (kRows) {
          const int64_t i = i0 + r;
          if (i < p.M) {
            if (lane == 0) p.s[i * SC + cb] = s;
            if (jin) *reinterpret_cast<uint32_t*>(p.q + i * p.K + j) = codes;
          }
        }
      }
    }
    if constexpr (kCols) {
      uint32_t ca[4] = {0, 0, 0, 0};
#pragma unroll
      for (int r = 0; r < 16; ++r)
#pragma unroll
        for (int u = 0; u < 4; ++u) ca[u] = max(ca[u], abs_bits(v[r][u]));
      __syncthreads();   // sh reused across strips
      // a lane's 4 columns as one 16-byte store and load (no bank conflicts)
      *reinterpret_cast<uint4*>(&sh[w][4 * lane]) = make_uint4(ca[0], ca[1], ca[2], ca[3]);
      __syncthreads();
      uint32_t cmax[4] = {0, 0, 0, 0};   // the tile's 128 rows
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        const uint4 m = *reinterpret_cast<const uint4*>(&sh[t][4 * lane]);
        cmax[0] = max(cmax[0], m.x);
        cmax[1] = max(cmax[1], m.y);
        cmax[2] = max(cmax[2], m.z);
        cmax[3] = max(cmax[3], m.w);
      }
      const int64_t SCt = strips;
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const uint32_t a = cmax[u];
        const float s = scale_of(__uint_as_float(a), p.ue8m0, p.act);
        if (w == 0 && jin) p.st[(j + u) * SCt + rb] = s;
        uint32_t word[4] = {0, 0, 0, 0};   // rows i0 .. i0 + 15 of column j + u
#pragma unroll
        for (int r = 0; r < 16; ++r)
          word[r / 4] |= uint32_t(quant_code(v[r][u], s)) << (8 * (r % 4));
        if (jin && i0 < p.M)   // M % 16 == 0: the warp's 16 rows all in, or all out
          *reinterpret_cast<uint4*>(p.qt + (j + u) * p.M + i0) =
              make_uint4(word[0], word[1], word[2], word[3]);
      }
    }
  }
}

// Whether quant_blocks_tiles_kernel takes job j (the launcher's test, for every job).
inline bool blocks_tiles_fit(const Fp8BlockJob& j) {
  auto bits = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr); };
  return j.K % 4 == 0 && j.M % 16 == 0 && bits(j.x) % 16 == 0 && bits(j.q) % 4 == 0 &&
         bits(j.qt) % 16 == 0;
}

// fp8_quantize_blocks_multi on tiles (DS_FP8_QUANT=tiles): a block of 256 threads per 128x128
// block of one job (found by a binary search over the prefix sums), laid out as
// quant_tiles_kernel: warp w holds rows 16w .. 16w + 15, lane l columns 4l .. 4l + 3 (16-byte
// loads). The block's amax: each thread's 64 values, the warp's, then the 8 warps' through
// shared memory. Each code is computed once and leaves both ways: q's as one 4-byte store a
// lane and row, q^T's as one 16-byte store a lane and column. Needs every job's K % 4 == 0
// and M % 16 == 0, x 16-byte, q 4-byte and qt 16-byte aligned (the launcher checks).
__global__ void __launch_bounds__(256) quant_blocks_tiles_kernel(const BlockEntry* tab, int count,
                                                                 bool ue8m0) {
  __shared__ uint32_t sh[8];
  const int lane = int(threadIdx.x) & 31, w = int(threadIdx.x) >> 5;
  const BlockEntry e = tab[entry_of(tab, count, blockIdx.x)];
  const Fp8BlockJob& p = e.job;
  const int64_t b = int64_t(blockIdx.x) - e.first, rb = b / e.SC, cb = b % e.SC;
  const int64_t i0 = rb * kBlk + 16 * w, j = cb * kBlk + 4 * lane;
  const bool jin = j < p.K;   // K % 4 == 0: the lane's 4 columns all in, or all out
  float v[16][4];             // v[r][u] = x[i0 + r, j + u]
  load_rows(p.x, p.M, p.K, i0, j, jin, v);
  uint32_t a = 0;
#pragma unroll
  for (int r = 0; r < 16; ++r)
#pragma unroll
    for (int u = 0; u < 4; ++u) a = max(a, abs_bits(v[r][u]));
  a = __reduce_max_sync(0xffffffffu, a);
  if (lane == 0) sh[w] = a;
  __syncthreads();
  a = 0;
#pragma unroll
  for (int t = 0; t < 8; ++t) a = max(a, sh[t]);
  const float s = scale_of(__uint_as_float(a), ue8m0, false);
  if (threadIdx.x == 0) {
    if (p.s) p.s[rb * e.SC + cb] = s;
    if (p.st) p.st[cb * e.SR + rb] = s;
  }
  uint32_t row[16], col[4][4];   // row[r]: row r's 4 codes; col[u]: column u's 16 codes
#pragma unroll
  for (int u = 0; u < 4; ++u)
#pragma unroll
    for (int t = 0; t < 4; ++t) col[u][t] = 0;
#pragma unroll
  for (int r = 0; r < 16; ++r) {
    row[r] = 0;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const uint32_t c = quant_code(v[r][u], s);
      row[r] |= c << (8 * u);
      col[u][r / 4] |= c << (8 * (r % 4));
    }
  }
  if (p.q && jin)
#pragma unroll
    for (int r = 0; r < 16; ++r)
      if (i0 + r < p.M) *reinterpret_cast<uint32_t*>(p.q + (i0 + r) * p.K + j) = row[r];
  if (p.qt && jin && i0 < p.M)   // M % 16 == 0: the warp's 16 rows all in, or all out
#pragma unroll
    for (int u = 0; u < 4; ++u)
      *reinterpret_cast<uint4*>(p.qt + (j + u) * p.M + i0) =
          make_uint4(col[u][0], col[u][1], col[u][2], col[u][3]);
}

}  // namespace
}  // namespace ds::cuda::fp8q
