// The row-softmax losses' kernels (declared through kernels/cross_entropy.cuh: cross-entropy
// forward / backward / fused, the per-token log-probabilities with entropy and their
// backward): included by kernels/cross_entropy.cu, which launches them, and by the host
// emulation test tests/kernels/test_emu_cross_entropy.cpp, which runs this same source on a
// CPU against the reference. Plain CUDA C++ without inline PTX, so that the emulator
// (tests/kernels/cuda_emu.hpp) can run it; the launch shape (use_vec4, row_threads, row_grid)
// is host code here too.
//
// One block per row (grid-stride over rows). Pass 1 reads each logit once and keeps an online
// (max m, sum of exp(x - m), sum of exp(x - m)(x - m)) per thread, rescaling when the max
// grows, so lse needs a single read of the row (V = 129280 for DeepSeek-V3); the per-thread
// states are merged over the block. Pass 2 (gradients) reads the row again (mostly from L2:
// a 129280-float row is 517 KB) and writes p = exp((x - m) - log z). Keeping (x - m) and
// log z apart instead of forming lse = m + log z first keeps the loss and p accurate when the
// logits are large (|x| ~ 80): the error is relative to |x - m|, not to |m|; and z - 1 is
// summed apart from the max's 1 (see Stats) so near-deterministic rows keep tiny losses.
// Float throughout (the reference works in double): the per-thread sums hold ~V/1024 terms.
// NaN/inf follow the reference: a NaN or +inf logit, or an all -inf row, make lse NaN. (One
// deliberate difference: a -inf logit adds 0 to the entropy; the reference's 0 * -inf is NaN.)
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "kernels/bf16_io.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::rowsoftmax {
namespace {

// Running max before the first element: -FLT_MAX rather than -inf so that a -inf logit takes
// the "not a new max" branch with exp(-inf) = 0 instead of exp(-inf - -inf) = NaN.
constexpr float kLowest = -FLT_MAX;

// Softmax statistics of a set of logits relative to its max m. The max itself contributes
// exactly 1 to z = sum exp(x - m), which is kept apart: zr = z - 1 is the sum over the other
// elements, so that log z = log1p(zr) and the loss of a confidently right row (z = 1 + 1e-13)
// keep their tiny values instead of rounding to 0. zr = -1 (z = 0) means "no element yet".
// For the entropy, s = sum exp(x - m) (x - m) (the max adds 0). m is never NaN.
struct Stats {
  float m, zr, s;
};
constexpr Stats kEmpty{kLowest, -1.f, 0.f};

template <bool ENT>
__device__ __forceinline__ void push(Stats& st, float x) {
  if (x > st.m) {   // new max (NaN never compares greater): the old elements shift by d
    const float d = st.m - x;   // < 0
    const float a = expf(d);
    if (ENT) st.s = st.zr > -1.f ? a * (st.s + d * (st.zr + 1.f)) : 0.f;
    st.zr = (st.zr + 1.f) * a;   // the old max joins the others; the new one is the unit
    st.m = x;
  } else {
    const float t = x - st.m;
    const float e = expf(t);
    st.zr += e;
    if (ENT) st.s += e > 0.f ? e * t : 0.f;   // x = -inf: e = 0 but t = -inf
  }
}

// Written from the larger max's side, so merge(a, b) and merge(b, a) give the same bits and
// every lane of a butterfly ends with the same state.
template <bool ENT>
__device__ __forceinline__ Stats merge(const Stats& a, const Stats& b) {
  if (b.zr == -1.f) return a;
  if (a.zr == -1.f) return b;
  if (a.m == b.m) return Stats{a.m, (a.zr + b.zr) + 1.f, ENT ? a.s + b.s : 0.f};
  const Stats& hi = a.m > b.m ? a : b;
  const Stats& lo = a.m > b.m ? b : a;
  const float d = lo.m - hi.m;   // < 0 (NaN for inf - inf: then lse is NaN anyway)
  const float e = expf(d);
  Stats r;
  r.m = hi.m;
  r.zr = hi.zr + (lo.zr + 1.f) * e;
  r.s = ENT ? hi.s + (e > 0.f ? e * (lo.s + d * (lo.zr + 1.f)) : 0.f) : 0.f;
  return r;
}

template <bool ENT>
__device__ __forceinline__ void warp_merge(Stats& st) {
  for (int o = 16; o > 0; o >>= 1) {
    Stats b;
    b.m = __shfl_xor_sync(0xffffffffu, st.m, o);
    b.zr = __shfl_xor_sync(0xffffffffu, st.zr, o);
    b.s = ENT ? __shfl_xor_sync(0xffffffffu, st.s, o) : 0.f;
    st = merge<ENT>(st, b);
  }
}

// Merge over the block; every thread gets the same (warp 0's) result. sh holds 33 Stats.
template <bool ENT>
__device__ Stats block_stats(Stats st, Stats* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  warp_merge<ENT>(st);
  if (lane == 0) sh[w] = st;
  __syncthreads();
  if (w == 0) {
    st = lane < nw ? sh[lane] : kEmpty;
    warp_merge<ENT>(st);
    if (lane == 0) sh[32] = st;
  }
  __syncthreads();
  return sh[32];
}

struct RowArgs {
  const float* x;           // (N, V)
  const int32_t* tg;        // (N)
  int64_t N;
  int V;
  float scale;              // gradient scale (cross-entropy)
  float* loss;              // (N) lse - x[t], or null
  float* logp;              // (N) x[t] - lse, or null
  float* lse;               // (N) or null
  float* ent;               // (N) or null (ENT)
  float* dx;                // (N, V) (GRAD); may equal x
  uint16_t* dxc;            // (N, V) (GRAD with CODES): the gradient as BF16 codes instead
};

// Loads of VEC consecutive floats (VEC = 4 needs V % 4 == 0 and 16-byte aligned rows).
template <int VEC>
struct Vec;
template <>
struct Vec<1> {
  using T = float;
  __device__ static float get(const T& v, int) { return v; }
  __device__ static void set(T& v, int, float f) { v = f; }
};
template <>
struct Vec<4> {
  using T = float4;
  __device__ static float get(const T& v, int c) {
    return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w;
  }
  __device__ static void set(T& v, int c, float f) {
    if (c == 0) v.x = f;
    else if (c == 1) v.y = f;
    else if (c == 2) v.z = f;
    else v.w = f;
  }
};

template <int VEC>
__device__ __forceinline__ void zero_row(float* d, int V) {
  using T = typename Vec<VEC>::T;
  T z;
  for (int c = 0; c < VEC; ++c) Vec<VEC>::set(z, c, 0.f);
  T* d4 = reinterpret_cast<T*>(d);
  for (int i = threadIdx.x; i < V / VEC; i += blockDim.x) d4[i] = z;
}
__device__ __forceinline__ void zero_row_codes(uint16_t* d, int V) {
  for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] = 0;
}
// Element group i of a gradient row: F32, or (CODES) BF16 codes rounded as bf16_round (VEC 4:
// one 8-byte store; the rows of V % 4 == 0 codes start 8-byte aligned when the buffer does).
template <int VEC, bool CODES>
__device__ __forceinline__ void store_grad(float* d, uint16_t* dc, int i,
                                           const typename Vec<VEC>::T& o) {
  if constexpr (!CODES) reinterpret_cast<typename Vec<VEC>::T*>(d)[i] = o;
  else if constexpr (VEC == 4) store_bf16x4<true>(dc, i, o);
  else dc[i] = f32_to_bf16(o);
}

