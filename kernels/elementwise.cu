// Element-wise ops, double-accumulated reductions, row gathers/scatters (embedding and
// the MoE permutation) and the head-layout copies (split/concat along the last dim, head
// broadcast/sum) of the CUDA path; declared in kernels/elementwise.cuh. All of them are
// memory-bound, so the kernels aim for full-width coalesced traffic: float4 accesses whenever
// the pointers are 16-byte aligned (and row lengths a multiple of 4 for row ops), grid-stride
// loops, 32-bit index arithmetic where the sizes allow it (64-bit division is emulated and
// would make the layout copies ALU-bound). Semantics follow lib/ops/cpu/ref_*.cpp.
#include <algorithm>
#include <initializer_list>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/elementwise_util.cuh"

namespace ds::cuda {
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

constexpr int kRedMaxBlocks = 1024;   // fixed (not device-dependent): same sum on any GPU

template <Red R>
typename RedT<R>::T reduce(const float* x, int64_t n) {
  using T = typename RedT<R>::T;
  if (n <= 0) return T(0);
  const bool vec = aligned16(x);
  const int64_t work = vec ? std::max<int64_t>(n / 4, 1) : n;
  const int nb = int(std::min<int64_t>(cdiv(work, kThreads), kRedMaxBlocks));
  T* buf = static_cast<T*>(scratch(sizeof(T) * size_t(nb + 1)));
  reduce_partial_kernel<R><<<nb, kThreads, 0, stream()>>>(x, n, vec, buf);
  DS_CUDA_LAUNCHED();
  reduce_final_kernel<T><<<1, 1024, 0, stream()>>>(buf, nb, buf + nb);
  DS_CUDA_LAUNCHED();
  T h = 0;
  DS_CUDA_CHECK(cudaMemcpyAsync(&h, buf + nb, sizeof(T), cudaMemcpyDeviceToHost, stream()));
  DS_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return h;
}

template <class VT> __device__ __forceinline__ VT vzero();
template <> __device__ __forceinline__ float vzero<float>() { return 0.0f; }
template <> __device__ __forceinline__ float4 vzero<float4>() { return make_float4(0, 0, 0, 0); }

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
#undef DS_ROW_LOOP

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

// ---- head layout --------------------------------------------------------------------------
// I: uint32_t when every index fits in 31 bits (fast division), else int64_t.
template <class VT, class I, bool SPLIT>
__global__ void split_concat_kernel(VT* x, VT* a, VT* b, I R, I Av, I Bv) {
  const I W = Av + Bv, total = R * W;
  const I stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const I r = i / W, c = i - r * W;
    VT* y = c < Av ? a + (r * Av + c) : b + (r * Bv + (c - Av));
    if constexpr (SPLIT) *y = x[i];
    else x[i] = *y;
  }
}

template <class VT, class I>
__global__ void broadcast_heads_kernel(const VT* __restrict__ x, VT* __restrict__ out, I N, I H,
                                       I Dv) {
  const I total = N * H * Dv, stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const I nh = i / Dv, d = i - nh * Dv;
    out[i] = x[(nh / H) * Dv + d];
  }
}

__device__ __forceinline__ float vadd(float a, float b) { return a + b; }
__device__ __forceinline__ float4 vadd(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

// dx[n, d] = sum over heads in order (FP32, the reference's order: bit-identical).
template <class VT, class I>
__global__ void sum_heads_kernel(const VT* __restrict__ dout, VT* __restrict__ dx, I N, I H,
                                 I Dv) {
  const I total = N * Dv, stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const I n = i / Dv, d = i - n * Dv;
    const VT* p = dout + n * H * Dv + d;
    VT acc = vzero<VT>();
    for (I h = 0; h < H; ++h) acc = vadd(acc, p[h * Dv]);
    dx[i] = acc;
  }
}

inline bool fits31(int64_t n) { return n < (int64_t(1) << 31); }

// MLA's keys and values in one pass: per (token, head) row, k = [kv[:Dn] | k_rot[token]],
// v = kv[Dn:] (widths in VT units). Thread i covers element c of row r of the (Dn+Dr+Dv)-wide
// concatenation of k's and v's rows.
// One element (or 4) of an output held as F32 or, when CODES, as BF16 codes (RNE).
template <bool CODES, class VT, class I>
__device__ __forceinline__ void put_value(void* out, I i, VT x) {
  if constexpr (!CODES) static_cast<VT*>(out)[i] = x;
  else if constexpr (sizeof(VT) == 16) store_bf16x4<true>(out, i, x);
  else static_cast<uint16_t*>(out)[i] = f32_to_bf16(x);
}

