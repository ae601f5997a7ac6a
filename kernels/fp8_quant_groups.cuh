// The E4M3 quantisers of the default path (DS_FP8_QUANT=plain): 128x1 and 128x128 over tiles
// of 128 rows x 32 or 128 columns, the whole-tensor amax and quantisation, the many-matrix
// 128x128 weight quantiser with its transposed codes, and the dequantiser. Included by
// kernels/fp8_quant.cu, which launches them, and by the host emulation test
// tests/kernels/test_emu_fp8_groups.cpp, which runs this same source on a CPU against the
// reference (lib/ops/cpu/ref_fp8.cpp) bit for bit. Plain CUDA C++ without inline PTX, so that
// the emulator (tests/kernels/cuda_emu.hpp) can run it; the arithmetic (abs_bits, scale_of,
// emit) is fp8_quant_math.cuh's and its rules are listed at the top of fp8_quant.cu.
#pragma once
#include <cstdint>

#include "kernels/fp8_quant_math.cuh"
#include "kernels/multi_tensor_index.hpp"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::fp8q {
namespace {

// 128x1 (kCols == 1: 32 groups of one column each) and 128x128 (kCols == 4: one group) over
// a tile of 128 rows x 32*kCols columns; block (32, 8): thread (tx, ty) holds rows ty + 8r,
// columns tx + 32u. grid (column tiles, row strips wrapping over grid.y).
template <int kCols>
__global__ void quant_tile_kernel(QArgs p) {
  __shared__ uint32_t sh[8][32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j0 = int64_t(blockIdx.x) * 32 * kCols;
  const int64_t strips = (p.M + kBlk - 1) / kBlk;
  for (int64_t rb = blockIdx.y; rb < strips; rb += gridDim.y) {
    float v[16][kCols];
    uint32_t amax = 0;
#pragma unroll
    for (int r = 0; r < 16; ++r)
#pragma unroll
      for (int u = 0; u < kCols; ++u) {
        const int64_t i = rb * kBlk + ty + 8 * r, j = j0 + tx + 32 * u;
        v[r][u] = (i < p.M && j < p.K) ? p.x[i * p.K + j] : 0.0f;
        amax = max(amax, abs_bits(v[r][u]));
      }
    __syncthreads();   // sh reused across strips
    sh[ty][tx] = amax;
    __syncthreads();
    amax = 0;
#pragma unroll
    for (int t = 0; t < 8; ++t) amax = max(amax, sh[t][tx]);   // over the 128 rows
    if (kCols > 1) amax = __reduce_max_sync(0xffffffffu, amax);   // and the 128 columns
    const float s = scale_of(__uint_as_float(amax), p.ue8m0, p.act);
    if (p.scales && ty == 0) {
      if (kCols == 1) {
        if (j0 + tx < p.K) p.scales[rb * p.K + j0 + tx] = s;
      } else if (tx == 0) {
        p.scales[rb * p.SC + blockIdx.x] = s;
      }
    }
#pragma unroll
    for (int r = 0; r < 16; ++r)
#pragma unroll
      for (int u = 0; u < kCols; ++u) {
        const int64_t i = rb * kBlk + ty + 8 * r, j = j0 + tx + 32 * u;
        if (i < p.M && j < p.K) emit(v[r][u], s, i * p.K + j, p.q, p.fake);
      }
  }
}

// Whole-tensor amax into *amax (zeroed before).
__global__ void amax_kernel(const float* __restrict__ x, int64_t n, uint32_t* amax) {
  __shared__ uint32_t sh[32];
  uint32_t m = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    m = max(m, abs_bits(x[i]));
  m = __reduce_max_sync(0xffffffffu, m);
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x < 32) {
    m = threadIdx.x < (blockDim.x >> 5) ? sh[threadIdx.x] : 0u;
    m = __reduce_max_sync(0xffffffffu, m);
    if (threadIdx.x == 0) atomicMax(amax, m);
  }
}

__global__ void quant_tensor_kernel(QArgs p, int64_t n, const uint32_t* amax) {
  const float s = scale_of(__uint_as_float(*amax), p.ue8m0, p.act);
  if (blockIdx.x == 0 && threadIdx.x == 0 && p.scales) p.scales[0] = s;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    emit(p.x[i], s, i, p.q, p.fake);
}

// out[i, j] = e4m3(q[i, j]) * scales[(i / gr) * SC + j / gc]; grid (column chunks of 1024,
// rows wrapping over grid.y).
__global__ void dequant_kernel(const uint8_t* __restrict__ q, const float* __restrict__ scales,
                               int64_t M, int64_t K, int64_t gr, int64_t gc, int64_t SC,
                               float* __restrict__ out) {
  for (int64_t i = blockIdx.y; i < M; i += gridDim.y) {
    const float* srow = scales + (i / gr) * SC;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int64_t j = int64_t(blockIdx.x) * 1024 + threadIdx.x + 256 * t;
      if (j < K) out[i * K + j] = __fmul_rn(e4m3_value(q[i * K + j]), srow[j / gc]);
    }
  }
}

