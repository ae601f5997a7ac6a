// The grid-stride loops, float4 access and row-group layout of the element-wise and row
// kernels (kernels/elementwise.cu, swiglu_kernels.cuh; the launch sizes that need the device
// are in elementwise_util.cuh). Plain CUDA C++ without CUDA headers of its own, so that the
// host emulator (tests/kernels/cuda_emu.hpp) can run the kernels that use it.
#pragma once
#include <cstdint>

namespace ds::cuda::ew {

constexpr int kThreads = 256;

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

__device__ __forceinline__ int64_t gtid() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t gstride() { return int64_t(gridDim.x) * blockDim.x; }

// Runs f4(i) over the n/4 float4 groups (when vec) and f1(i) over the remaining elements.
template <class F4, class F1>
__device__ __forceinline__ void flat_loop(int64_t n, bool vec, F4&& f4, F1&& f1) {
  const int64_t t = gtid(), stride = gstride();
  const int64_t nv = vec ? n / 4 : 0;
  for (int64_t i = t; i < nv; i += stride) f4(i);
  for (int64_t i = nv * 4 + t; i < n; i += stride) f1(i);
}

__device__ __forceinline__ float4 ld4(const float* p, int64_t i) {
  return reinterpret_cast<const float4*>(p)[i];
}
__device__ __forceinline__ void st4(float* p, int64_t i, float4 v) {
  reinterpret_cast<float4*>(p)[i] = v;
}

// Zero and sum of one element (float) or four (float4), for kernels templated on the width.
template <class VT> __device__ __forceinline__ VT vzero();
template <> __device__ __forceinline__ float vzero<float>() { return 0.0f; }
template <> __device__ __forceinline__ float4 vzero<float4>() { return make_float4(0, 0, 0, 0); }
__device__ __forceinline__ float vadd(float a, float b) { return a + b; }
__device__ __forceinline__ float4 vadd(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

// The float4 path needs 16-byte aligned inputs and outputs aligned to a 4-element group.
inline bool out_aligned(const void* p, bool codes) {
  return (reinterpret_cast<uintptr_t>(p) & (codes ? 7u : 15u)) == 0;
}

// Row kernels split a block into groups of 2^lg threads, one row per group, so that short rows
// (C = 5) do not leave most of a block idle and long ones (C = 7168) get 256 threads each:
// the smallest group of at least `cols` threads, at most the block.
inline int row_lg(int64_t cols) {
  int lg = 0;
  while ((1 << lg) < kThreads && (int64_t(1) << lg) < cols) ++lg;
  return lg;
}

// Inside a row kernel with parameter lg: m runs over this thread group's rows, lane over its
// 2^lg (= tpr) threads.
#define DS_ROW_LOOP(M)                                                          \
  const int tpr = 1 << lg, lane = int(threadIdx.x) & (tpr - 1);                 \
  const int64_t rpb = int64_t(blockDim.x) >> lg;                                \
  for (int64_t m = int64_t(blockIdx.x) * rpb + (threadIdx.x >> lg); m < (M);    \
       m += int64_t(gridDim.x) * rpb)

}  // namespace ds::cuda::ew