template <class VT, class I, bool CODES>
__global__ void mla_kv_split_kernel(const VT* __restrict__ kv, const VT* __restrict__ krot,
                                    void* __restrict__ k, void* __restrict__ v, I N, I H, I Dn,
                                    I Dr, I Dv) {
  const I W = Dn + Dr + Dv, total = N * H * W, stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const I r = i / W, c = i - r * W;
    if (c < Dn) put_value<CODES>(k, r * (Dn + Dr) + c, kv[r * (Dn + Dv) + c]);
    else if (c < Dn + Dr) put_value<CODES>(k, r * (Dn + Dr) + c, krot[(r / H) * Dr + (c - Dn)]);
    else put_value<CODES>(v, r * Dv + (c - Dn - Dr), kv[r * (Dn + Dv) + (c - Dr)]);
  }
}

// Its backward: dkv rows = [dk[:Dn] | dv] (F32, or BF16 codes when CODES), then dk_rot (N, Dr) =
// the heads' dk[Dn:] summed in head order from zero (sum_heads' order: bit-identical).
template <class VT, class I, bool CODES>
__global__ void mla_kv_split_bwd_kernel(const VT* __restrict__ dk, const VT* __restrict__ dv,
                                        void* __restrict__ dkv, VT* __restrict__ dkrot, I N, I H,
                                        I Dn, I Dr, I Dv) {
  const I W = Dn + Dv, rows = N * H * W, total = rows + N * Dr;
  const I stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    if (i < rows) {
      const I r = i / W, c = i - r * W;
      put_value<CODES>(dkv, i, c < Dn ? dk[r * (Dn + Dr) + c] : dv[r * Dv + (c - Dn)]);
    } else {
      const I j = i - rows, n = j / Dr, d = j - n * Dr;
      const VT* p = dk + n * H * (Dn + Dr) + Dn + d;
      VT acc = vzero<VT>();
      for (I h = 0; h < H; ++h) acc = vadd(acc, p[h * (Dn + Dr)]);
      dkrot[j] = acc;
    }
  }
}


}  // namespace

// ---- launchers ------------------------------------------------------------------------------
void add_f32(const float* a, const float* b, float* out, int64_t n) {
  if (n <= 0) return;
  const bool vec = aligned16(a) && aligned16(b) && aligned16(out);
  add_kernel<<<flat_blocks(vec ? n / 4 + 1 : n), kThreads, 0, stream()>>>(a, b, out, n, vec);
  DS_CUDA_LAUNCHED();
}

void add_inplace_f32(float* dst, const float* src, int64_t n) { add_f32(dst, src, dst, n); }

void scale_f32(float* x, float s, int64_t n) {
  if (n <= 0) return;
  const bool vec = aligned16(x);
  scale_kernel<<<flat_blocks(vec ? n / 4 + 1 : n), kThreads, 0, stream()>>>(x, s, n, vec);
  DS_CUDA_LAUNCHED();
}

double sum_f32(const float* x, int64_t n) { return reduce<Red::sum>(x, n); }
double sum_squares_f32(const float* x, int64_t n) { return reduce<Red::sumsq>(x, n); }
int64_t count_nonfinite_f32(const float* x, int64_t n) {
  return int64_t(reduce<Red::nonfinite>(x, n));
}

void gather_rows_scaled_f32(const float* src, int64_t n_src, const int32_t* rows, const float* w,
                            float* dst, int64_t M, int64_t C) {
  if (M <= 0 || C <= 0) return;
  if (C % 4 == 0 && aligned16(src) && aligned16(dst)) {
    const RowLaunch L = row_launch(M, C / 4);
    gather_rows_kernel<float4, true><<<L.blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(src), n_src, rows, reinterpret_cast<float4*>(dst), M,
        C / 4, L.lg, w);
  } else {
    const RowLaunch L = row_launch(M, C);
    gather_rows_kernel<float, true><<<L.blocks, kThreads, 0, stream()>>>(src, n_src, rows, dst,
                                                                         M, C, L.lg, w);
  }
  DS_CUDA_LAUNCHED();
}

