// The kernels of RMSNorm forward/backward and interleaved RoPE (ops::rmsnorm_*, ops::rope*
// on the GPU, launched by kernels/norm_rope.cu and declared in kernels/elementwise.cuh), also
// included by the host emulation test tests/kernels/test_emu_norm_rope.cpp, which runs this
// same source on a CPU against the reference. Plain CUDA C++ without inline PTX, so that the
// emulator (tests/kernels/cuda_emu.hpp) can run it.
//
// Precision follows the references (lib/ops/cpu/ref_norm.cpp, ref_rope.cpp): RMSNorm
// statistics and the per-element products in double (FP64 is cheap next to the memory traffic
// on H100/H200), RoPE angles rounded to FP32 then cos/sin in double. Explicit
// __dmul_rn/__dsub_rn keep nvcc from fusing into FMAs the expressions the reference evaluates
// unfused (lib/ops is built with -ffp-contract=off), so results are normally bit-identical to
// the reference apart from the order of the row sums. One more difference: the RMSNorm weight
// gradient dg sums its per-row terms in double and rounds once (the reference rounds each
// row's term to FP32 and accumulates in FP32), so over many rows its last bits differ and it
// is the more accurate of the two; tests compare it with a tolerance.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/bf16_io.cuh"
#include "kernels/shared_mem.cuh"
#include "kernels/warp_reduce.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::normrope {
namespace {

// ---- the launchers' host-side choices (kernels/norm_rope.cu) --------------------------------
inline bool aligned_to(const void* p, unsigned a) {
  return reinterpret_cast<uintptr_t>(p) % a == 0;
}
// float4 rows in a forward: C % 4 == 0 and every row pointer aligned (rows of C % 4 == 0
// codes start 8-byte aligned when y does); a and h only with the fused residual add.
inline bool rmsnorm_fwd_vec(int64_t C, const void* x, const void* a, const void* h,
                            const void* g, const void* y, bool codes, bool add) {
  return C % 4 == 0 && aligned_to(x, 16) && aligned_to(g, 16) && aligned_to(y, codes ? 8 : 16) &&
         (!add || (aligned_to(a, 16) && aligned_to(h, 16)));
}
// The same for a backward (null outputs and residual not checked).
inline bool rmsnorm_bwd_vec(int64_t C, const void* x, const void* g, const void* dy,
                            const void* dx, const void* res, const void* dxc) {
  return C % 4 == 0 && aligned_to(x, 16) && aligned_to(g, 16) && aligned_to(dy, 16) &&
         (!dx || aligned_to(dx, 16)) && (!res || aligned_to(res, 16)) &&
         (!dxc || aligned_to(dxc, 8));
}
// RoPE's head chunks: heads split only when the N * P (row, pair) items alone leave `target`
// threads (2,048 per SM) underfilled; nhc chunks of hchunk heads.
struct RopeChunks {
  int64_t nhc, hchunk;
};
inline RopeChunks rope_chunks(int64_t N, int64_t H, int64_t P, int64_t target) {
  const int64_t pairs = N * P;
  int64_t nhc = (target + pairs - 1) / pairs;
  nhc = nhc < 1 ? 1 : nhc > H ? H : nhc;
  const int64_t hchunk = (H + nhc - 1) / nhc;
  return {(H + hchunk - 1) / hchunk, hchunk};
}

// Row vectors: VT = float4 (C % 4 == 0 and aligned rows) or float.
template <class VT> struct Vec;
template <> struct Vec<float> {
  static constexpr int n = 1;
  __device__ static float get(const float& v, int) { return v; }
  __device__ static void set(float& v, int, float x) { v = x; }
};
template <> struct Vec<float4> {
  static constexpr int n = 4;
  __device__ static float get(const float4& v, int j) {
    return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
  }
  __device__ static void set(float4& v, int j, float x) {
    if (j == 0) v.x = x; else if (j == 1) v.y = x; else if (j == 2) v.z = x; else v.w = x;
  }
};

// Threads per row block: about 4 vectors per thread, 64..512 threads.
inline int row_threads(int64_t Cv) {
  const int64_t t = (((Cv + 3) / 4 + 31) / 32) * 32;
  return int(t < 64 ? 64 : t > 512 ? 512 : t);
}

// ---- RMSNorm forward: one block per row (grid-stride over rows) --------------------------------
// No __restrict__ on x/y: y may be x (each element is read before the same thread writes it).
// CODES: y holds BF16 codes (RNE, as bf16_round of the F32 result; the next GEMM's operand).
// ADD: the residual add fused in front: h = x + a (F32, written in the first pass; h may be x
// or a), normalised as x is otherwise; the second pass reads h back (this thread's own writes).
template <class VT, bool CODES, bool ADD>
__global__ void rmsnorm_fwd_kernel(const float* x, const float* a, float* h,
                                   const float* __restrict__ g, double eps, void* y,
                                   float* __restrict__ rstd, int64_t N, int Cv, int C) {
  using V = Vec<VT>;
  __shared__ double sh[32];
  const VT* g4 = reinterpret_cast<const VT*>(g);
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const VT* xr = reinterpret_cast<const VT*>((ADD ? h : x) + n * C);   // the normalised rows
    double ss = 0;
    for (int c = threadIdx.x; c < Cv; c += blockDim.x) {
      VT v;
      if constexpr (ADD) {
        const VT xv = reinterpret_cast<const VT*>(x + n * C)[c];
        const VT av = reinterpret_cast<const VT*>(a + n * C)[c];
#pragma unroll
        for (int j = 0; j < V::n; ++j) V::set(v, j, V::get(xv, j) + V::get(av, j));
        reinterpret_cast<VT*>(h + n * C)[c] = v;
      } else {
        v = xr[c];
      }
#pragma unroll
      for (int j = 0; j < V::n; ++j) {
        const double d = V::get(v, j);
        ss = __dadd_rn(ss, __dmul_rn(d, d));   // unfused, as the reference
      }
    }
    ss = block_sum_d(ss, sh);
    const double r = 1.0 / sqrt(ss / double(C) + eps);
    if (threadIdx.x == 0) rstd[n] = float(r);
    for (int c = threadIdx.x; c < Cv; c += blockDim.x) {
      const VT v = xr[c], gv = g4[c];
      VT o;
#pragma unroll
      for (int j = 0; j < V::n; ++j)
        V::set(o, j, float(__dmul_rn(__dmul_rn(double(V::get(v, j)), r), double(V::get(gv, j)))));
      if constexpr (!CODES) {
        reinterpret_cast<VT*>(static_cast<float*>(y) + n * C)[c] = o;
      } else {
        uint16_t* yr = static_cast<uint16_t*>(y) + n * C;
        if constexpr (V::n == 4) store_bf16x4<true>(yr, c, o);
        else yr[c] = f32_to_bf16(o);
      }
    }
  }
}

