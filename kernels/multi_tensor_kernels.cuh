// The many-tensor kernels (sums of squares, zeroing, BF16 rounding over a table of tensors;
// launched by kernels/multi_tensor.cu, declared in multi_tensor.cuh), also included by the host
// emulation test tests/kernels/test_emu_multi_tensor.cpp, which runs this same source on a CPU
// against the reference. Plain CUDA C++ without inline PTX, so that the emulator
// (tests/kernels/cuda_emu.hpp) can run it. One 256-thread block per chunk of one tensor; the
// per-element arithmetic is that of the one-tensor kernels (elementwise.cu, fp8_quant.cu):
// f32_to_bf16 for the rounding, FP32 squares widened to double for the sums.
#pragma once
#include <cstdint>

#include "kernels/bf16_io.cuh"
#include "kernels/multi_tensor_index.hpp"
#include "kernels/warp_reduce.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::multitensor {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 65536;          // elements per block (sums, rounding)
constexpr int64_t kZeroChunk = 1 << 20;    // bytes per block (zeroing); a multiple of 16

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
// bf16_round_multi's 4-wide path: x 16-byte aligned, out 8- (codes) or 16-byte (F32) aligned.
inline bool round_vec(const void* x, const void* out, bool codes) {
  return aligned16(x) && (codes ? (reinterpret_cast<uintptr_t>(out) & 7u) == 0 : aligned16(out));
}
// out[i] = the sum of entry i's partial sums, in chunk order (first: chunk_prefix's).
inline void add_partials(const int64_t* first, const double* partial, int count, double* out) {
  for (int i = 0; i < count; ++i) {
    double s = 0;
    for (int64_t c = first[i]; c < first[i + 1]; ++c) s += partial[c];
    out[i] = s;
  }
}

struct SumEntry {
  const float* x;
  int64_t n, first;
  bool vec;   // x 16-byte aligned: float4 loads
};

// partial[c] = sum of squares of chunk c (double; a fixed order within the block).
__global__ void sum_squares_multi_kernel(const SumEntry* tab, int count, double* partial) {
  __shared__ double sh[kThreads / 32];
  const int64_t c = blockIdx.x;
  const SumEntry e = tab[entry_of(tab, count, c)];
  const auto [lo, len] = chunk_range(c, e.first, e.n, kChunk);
  const float* x = e.x + lo;
  double acc = 0;
  int64_t done = 0;
  if (e.vec) {   // lo is a multiple of 4, so x stays 16-byte aligned
    const int64_t n4 = len / 4;
    for (int64_t i = threadIdx.x; i < n4; i += kThreads) {
      const float4 v = reinterpret_cast<const float4*>(x)[i];
      acc += double(v.x) * double(v.x) + double(v.y) * double(v.y) +
             double(v.z) * double(v.z) + double(v.w) * double(v.w);
    }
    done = n4 * 4;
  }
  for (int64_t i = done + threadIdx.x; i < len; i += kThreads) acc += double(x[i]) * double(x[i]);
  acc = warp_sum_d(acc);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) sh[w] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    for (int i = 0; i < kThreads / 32; ++i) s += sh[i];
    partial[c] = s;
  }
}

struct ZeroEntry {
  uint8_t* p;
  int64_t bytes, first;
  bool vec;
};

__global__ void zero_multi_kernel(const ZeroEntry* tab, int count) {
  const int64_t c = blockIdx.x;
  const ZeroEntry e = tab[entry_of(tab, count, c)];
  const auto [lo, len] = chunk_range(c, e.first, e.bytes, kZeroChunk);
  uint8_t* p = e.p + lo;
  int64_t done = 0;
  if (e.vec) {
    const int64_t n16 = len / 16;
    for (int64_t i = threadIdx.x; i < n16; i += kThreads)
      reinterpret_cast<uint4*>(p)[i] = make_uint4(0, 0, 0, 0);
    done = n16 * 16;
  }
  for (int64_t i = done + threadIdx.x; i < len; i += kThreads) p[i] = 0;
}

struct RoundEntry {
  const float* x;
  void* out;
  int64_t n, first;
  bool vec;   // x 16-byte and out 8- (codes) or 16-byte (F32) aligned: 4 elements a thread
};

template <bool CODES>
__global__ void bf16_round_multi_kernel(const RoundEntry* tab, int count) {
  const int64_t c = blockIdx.x;
  const RoundEntry e = tab[entry_of(tab, count, c)];
  const auto [lo, len] = chunk_range(c, e.first, e.n, kChunk);
  const float* x = e.x + lo;
  int64_t done = 0;
  if (e.vec) {   // lo is a multiple of 4: x + lo and out + lo keep their alignment
    void* out = CODES ? static_cast<void*>(static_cast<uint16_t*>(e.out) + lo)
                      : static_cast<void*>(static_cast<float*>(e.out) + lo);
    const int64_t n4 = len / 4;
    for (int64_t i = threadIdx.x; i < n4; i += kThreads)
      store_bf16x4<CODES>(out, i, reinterpret_cast<const float4*>(x)[i]);
    done = 4 * n4;
  }
  for (int64_t i = done + threadIdx.x; i < len; i += kThreads) {
    const uint16_t b = f32_to_bf16(x[i]);
    if (CODES) static_cast<uint16_t*>(e.out)[lo + i] = b;
    else static_cast<float*>(e.out)[lo + i] = bf16_to_f32(b);
  }
}

}  // namespace
}  // namespace ds::cuda::multitensor
