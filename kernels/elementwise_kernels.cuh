// The element-wise, reduction and row kernels of the CUDA path (the flat add and scale, the
// double-accumulated sums' two passes, the row gathers, scatters and dots of the embedding and
// the MoE permutation, BF16 row stores; the head-layout kernels are in
// head_layout_kernels.cuh); semantics follow lib/ops/cpu/ref_*.cpp. Included by
// kernels/elementwise.cu, which launches them, and by the host emulation test
// tests/kernels/test_emu_elementwise.cpp, which runs this same source on a CPU against the
// reference. Plain CUDA C++ without inline PTX, so that the emulator
// (tests/kernels/cuda_emu.hpp) can run it.
#pragma once
#include <cstdint>

#include "kernels/bf16_io.cuh"
#include "kernels/flat_loops.cuh"
#include "kernels/warp_reduce.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::elem {
namespace {

using namespace ew;

// ---- flat element-wise ------------------------------------------------------------------------
// No __restrict__: out may alias an input (each element is read before it is written by the
// same thread).
__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n, bool vec) {
  flat_loop(
      n, vec,
      [&](int64_t i) {
        const float4 x = ld4(a, i), y = ld4(b, i);
        st4(out, i, make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w));
      },
      [&](int64_t i) { out[i] = a[i] + b[i]; });
}

__global__ void scale_kernel(float* x, float s, int64_t n, bool vec) {
  flat_loop(
      n, vec,
      [&](int64_t i) {
        const float4 v = ld4(x, i);
        st4(x, i, make_float4(v.x * s, v.y * s, v.z * s, v.w * s));
      },
      [&](int64_t i) { x[i] *= s; });
}

// ---- reductions -------------------------------------------------------------------------------
enum class Red { sum, sumsq, nonfinite };
template <Red R> struct RedT { using T = double; };
template <> struct RedT<Red::nonfinite> { using T = unsigned long long; };

template <Red R>
__device__ __forceinline__ typename RedT<R>::T red_elem(float x) {
  if constexpr (R == Red::sum) return double(x);
  else if constexpr (R == Red::sumsq) return double(x) * double(x);
  else return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u ? 1ull : 0ull;
}