// ---- RMSNorm backward ---------------------------------------------------------------------------
// Blocks take rows n = blockIdx.x, + gridDim.x, ...; dx per row as the reference; each thread
// owns fixed columns and adds their dg terms into a double accumulator (shared memory, laid out
// component-major so a warp touches consecutive words, or this block's row of `partial` when C
// is too large for shared memory). The block's sums land in partial (nb, C), reduced in block
// order by rmsnorm_dg_reduce_kernel: no atomics, the same bits on every run.
// RES: the residual gradient added in the same pass, dx = res + (the norm's dx), each term
// rounded to F32 first (bit for bit the unfused add). OUT: what is written, kOutF32 (dx),
// kOutCodes (dxc: BF16 codes, RNE of the F32 result, the next Linear's gradient operand) or both.
constexpr int kOutF32 = 1, kOutCodes = 2;
template <class VT, bool RES, int OUT>
__global__ void rmsnorm_bwd_kernel(const float* x, const float* __restrict__ g,
                                   const float* __restrict__ rstd, const float* dy,
                                   const float* res, float* dx, uint16_t* __restrict__ dxc,
                                   double* __restrict__ partial, int64_t N, int Cv, int C,
                                   bool smem_acc) {
  using V = Vec<VT>;
  DS_DYNAMIC_SHARED(sacc_bytes);   // C doubles when smem_acc
  double* sacc = reinterpret_cast<double*>(sacc_bytes);
  __shared__ double sh[32];
  double* acc = smem_acc ? sacc : partial + int64_t(blockIdx.x) * C;
  auto ai = [&](int cv, int j) { return smem_acc ? j * Cv + cv : cv * V::n + j; };
  for (int c = threadIdx.x; c < Cv; c += blockDim.x)
#pragma unroll
    for (int j = 0; j < V::n; ++j) acc[ai(c, j)] = 0.0;

  const VT* g4 = reinterpret_cast<const VT*>(g);
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const VT* xr = reinterpret_cast<const VT*>(x + n * C);
    const VT* dyr = reinterpret_cast<const VT*>(dy + n * C);
    const double r = double(rstd[n]);
    double dot = 0;   // sum_c x * g * dy
    for (int c = threadIdx.x; c < Cv; c += blockDim.x) {
      const VT xv = xr[c], gv = g4[c], dv = dyr[c];
#pragma unroll
      for (int j = 0; j < V::n; ++j)
        dot = __dadd_rn(dot, __dmul_rn(__dmul_rn(double(V::get(xv, j)), double(V::get(gv, j))),
                                       double(V::get(dv, j))));   // unfused, as the reference
    }
    dot = block_sum_d(dot, sh);   // also orders every read of the row before the writes below
    const double k = r * r * r * dot / double(C);
    for (int c = threadIdx.x; c < Cv; c += blockDim.x) {
      const VT xv = xr[c], gv = g4[c], dv = dyr[c];
      VT o;
#pragma unroll
      for (int j = 0; j < V::n; ++j) {
        const double xd = V::get(xv, j), gd = V::get(gv, j), dd = V::get(dv, j);
        V::set(o, j, float(__dsub_rn(__dmul_rn(__dmul_rn(r, gd), dd), __dmul_rn(k, xd))));
        acc[ai(c, j)] += __dmul_rn(__dmul_rn(dd, xd), r);
      }
      if constexpr (RES) {
        const VT rv = reinterpret_cast<const VT*>(res + n * C)[c];
#pragma unroll
        for (int j = 0; j < V::n; ++j) V::set(o, j, V::get(rv, j) + V::get(o, j));
      }
      if constexpr ((OUT & kOutF32) != 0) reinterpret_cast<VT*>(dx + n * C)[c] = o;
      if constexpr ((OUT & kOutCodes) != 0) {
        if constexpr (V::n == 4) store_bf16x4<true>(dxc + n * C, c, o);
        else dxc[n * C + c] = f32_to_bf16(o);
      }
    }
  }
  if (smem_acc) {
    double* out = partial + int64_t(blockIdx.x) * C;
    for (int c = threadIdx.x; c < Cv; c += blockDim.x)
#pragma unroll
      for (int j = 0; j < V::n; ++j) out[c * V::n + j] = sacc[j * Cv + c];
  }
}