// One block per row: statistics pass, per-row outputs, then (GRAD) the gradient pass, into
// dx or (CODES) dxc.
template <int VEC, bool ENT, bool GRAD, bool CODES = false>
__global__ void __launch_bounds__(1024) row_softmax_kernel(RowArgs a) {
  using T = typename Vec<VEC>::T;
  __shared__ Stats sh[33];
  const int V = a.V, nv = a.V / VEC;
  for (int64_t n = blockIdx.x; n < a.N; n += gridDim.x) {
    const float* r = a.x + n * V;
    float* d = GRAD && !CODES ? a.dx + n * V : nullptr;
    uint16_t* dc = GRAD && CODES ? a.dxc + n * V : nullptr;
    const int32_t t = a.tg[n];
    if (t < 0 || t >= V) {   // ignored (or bad) target: uniform over the block
      if (threadIdx.x == 0) {
        if (a.loss) a.loss[n] = 0.f;
        if (a.logp) a.logp[n] = 0.f;
        if (a.lse) a.lse[n] = 0.f;
        if (ENT && a.ent) a.ent[n] = 0.f;
      }
      if (GRAD && CODES) zero_row_codes(dc, V);
      else if (GRAD) zero_row<VEC>(d, V);
      continue;
    }
    const float xt = r[t];   // read before d (maybe r itself) is overwritten
    Stats st = kEmpty;
    const T* r4 = reinterpret_cast<const T*>(r);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
      const T v = r4[i];
#pragma unroll
      for (int c = 0; c < VEC; ++c) push<ENT>(st, Vec<VEC>::get(v, c));
    }
    st = block_stats<ENT>(st, sh);
    // The reference's lse is NaN for a +inf logit (inf - inf) and for an all -inf row.
    const bool bad = st.m == INFINITY || !(st.zr > -1.f);
    const float m = st.m, lz = bad ? NAN : log1pf(st.zr);
    if (threadIdx.x == 0) {
      if (a.loss) a.loss[n] = (m - xt) + lz;
      if (a.logp) a.logp[n] = (xt - m) - lz;
      if (a.lse) a.lse[n] = m + lz;
      if (ENT && a.ent) a.ent[n] = lz - st.s / (st.zr + 1.f);
    }
    if (GRAD) {
      const float scale = a.scale;
      for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        const T v = r4[i];
        T o;
#pragma unroll
        for (int c = 0; c < VEC; ++c) {
          // p - 1 at the target through expm1: p ~ 1 there when the row is confident
          const float arg = (Vec<VEC>::get(v, c) - m) - lz;
          Vec<VEC>::set(o, c, (i * VEC + c == t ? expm1f(arg) : expf(arg)) * scale);
        }
        store_grad<VEC, CODES>(d, dc, i, o);
      }
    }
  }
}