// fp8_quantize_blocks_multi: one block (32, 8) per 128x128 block of one job, found by binary
// search over the jobs' block prefix sums. Thread (tx, ty) holds rows ty + 8r, columns
// tx + 32u of the block, as quant_tile_kernel<4> (the same amax and codes). The transposed
// codes go through a shared tile (rows padded to 132 bytes: the column-wise reads of 32
// consecutive rows hit 32 different banks) so that qt's rows are written contiguously.
__global__ void quant_blocks_multi_kernel(const BlockEntry* tab, int count, bool ue8m0) {
  constexpr int kPitch = kBlk + 4;
  __shared__ uint32_t sh[8][32];
  __shared__ __align__(4) uint8_t tile[kBlk * kPitch];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 32 + tx;
  const BlockEntry e = tab[entry_of(tab, count, blockIdx.x)];   // by value: the byte stores
  const Fp8BlockJob& p = e.job;                                  // below cannot alias it
  const int64_t b = int64_t(blockIdx.x) - e.first, rb = b / e.SC, cb = b % e.SC;
  const int64_t i0 = rb * kBlk, j0 = cb * kBlk;
  float v[16][4];
  uint32_t amax = 0;
#pragma unroll
  for (int r = 0; r < 16; ++r)
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t i = i0 + ty + 8 * r, j = j0 + tx + 32 * u;
      v[r][u] = (i < p.M && j < p.K) ? p.x[i * p.K + j] : 0.0f;
      amax = max(amax, abs_bits(v[r][u]));
    }
  sh[ty][tx] = amax;
  __syncthreads();
  amax = 0;
#pragma unroll
  for (int t = 0; t < 8; ++t) amax = max(amax, sh[t][tx]);
  amax = __reduce_max_sync(0xffffffffu, amax);
  const float s = scale_of(__uint_as_float(amax), ue8m0, false);
  if (tid == 0) {
    if (p.s) p.s[rb * e.SC + cb] = s;
    if (p.st) p.st[cb * e.SR + rb] = s;
  }
#pragma unroll
  for (int r = 0; r < 16; ++r)
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int il = ty + 8 * r, jl = tx + 32 * u;
      const int64_t i = i0 + il, j = j0 + jl;
      const uint8_t c = quant_code(v[r][u], s);
      if (p.q && i < p.M && j < p.K) p.q[i * p.K + j] = c;
      tile[il * kPitch + jl] = c;
    }
  if (!p.qt) return;   // uniform over the block
  __syncthreads();
  // qt row j0 + jl holds x's column j0 + jl: bytes il = 0..127 of the block's rows.
  for (int idx = tid; idx < kBlk * kBlk; idx += 256) {
    const int jl = idx / kBlk, il = idx % kBlk;
    const int64_t i = i0 + il, j = j0 + jl;
    if (i < p.M && j < p.K) p.qt[j * p.M + i] = tile[il * kPitch + jl];
  }
}

}  // namespace
}  // namespace ds::cuda::fp8q