// dg[c] += sum_b partial[b, c]: 32 columns x kDgLanes partial-row lanes per block, a fixed
// order. With nb ~ 4 x 132 partial rows and C / 32 blocks (32 at C = 1024) most SMs are idle,
// so each lane's chain of dependent additions is what the kernel waits for: 32 lanes (not 8)
// make it ~17 additions long.
constexpr int kDgLanes = 32;
__global__ void rmsnorm_dg_reduce_kernel(const double* __restrict__ partial, int nb,
                                         float* __restrict__ dg, int C) {
  __shared__ double sh[kDgLanes][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * 32 + tx;
  double s = 0;
  if (c < C)
    for (int b = ty; b < nb; b += kDgLanes) s += partial[int64_t(b) * C + c];
  sh[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && c < C) {
    double t = 0;
    for (int k = 0; k < kDgLanes; ++k) t += sh[k][tx];
    dg[c] = float(double(dg[c]) + t);
  }
}

// ---- RoPE ----------------------------------------------------------------------------------
// The pieces of a rotation, shared by rope_kernel and rope_tail_codes_kernel (the same bits):
// the FP32 angle pos * freq with its sincos in double (s negated for the backward), a pair
// (2e, 2e + 1) of x read (VEC2: as one float2), and the pair rotated in double, FP32 out.
__device__ __forceinline__ void pair_sincos(int32_t pos, float freq, double dir, double& s,
                                            double& c) {
  const float ang = __fmul_rn(float(pos), freq);   // FP32 angle, as the reference
  sincos(double(ang), &s, &c);
  s *= dir;
}
template <bool VEC2>
__device__ __forceinline__ void load_pair(const float* x, int64_t e, double& x0, double& x1) {
  if constexpr (VEC2) {
    const float2 v = reinterpret_cast<const float2*>(x)[e];
    x0 = v.x;
    x1 = v.y;
  } else {
    x0 = x[2 * e];
    x1 = x[2 * e + 1];
  }
}
__device__ __forceinline__ void rotate_pair(double x0, double x1, double c, double s, float& o0,
                                            float& o1) {
  o0 = float(__dsub_rn(__dmul_rn(x0, c), __dmul_rn(x1, s)));
  o1 = float(__dadd_rn(__dmul_rn(x0, s), __dmul_rn(x1, c)));
}

// One thread per (row n, chunk of heads, pair i): the angle's sincos (double, the costly part)
// is shared by the heads of the chunk; chunks only split heads when there are too few
// (n, i) pairs to fill the GPU. Consecutive threads take consecutive pairs of a head row.
// No __restrict__: out may be x.
template <bool VEC2>
__global__ void rope_kernel(const float* x, const int32_t* __restrict__ pos,
                            const float* __restrict__ freqs, float* out, int64_t N, int H, int P,
                            int hchunk, int nhc, double dir, int64_t row, int64_t off) {
  const int64_t total = N * nhc * P;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int i = int(t % P);
    const int64_t q = t / P;
    const int hc = int(q % nhc);
    const int64_t n = q / nhc;
    double s, c;
    pair_sincos(pos[n], freqs[i], dir, s, c);
    const int h1 = min(H, (hc + 1) * hchunk);
    for (int h = hc * hchunk; h < h1; ++h) {
      const int64_t e = ((n * H + h) * row + off) / 2 + i;   // pair index (row, off even)
      double x0, x1;
      load_pair<VEC2>(x, e, x0, x1);
      float o0, o1;
      rotate_pair(x0, x1, c, s, o0, o1);
      if constexpr (VEC2) {
        reinterpret_cast<float2*>(out)[e] = make_float2(o0, o1);
      } else {
        out[2 * e] = o0;
        out[2 * e + 1] = o1;
      }
    }
  }
}