// dlogits = dlogp * (onehot - exp(x - lse)); one block per row; into dx or (CODES) dxc.
template <int VEC, bool CODES>
__global__ void __launch_bounds__(1024)
    logprob_backward_kernel(const float* x, const int32_t* tg, const float* lse,
                            const float* dlogp, int64_t N, int V, float* dx, uint16_t* dxc) {
  using T = typename Vec<VEC>::T;
  const int nv = V / VEC;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    float* d = CODES ? nullptr : dx + n * V;
    uint16_t* dc = CODES ? dxc + n * V : nullptr;
    const int32_t t = tg[n];
    if (t < 0 || t >= V) {
      if (CODES) zero_row_codes(dc, V);
      else zero_row<VEC>(d, V);
      continue;
    }
    const float c = dlogp[n], l = lse[n];
    const T* r4 = reinterpret_cast<const T*>(x + n * V);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
      const T v = r4[i];
      T o;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float p = expf(Vec<VEC>::get(v, k) - l);
        Vec<VEC>::set(o, k, c * ((i * VEC + k == t ? 1.f : 0.f) - p));
      }
      store_grad<VEC, CODES>(d, dc, i, o);
    }
  }
}

inline bool aligned16(const void* p) {
  return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// float4 rows when every row start is 16-byte aligned.
inline bool use_vec4(int64_t V, const void* a, const void* b) {
  return V % 4 == 0 && aligned16(a) && aligned16(b);
}

// Enough threads for ~8 loads each, 32..1024.
inline int row_threads(int64_t items) {
  int t = 32;
  while (t < 1024 && int64_t(t) * 8 < items) t *= 2;
  return t;
}

inline unsigned row_grid(int64_t N) { return unsigned(N < (1 << 20) ? N : (1 << 20)); }

}  // namespace
}  // namespace ds::cuda::rowsoftmax