void gather_rows_f32(const float* src, int64_t n_src, const int32_t* rows, float* dst, int64_t M,
                     int64_t C) {
  if (M <= 0 || C <= 0) return;
  if (C % 4 == 0 && aligned16(src) && aligned16(dst)) {
    const RowLaunch L = row_launch(M, C / 4);
    gather_rows_kernel<float4><<<L.blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(src), n_src, rows, reinterpret_cast<float4*>(dst), M,
        C / 4, L.lg);
  } else {
    const RowLaunch L = row_launch(M, C);
    gather_rows_kernel<float><<<L.blocks, kThreads, 0, stream()>>>(src, n_src, rows, dst, M, C,
                                                                   L.lg);
  }
  DS_CUDA_LAUNCHED();
}

template <bool SET>
static void scatter_rows(const float* src, const int32_t* rows, const float* w, float* dst,
                         int64_t n_dst, int64_t M, int64_t C) {
  if (M <= 0 || C <= 0) return;
  if (C % 4 == 0 && aligned16(src) && aligned16(dst)) {
    const RowLaunch L = row_launch(M, C / 4);
    scatter_rows_kernel<float4, SET><<<L.blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(src), rows, w, reinterpret_cast<float4*>(dst), n_dst, M,
        C / 4, L.lg);
  } else {
    const RowLaunch L = row_launch(M, C);
    scatter_rows_kernel<float, SET><<<L.blocks, kThreads, 0, stream()>>>(src, rows, w, dst, n_dst,
                                                                          M, C, L.lg);
  }
  DS_CUDA_LAUNCHED();
}

void scatter_add_rows_f32(const float* src, const int32_t* rows, const float* w, float* dst,
                          int64_t n_dst, int64_t M, int64_t C) {
  scatter_rows<false>(src, rows, w, dst, n_dst, M, C);
}

void set_rows_f32(const float* src, const int32_t* rows, float* dst, int64_t n_dst, int64_t M,
                  int64_t C) {
  scatter_rows<true>(src, rows, nullptr, dst, n_dst, M, C);
}

void set_rows_bf16(const uint16_t* src, const int32_t* rows, uint16_t* dst, int64_t n_dst,
                   int64_t M, int64_t C) {
  if (M <= 0 || C <= 0) return;
  const auto a8 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 7u) == 0; };
  if (C % 4 == 0 && a8(src) && a8(dst)) {
    const RowLaunch L = row_launch(M, C / 4);
    set_rows_bf16_kernel<uint2, uint2><<<L.blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const uint2*>(src), rows, reinterpret_cast<uint2*>(dst), n_dst, M, C / 4,
        L.lg);
  } else {
    const RowLaunch L = row_launch(M, C);
    set_rows_bf16_kernel<uint16_t, uint16_t><<<L.blocks, kThreads, 0, stream()>>>(
        src, rows, dst, n_dst, M, C, L.lg);
  }
  DS_CUDA_LAUNCHED();
}

void set_rows_f32_bf16(const float* src, const int32_t* rows, uint16_t* dst, int64_t n_dst,
                       int64_t M, int64_t C) {
  if (M <= 0 || C <= 0) return;
  if (C % 4 == 0 && aligned16(src) && (reinterpret_cast<uintptr_t>(dst) & 7u) == 0) {
    const RowLaunch L = row_launch(M, C / 4);
    set_rows_bf16_kernel<float4, uint2><<<L.blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(src), rows, reinterpret_cast<uint2*>(dst), n_dst, M,
        C / 4, L.lg);
  } else {
    const RowLaunch L = row_launch(M, C);
    set_rows_bf16_kernel<float, uint16_t><<<L.blocks, kThreads, 0, stream()>>>(
        src, rows, dst, n_dst, M, C, L.lg);
  }
  DS_CUDA_LAUNCHED();
}

void gather_rows_dot_f32(const float* a, int64_t n_a, const int32_t* rows, const float* b,
                         float* out, int64_t M, int64_t C) {
  if (M <= 0) return;
  const unsigned blocks = unsigned(std::min<int64_t>(cdiv(M, kThreads / 32), int64_t(sms()) * 64));
  if (C % 4 == 0 && aligned16(a) && aligned16(b)) {
    gather_rows_dot_kernel<float4><<<blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(a), n_a, rows, reinterpret_cast<const float4*>(b), out, M,
        C / 4);
  } else {
    gather_rows_dot_kernel<float><<<blocks, kThreads, 0, stream()>>>(a, n_a, rows, b, out, M, C);
  }
  DS_CUDA_LAUNCHED();
}

