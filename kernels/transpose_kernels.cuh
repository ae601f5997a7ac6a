// The GEMM path's layout kernels: F32 to BF16 codes (RNE) and back, and the tiled transpose of
// 1-, 2- and 4-byte elements (ops::transpose on the GPU; the FP8 codes' and scales'
// transposes). Included by kernels/gemm.cu, which launches them, and by the host emulation
// test tests/kernels/test_emu_transpose.cpp, which runs this same source on a CPU against the
// reference. Plain CUDA C++ without inline PTX, so that the emulator (tests/kernels/
// cuda_emu.hpp) can run it.
#pragma once
#include <cstdint>

#include "kernels/bf16_io.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::xpose {
namespace {

__global__ void to_bf16_kernel(const float* __restrict__ x, uint16_t* __restrict__ y, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = f32_to_bf16(x[i]);
}

__global__ void from_bf16_kernel(const uint16_t* __restrict__ x, float* __restrict__ y,
                                 int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = bf16_to_f32(x[i]);
}

constexpr int kTile = 32, kRowsPerPass = 8;

// One 32x32 tile per block (32 x 8 threads): coalesced reads of x's rows into shared memory,
// coalesced writes of out's rows from its columns. The +1 column of padding keeps the
// column reads free of bank conflicts for 4-byte elements. Tiles along M wrap over grid.y.
template <typename T>
__global__ void transpose_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t M,
                                 int64_t K) {
  __shared__ T tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j0 = int64_t(blockIdx.x) * kTile;
  for (int64_t i0 = int64_t(blockIdx.y) * kTile; i0 < M; i0 += int64_t(gridDim.y) * kTile) {
    for (int r = ty; r < kTile; r += kRowsPerPass) {
      const int64_t i = i0 + r, j = j0 + tx;
      if (i < M && j < K) tile[r][tx] = x[i * K + j];
    }
    __syncthreads();
    for (int r = ty; r < kTile; r += kRowsPerPass) {
      const int64_t j = j0 + r, i = i0 + tx;   // out row j, column i
      if (i < M && j < K) out[j * M + i] = tile[tx][r];
    }
    __syncthreads();
  }
}

}  // namespace
}  // namespace ds::cuda::xpose