// Block-wide sum for double / unsigned long long; every thread gets the result.
template <class T>
__device__ __forceinline__ T block_sum_t(T v, T* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : T(0);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One partial per block, in a fixed layout: the result depends only on n (and the alignment of
// x), never on timing, so repeated calls are bit-identical.
template <Red R>
__global__ void reduce_partial_kernel(const float* __restrict__ x, int64_t n, bool vec,
                                      typename RedT<R>::T* __restrict__ part) {
  using T = typename RedT<R>::T;
  __shared__ T sh[32];
  T acc = 0;
  flat_loop(
      n, vec,
      [&](int64_t i) {
        const float4 v = ld4(x, i);
        acc += red_elem<R>(v.x) + red_elem<R>(v.y) + red_elem<R>(v.z) + red_elem<R>(v.w);
      },
      [&](int64_t i) { acc += red_elem<R>(x[i]); });
  acc = block_sum_t(acc, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

template <class T>
__global__ void reduce_final_kernel(const T* __restrict__ part, int nb, T* __restrict__ out) {
  __shared__ T sh[32];
  T acc = 0;
  for (int i = threadIdx.x; i < nb; i += blockDim.x) acc += part[i];
  acc = block_sum_t(acc, sh);
  if (threadIdx.x == 0) *out = acc;
}


__device__ __forceinline__ void atomic_add_v(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add_v(float4* p, float4 v) {
#if __CUDA_ARCH__ >= 900
  atomicAdd(p, v);   // one vector atomic (sm_90+)
#else
  float* q = reinterpret_cast<float*>(p);
  atomicAdd(q, v.x); atomicAdd(q + 1, v.y); atomicAdd(q + 2, v.z); atomicAdd(q + 3, v.w);
#endif
}
__device__ __forceinline__ float vscale(float w, float v) { return w * v; }
__device__ __forceinline__ float4 vscale(float w, float4 v) {
  return make_float4(w * v.x, w * v.y, w * v.z, w * v.w);
}

// 0 + w * v, rounded as written (no FMA): the CPU's weighted scatter into zeros, value for
// value (the GPU's float atomics flush subnormal sums to zero; this keeps them).
__device__ __forceinline__ float vscale0(float w, float v) {
  return __fadd_rn(0.0f, __fmul_rn(w, v));
}
__device__ __forceinline__ float4 vscale0(float w, float4 v) {
  return make_float4(vscale0(w, v.x), vscale0(w, v.y), vscale0(w, v.z), vscale0(w, v.w));
}

// dst (M, Cv) = src (n_src, Cv)[rows[m]] (zeros for a bad index); SCALED: 0 + w[m] * that.
template <class VT, bool SCALED = false>
__global__ void gather_rows_kernel(const VT* __restrict__ src, int64_t n_src,
                                   const int32_t* __restrict__ rows, VT* __restrict__ dst,
                                   int64_t M, int64_t Cv, int lg,
                                   const float* __restrict__ w = nullptr) {
  DS_ROW_LOOP(M) {
    const int32_t r = rows[m];
    VT* d = dst + m * Cv;
    if (r < 0 || r >= n_src) {
      for (int64_t c = lane; c < Cv; c += tpr) d[c] = vzero<VT>();
      continue;
    }
    const VT* s = src + int64_t(r) * Cv;
    if constexpr (SCALED) {
      const float wm = w[m];
      for (int64_t c = lane; c < Cv; c += tpr) d[c] = vscale0(wm, s[c]);
    } else {
      for (int64_t c = lane; c < Cv; c += tpr) d[c] = s[c];
    }
  }
}

// dst[rows[m]] += w[m] * src[m]; also dst[rows[m]] = src[m] when SET.
template <class VT, bool SET>
__global__ void scatter_rows_kernel(const VT* __restrict__ src, const int32_t* __restrict__ rows,
                                    const float* __restrict__ w, VT* __restrict__ dst,
                                    int64_t n_dst, int64_t M, int64_t Cv, int lg) {
  DS_ROW_LOOP(M) {
    const int32_t r = rows[m];
    if (r < 0 || r >= n_dst) continue;
    const VT* s = src + m * Cv;
    VT* d = dst + int64_t(r) * Cv;
    if constexpr (SET) {
      for (int64_t c = lane; c < Cv; c += tpr) d[c] = s[c];
    } else {
      const float wm = w ? w[m] : 1.0f;
      for (int64_t c = lane; c < Cv; c += tpr) atomic_add_v(d + c, w ? vscale(wm, s[c]) : s[c]);
    }
  }
}

// set_rows into a BF16 dst: element converters (F32 rounded RNE as ds::f32_to_bf16; BF16
// copied), scalar or 4 elements at a time (float4 -> uint2, uint2 -> uint2).
__device__ __forceinline__ uint16_t to_bf16v(float x) { return f32_to_bf16(x); }
__device__ __forceinline__ uint16_t to_bf16v(uint16_t x) { return x; }
__device__ __forceinline__ uint2 to_bf16v(uint2 x) { return x; }
__device__ __forceinline__ uint2 to_bf16v(float4 x) {
  return make_uint2(uint32_t(f32_to_bf16(x.x)) | (uint32_t(f32_to_bf16(x.y)) << 16),
                    uint32_t(f32_to_bf16(x.z)) | (uint32_t(f32_to_bf16(x.w)) << 16));
}
// dst (n_dst, Cv)[rows[m]] = to_bf16v(src (M, Cv)[m]); bad rows skipped.
template <class SV, class DV>
__global__ void set_rows_bf16_kernel(const SV* __restrict__ src, const int32_t* __restrict__ rows,
                                     DV* __restrict__ dst, int64_t n_dst, int64_t M, int64_t Cv,
                                     int lg) {
  DS_ROW_LOOP(M) {
    const int32_t r = rows[m];
    if (r < 0 || r >= n_dst) continue;
    const SV* s = src + m * Cv;
    DV* d = dst + int64_t(r) * Cv;
    for (int64_t c = lane; c < Cv; c += tpr) d[c] = to_bf16v(s[c]);
  }
}

// One warp per row: out[m] = sum_c a[rows[m], c] * b[m, c] in double.
template <class VT>
__global__ void gather_rows_dot_kernel(const VT* __restrict__ a, int64_t n_a,
                                       const int32_t* __restrict__ rows, const VT* __restrict__ b,
                                       float* __restrict__ out, int64_t M, int64_t Cv) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = gstride() >> 5;
  for (int64_t m = gtid() >> 5; m < M; m += warps) {
    const int32_t r = rows[m];
    const bool ok = r >= 0 && r < n_a;
    double acc = 0;
    if (ok) {
      const VT* ar = a + int64_t(r) * Cv;
      const VT* br = b + m * Cv;
      for (int64_t c = lane; c < Cv; c += 32) {
        if constexpr (sizeof(VT) == 16) {
          const float4 x = ar[c], y = br[c];
          acc += double(x.x) * double(y.x) + double(x.y) * double(y.y) +
                 double(x.z) * double(y.z) + double(x.w) * double(y.w);
        } else {
          acc += double(ar[c]) * double(br[c]);
        }
      }
    }
    acc = warp_sum_d(acc);
    if (lane == 0) out[m] = ok ? float(acc) : 0.0f;
  }
}

}  // namespace
}  // namespace ds::cuda::elem