template <bool SPLIT>
static void split_concat(float* x, float* a, float* b, int64_t R, int64_t A, int64_t B) {
  if (R <= 0 || A + B <= 0) return;
  const bool vec = A % 4 == 0 && B % 4 == 0 && aligned16(x) && aligned16(a) && aligned16(b);
  const int64_t V = vec ? 4 : 1, total = R * (A + B) / V;
  const unsigned blocks = flat_blocks(total);
  if (vec) {
    auto *x4 = reinterpret_cast<float4*>(x), *a4 = reinterpret_cast<float4*>(a),
         *b4 = reinterpret_cast<float4*>(b);
    if (fits31(total))
      split_concat_kernel<float4, uint32_t, SPLIT><<<blocks, kThreads, 0, stream()>>>(
          x4, a4, b4, uint32_t(R), uint32_t(A / 4), uint32_t(B / 4));
    else
      split_concat_kernel<float4, int64_t, SPLIT><<<blocks, kThreads, 0, stream()>>>(
          x4, a4, b4, R, A / 4, B / 4);
  } else {
    if (fits31(total))
      split_concat_kernel<float, uint32_t, SPLIT><<<blocks, kThreads, 0, stream()>>>(
          x, a, b, uint32_t(R), uint32_t(A), uint32_t(B));
    else
      split_concat_kernel<float, int64_t, SPLIT><<<blocks, kThreads, 0, stream()>>>(x, a, b, R, A,
                                                                                    B);
  }
  DS_CUDA_LAUNCHED();
}

void split_last_f32(const float* x, float* a, float* b, int64_t R, int64_t A, int64_t B) {
  split_concat<true>(const_cast<float*>(x), a, b, R, A, B);   // x only read
}

void concat_last_f32(const float* a, const float* b, float* x, int64_t R, int64_t A, int64_t B) {
  split_concat<false>(x, const_cast<float*>(a), const_cast<float*>(b), R, A, B);   // a, b only read
}

void broadcast_heads_f32(const float* x, float* out, int64_t N, int64_t H, int64_t D) {
  if (N <= 0 || H <= 0 || D <= 0) return;
  const bool vec = D % 4 == 0 && aligned16(x) && aligned16(out);
  const int64_t V = vec ? 4 : 1, Dv = D / V, total = N * H * Dv;
  const unsigned blocks = flat_blocks(total);
  if (vec) {
    auto* x4 = reinterpret_cast<const float4*>(x);
    auto* o4 = reinterpret_cast<float4*>(out);
    if (fits31(total))
      broadcast_heads_kernel<float4, uint32_t><<<blocks, kThreads, 0, stream()>>>(
          x4, o4, uint32_t(N), uint32_t(H), uint32_t(Dv));
    else
      broadcast_heads_kernel<float4, int64_t><<<blocks, kThreads, 0, stream()>>>(x4, o4, N, H, Dv);
  } else {
    if (fits31(total))
      broadcast_heads_kernel<float, uint32_t><<<blocks, kThreads, 0, stream()>>>(
          x, out, uint32_t(N), uint32_t(H), uint32_t(Dv));
    else
      broadcast_heads_kernel<float, int64_t><<<blocks, kThreads, 0, stream()>>>(x, out, N, H, Dv);
  }
  DS_CUDA_LAUNCHED();
}

void sum_heads_f32(const float* dout, float* dx, int64_t N, int64_t H, int64_t D) {
  if (N <= 0 || D <= 0) return;
  const bool vec = D % 4 == 0 && aligned16(dout) && aligned16(dx);
  const int64_t V = vec ? 4 : 1, Dv = D / V, total = N * Dv;
  const unsigned blocks = flat_blocks(total);
  const bool small = fits31(N * H * Dv);
  if (vec) {
    auto* d4 = reinterpret_cast<const float4*>(dout);
    auto* x4 = reinterpret_cast<float4*>(dx);
    if (small)
      sum_heads_kernel<float4, uint32_t><<<blocks, kThreads, 0, stream()>>>(
          d4, x4, uint32_t(N), uint32_t(H), uint32_t(Dv));
    else
      sum_heads_kernel<float4, int64_t><<<blocks, kThreads, 0, stream()>>>(d4, x4, N, H, Dv);
  } else {
    if (small)
      sum_heads_kernel<float, uint32_t><<<blocks, kThreads, 0, stream()>>>(
          dout, dx, uint32_t(N), uint32_t(H), uint32_t(Dv));
    else
      sum_heads_kernel<float, int64_t><<<blocks, kThreads, 0, stream()>>>(dout, dx, N, H, Dv);
  }
  DS_CUDA_LAUNCHED();
}