// The rotation of rope_kernel (the same FP32 angle, double sincos and products) over the
// tails of (n, h) rows of D, the other pairs copied, every element written as its BF16 code:
// one thread per (row n, pair j of a head row) for all H heads (the sincos, the costly part,
// once per n and j), consecutive threads on consecutive pairs. VEC: x 8-byte and out 4-byte
// aligned (a pair read as a float2, its two codes stored as one word).
template <bool VEC>
__global__ void rope_tail_codes_kernel(const float* __restrict__ x,
                                       const int32_t* __restrict__ pos,
                                       const float* __restrict__ freqs,
                                       uint16_t* __restrict__ out, int64_t N, int H, int Ph,
                                       int P0, double dir) {
  const int64_t total = N * Ph;   // (n, j)
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int j = int(t % Ph);
    const int64_t n = t / Ph;
    const bool rot = j >= P0;
    double s = 0, c = 1;
    if (rot) pair_sincos(pos[n], freqs[j - P0], dir, s, c);
    for (int h = 0; h < H; ++h) {
      const int64_t e = (n * H + h) * Ph + j;   // pair index
      double x0, x1;
      load_pair<VEC>(x, e, x0, x1);
      float o0 = float(x0), o1 = float(x1);
      if (rot) rotate_pair(x0, x1, c, s, o0, o1);
      const uint32_t lo = f32_to_bf16(o0), hi = f32_to_bf16(o1);
      if constexpr (VEC) {
        reinterpret_cast<uint32_t*>(out)[e] = lo | (hi << 16);
      } else {
        out[2 * e] = uint16_t(lo);
        out[2 * e + 1] = uint16_t(hi);
      }
    }
  }
}

}  // namespace
}  // namespace ds::cuda::normrope