namespace {
// float4 when every width is a multiple of 4 and the pointers allow it (codes: 8 bytes).
bool kv_vec(std::initializer_list<const void*> f32, const void* codes, int64_t Dn, int64_t Dr,
            int64_t Dv) {
  bool ok = Dn % 4 == 0 && Dr % 4 == 0 && Dv % 4 == 0;
  for (const void* p : f32) ok = ok && aligned16(p);
  return ok && (codes == nullptr || (reinterpret_cast<uintptr_t>(codes) & 7u) == 0);
}
template <class VT, class I, bool CODES>
void kv_split(const float* kv, const float* krot, void* k, void* v, int64_t N, int64_t H,
              int64_t Dn, int64_t Dr, int64_t Dv, int64_t V) {
  mla_kv_split_kernel<VT, I, CODES>
      <<<flat_blocks(N * H * (Dn + Dr + Dv) / V), kThreads, 0, stream()>>>(
          reinterpret_cast<const VT*>(kv), reinterpret_cast<const VT*>(krot), k, v, I(N), I(H),
          I(Dn / V), I(Dr / V), I(Dv / V));
}
template <class VT, class I, bool CODES>
void kv_split_bwd(const float* dk, const float* dv, void* dkv, float* dkrot, int64_t N, int64_t H,
                  int64_t Dn, int64_t Dr, int64_t Dv, int64_t V) {
  mla_kv_split_bwd_kernel<VT, I, CODES>
      <<<flat_blocks((N * H * (Dn + Dv) + N * Dr) / V), kThreads, 0, stream()>>>(
          reinterpret_cast<const VT*>(dk), reinterpret_cast<const VT*>(dv), dkv,
          reinterpret_cast<VT*>(dkrot), I(N), I(H), I(Dn / V), I(Dr / V), I(Dv / V));
}
}  // namespace

namespace {
// The kernel variant of a layout op: f(VT, I, C) with tag values of float4 rows (vec) or
// float, 32-bit indices (small) or 64-bit, and std::bool_constant<codes> outputs.
template <class F>
void kv_variant(bool vec, bool small, bool codes, F&& f) {
  const auto by_codes = [&](auto vt, auto it) {
    if (codes) f(vt, it, std::true_type{});
    else f(vt, it, std::false_type{});
  };
  if (vec && small) by_codes(float4{}, uint32_t{});
  else if (vec) by_codes(float4{}, int64_t{});
  else if (small) by_codes(float{}, uint32_t{});
  else by_codes(float{}, int64_t{});
}
}  // namespace

void mla_kv_split_f32(const float* kv, const float* krot, void* k, void* v, bool codes,
                      int64_t N, int64_t H, int64_t Dn, int64_t Dr, int64_t Dv) {
  if (N <= 0 || H <= 0) return;
  const bool vec = codes ? kv_vec({kv, krot}, k, Dn, Dr, Dv) && kv_vec({}, v, Dn, Dr, Dv)
                         : kv_vec({kv, krot, k, v}, nullptr, Dn, Dr, Dv);
  const int64_t V = vec ? 4 : 1;
  kv_variant(vec, fits31(N * H * (Dn + Dr + Dv)), codes, [&](auto vt, auto it, auto ct) {
    kv_split<decltype(vt), decltype(it), decltype(ct)::value>(kv, krot, k, v, N, H, Dn, Dr, Dv,
                                                              V);
  });
  DS_CUDA_LAUNCHED();
}

void mla_kv_split_backward_f32(const float* dk, const float* dv, float* dkv_f32,
                               uint16_t* dkv_codes, float* dkrot, int64_t N, int64_t H,
                               int64_t Dn, int64_t Dr, int64_t Dv) {
  if (N <= 0) return;
  if (H <= 0) {   // a sum over no heads, as the reference
    DS_CUDA_CHECK(cudaMemsetAsync(dkrot, 0, size_t(N * Dr) * sizeof(float), stream()));
    return;
  }
  const bool codes = dkv_codes != nullptr;
  void* dkv = codes ? static_cast<void*>(dkv_codes) : static_cast<void*>(dkv_f32);
  const bool vec = codes ? kv_vec({dk, dv, dkrot}, dkv_codes, Dn, Dr, Dv)
                         : kv_vec({dk, dv, dkrot, dkv_f32}, nullptr, Dn, Dr, Dv);
  const int64_t V = vec ? 4 : 1;
  kv_variant(vec, fits31(N * H * (Dn + Dr + Dv)), codes, [&](auto vt, auto it, auto ct) {
    kv_split_bwd<decltype(vt), decltype(it), decltype(ct)::value>(dk, dv, dkv, dkrot, N, H, Dn,
                                                                  Dr, Dv, V);
  });
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
