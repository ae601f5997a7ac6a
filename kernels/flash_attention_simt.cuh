// The exact FP32 SIMT attention kernels (forward, dQ pass, dK/dV pass; any head dims) and the
// two pre-passes every attention path runs (the segment bounds kfirst/klast and D = rowsum(dO *
// O)), with the kernels' dynamic shared memory sizes. Included by kernels/flash_attention_simt.cu,
// which launches them, and by the host emulation test tests/kernels/test_emu_attention_simt.cpp,
// which runs this same source on a CPU against the reference attention. Plain CUDA C++ without
// inline PTX (dynamic shared memory through DS_DYNAMIC_SHARED), so that the emulator
// (tests/kernels/cuda_emu.hpp) can run it; the algorithm is described in
// flash_attention_common.cuh.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/flash_attention_mask.cuh"
#include "kernels/shared_mem.cuh"
#include "kernels/warp_reduce.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::flash {
namespace {

// ---- preprocessing --------------------------------------------------------------------------
// One warp per token (b, t): kfirst = first j with seg[j] == seg[t], klast = last such j.
// Labels may repeat non-contiguously; typical packing costs (T - segment length) / 32 steps.
__global__ void seg_bounds_kernel(const int32_t* __restrict__ seg, int32_t* __restrict__ kfirst,
                                  int32_t* __restrict__ klast, int64_t BT, int T) {
  const int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= BT) return;   // warp-uniform
  const int t = int(w % T);
  const int32_t* sb = seg + (w - t);
  const int32_t s = sb[t];
  int first = t, last = t;
  for (int j0 = 0; j0 <= t; j0 += 32) {
    const int j = j0 + lane;
    const unsigned m = __ballot_sync(0xffffffffu, j <= t && sb[j] == s);
    if (m) { first = j0 + __ffs(m) - 1; break; }
  }
  for (int j0 = T - 1; j0 >= t; j0 -= 32) {
    const int j = j0 - lane;
    const unsigned m = __ballot_sync(0xffffffffu, j >= t && sb[j] == s);
    if (m) { last = j0 - (__ffs(m) - 1); break; }
  }
  if (lane == 0) { kfirst[w] = first; klast[w] = last; }
}

// D (B, H, T) = rowsum(dO * O); one warp per (b, t, h) row.
__global__ void attn_delta_kernel(const float* __restrict__ o, const float* __restrict__ dout,
                                  float* __restrict__ D, int64_t rows, int T, int H, int Dv) {
  const int64_t r = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  float acc = 0.f;
  for (int e = lane; e < Dv; e += 32) acc = fmaf(o[r * Dv + e], dout[r * Dv + e], acc);
  acc = warp_sum(acc);
  const int h = int(r % H);
  const int64_t bt = r / H, t = bt % T, b = bt / T;
  if (lane == 0) D[(b * H + h) * T + t] = acc;
}

// ---- exact FP32 SIMT kernels ------------------------------------------------------------------
constexpr int kSW = 4;          // warps per CTA
constexpr int kSR = 4;          // resident rows per warp
constexpr int kSB = kSW * kSR;  // resident rows per CTA
constexpr int kST = 32;         // streamed rows per tile (one per lane)

// rows [r0, r0 + n) of one head (row stride rs) -> dst (ROWS, ld), zero rows past nvalid.
__device__ __forceinline__ void load_rows(float* dst, int ld, const float* src, int64_t rs, int r0,
                                          int rows, int nvalid, int D) {
  for (int i = threadIdx.x; i < rows * D; i += blockDim.x) {
    const int r = i / D, d = i - r * D;
    dst[r * ld + d] = r < nvalid ? src[int64_t(r0 + r) * rs + d] : 0.f;
  }
}

// Forward. grid (cdiv(T, 16), B*H), 128 threads; smem: Q (16,Dk) O (16,Dv) K (32,Dk|1)
// V (32,Dv) P (16,32).
__global__ void __launch_bounds__(kSW * 32)
    simt_fwd_kernel(const float* __restrict__ q, const float* __restrict__ k,
                    const float* __restrict__ v, const int32_t* __restrict__ seg,
                    const int32_t* __restrict__ kfirst, float scale, float* __restrict__ out,
                    float* __restrict__ lse, int T, int H, int Dk, int Dv) {
  DS_DYNAMIC_SHARED(smem_bytes);
  float* const sm = reinterpret_cast<float*>(smem_bytes);
  __shared__ int bound;
  const int ks = Dk | 1;
  float* Qs = sm;
  float* Os = Qs + kSB * Dk;
  float* Ks = Os + kSB * Dv;
  float* Vs = Ks + kST * ks;
  float* Ps = Vs + kST * Dv;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kSB;   // heavy (late) blocks first
  const int64_t rq = int64_t(H) * Dk, rv = int64_t(H) * Dv;
  const int64_t head = int64_t(b) * T * H + h;          // row index of (b, 0, h)
  const int32_t* sb = seg ? seg + int64_t(b) * T : nullptr;
  const int klo = block_klo(kfirst, int64_t(b) * T, q0, T, kSB, &bound);
  load_rows(Qs, Dk, q + head * Dk, rq, q0, kSB, T - q0, Dk);
  for (int i = threadIdx.x; i < kSB * Dv; i += blockDim.x) Os[i] = 0.f;
  int t[kSR], st[kSR];
  float m[kSR], l[kSR];
#pragma unroll
  for (int i = 0; i < kSR; ++i) {
    t[i] = q0 + warp * kSR + i;
    st[i] = sb && t[i] < T ? sb[t[i]] : 0;
    m[i] = -INFINITY;
    l[i] = 0.f;
  }
  const int khi = min(q0 + kSB, T);
  for (int k0 = klo / kST * kST; k0 < khi; k0 += kST) {
    const int nk = min(kST, khi - k0);
    __syncthreads();   // the previous tile's readers are done
    load_rows(Ks, ks, k + head * Dk, rq, k0, kST, nk, Dk);
    load_rows(Vs, Dv, v + head * Dv, rv, k0, kST, nk, Dv);
    __syncthreads();
    float s[kSR] = {};
    const float* kr = Ks + lane * ks;
    for (int d = 0; d < Dk; ++d) {
      const float kv = kr[d];
#pragma unroll
      for (int i = 0; i < kSR; ++i) s[i] = fmaf(Qs[(warp * kSR + i) * Dk + d], kv, s[i]);
    }
    float alpha[kSR];
#pragma unroll
    for (int i = 0; i < kSR; ++i) {
      const bool vis = lane < nk && visible(t[i], k0 + lane, T, sb, st[i]);
      const float x = vis ? s[i] * scale : -INFINITY;
      const float mn = fmaxf(m[i], warp_max(x));
      const float p = vis ? expf(x - mn) : 0.f;
      alpha[i] = m[i] == -INFINITY ? 0.f : expf(m[i] - mn);
      l[i] = l[i] * alpha[i] + warp_sum(p);
      m[i] = mn;
      Ps[(warp * kSR + i) * kST + lane] = p;
    }
    __syncwarp();
    for (int e = lane; e < Dv; e += 32) {
      float o[kSR];
#pragma unroll
      for (int i = 0; i < kSR; ++i) o[i] = Os[(warp * kSR + i) * Dv + e] * alpha[i];
      for (int j = 0; j < nk; ++j) {
        const float vv = Vs[j * Dv + e];
#pragma unroll
        for (int i = 0; i < kSR; ++i) o[i] = fmaf(Ps[(warp * kSR + i) * kST + j], vv, o[i]);
      }
#pragma unroll
      for (int i = 0; i < kSR; ++i) Os[(warp * kSR + i) * Dv + e] = o[i];
    }
  }
#pragma unroll
  for (int i = 0; i < kSR; ++i) {
    if (t[i] >= T) continue;
    const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
    for (int e = lane; e < Dv; e += 32)
      out[(head + int64_t(t[i]) * H) * Dv + e] = Os[(warp * kSR + i) * Dv + e] * inv;
    if (lane == 0) lse[(int64_t(b) * H + h) * T + t[i]] = m[i] + logf(l[i]);
  }
}

// dQ pass. grid (cdiv(T, 16), B*H); smem: Q (16,Dk) dO (16,Dv) dQ (16,Dk) K (32,Dk|1)
// V (32,Dv|1) dS (16,32).
__global__ void __launch_bounds__(kSW * 32)
    simt_dq_kernel(const float* __restrict__ q, const float* __restrict__ k,
                   const float* __restrict__ v, const float* __restrict__ dout,
                   const int32_t* __restrict__ seg, const int32_t* __restrict__ kfirst,
                   const float* __restrict__ lse, const float* __restrict__ Dd, float scale,
                   float* __restrict__ dq, int T, int H, int Dk, int Dv) {
  DS_DYNAMIC_SHARED(smem_bytes);
  float* const sm = reinterpret_cast<float*>(smem_bytes);
  __shared__ int bound;
  const int ks = Dk | 1, vs = Dv | 1;
  float* Qs = sm;
  float* dOs = Qs + kSB * Dk;
  float* dQs = dOs + kSB * Dv;
  float* Ks = dQs + kSB * Dk;
  float* Vs = Ks + kST * ks;
  float* Ss = Vs + kST * vs;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kSB;
  const int64_t rq = int64_t(H) * Dk, rv = int64_t(H) * Dv;
  const int64_t head = int64_t(b) * T * H + h, bh = int64_t(b) * H + h;
  const int32_t* sb = seg ? seg + int64_t(b) * T : nullptr;
  const int klo = block_klo(kfirst, int64_t(b) * T, q0, T, kSB, &bound);
  load_rows(Qs, Dk, q + head * Dk, rq, q0, kSB, T - q0, Dk);
  load_rows(dOs, Dv, dout + head * Dv, rv, q0, kSB, T - q0, Dv);
  for (int i = threadIdx.x; i < kSB * Dk; i += blockDim.x) dQs[i] = 0.f;
  int t[kSR], st[kSR];
  float ls[kSR], Di[kSR];
#pragma unroll
  for (int i = 0; i < kSR; ++i) {
    t[i] = q0 + warp * kSR + i;
    const bool ok = t[i] < T;
    st[i] = sb && ok ? sb[t[i]] : 0;
    ls[i] = ok ? lse[bh * T + t[i]] : 0.f;
    Di[i] = ok ? Dd[bh * T + t[i]] : 0.f;
  }
  const int khi = min(q0 + kSB, T);
  for (int k0 = klo / kST * kST; k0 < khi; k0 += kST) {
    const int nk = min(kST, khi - k0);
    __syncthreads();
    load_rows(Ks, ks, k + head * Dk, rq, k0, kST, nk, Dk);
    load_rows(Vs, vs, v + head * Dv, rv, k0, kST, nk, Dv);
    __syncthreads();
    float s[kSR] = {}, dp[kSR] = {};
    const float* kr = Ks + lane * ks;
    for (int d = 0; d < Dk; ++d) {
      const float kv = kr[d];
#pragma unroll
      for (int i = 0; i < kSR; ++i) s[i] = fmaf(Qs[(warp * kSR + i) * Dk + d], kv, s[i]);
    }
    const float* vr = Vs + lane * vs;
    for (int d = 0; d < Dv; ++d) {
      const float vv = vr[d];
#pragma unroll
      for (int i = 0; i < kSR; ++i) dp[i] = fmaf(dOs[(warp * kSR + i) * Dv + d], vv, dp[i]);
    }
#pragma unroll
    for (int i = 0; i < kSR; ++i) {
      const bool vis = lane < nk && visible(t[i], k0 + lane, T, sb, st[i]);
      Ss[(warp * kSR + i) * kST + lane] = vis ? expf(s[i] * scale - ls[i]) * (dp[i] - Di[i]) : 0.f;
    }
    __syncwarp();
    for (int e = lane; e < Dk; e += 32) {
      float a[kSR];
#pragma unroll
      for (int i = 0; i < kSR; ++i) a[i] = dQs[(warp * kSR + i) * Dk + e];
      for (int j = 0; j < nk; ++j) {
        const float kv = Ks[j * ks + e];
#pragma unroll
        for (int i = 0; i < kSR; ++i) a[i] = fmaf(Ss[(warp * kSR + i) * kST + j], kv, a[i]);
      }
#pragma unroll
      for (int i = 0; i < kSR; ++i) dQs[(warp * kSR + i) * Dk + e] = a[i];
    }
  }
#pragma unroll
  for (int i = 0; i < kSR; ++i) {
    if (t[i] >= T) continue;
    for (int e = lane; e < Dk; e += 32)
      dq[(head + int64_t(t[i]) * H) * Dk + e] = dQs[(warp * kSR + i) * Dk + e] * scale;
  }
}

// dK/dV pass. grid (cdiv(T, 16), B*H): 16 keys per CTA, query tiles of 32 (one per lane).
// smem: K (16,Dk) V (16,Dv) dK (16,Dk) dV (16,Dv) Q (32,Dk|1) dO (32,Dv|1) P (16,32) dS (16,32)
// and lse/D/seg of the query tile.
__global__ void __launch_bounds__(kSW * 32)
    simt_dkdv_kernel(const float* __restrict__ q, const float* __restrict__ k,
                     const float* __restrict__ v, const float* __restrict__ dout,
                     const int32_t* __restrict__ seg, const int32_t* __restrict__ klast,
                     const float* __restrict__ lse, const float* __restrict__ Dd, float scale,
                     float* __restrict__ dk, float* __restrict__ dv, int T, int H, int Dk, int Dv) {
  DS_DYNAMIC_SHARED(smem_bytes);
  float* const sm = reinterpret_cast<float*>(smem_bytes);
  __shared__ int bound;
  __shared__ float lse_s[kST], D_s[kST];
  __shared__ int seg_s[kST];
  const int qs = Dk | 1, os = Dv | 1;
  float* Ks = sm;
  float* Vs = Ks + kSB * Dk;
  float* dKs = Vs + kSB * Dv;
  float* dVs = dKs + kSB * Dk;
  float* Qs = dVs + kSB * Dv;
  float* dOs = Qs + kST * qs;
  float* Ps = dOs + kST * os;
  float* Ss = Ps + kSB * kST;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int k0 = blockIdx.x * kSB;
  const int64_t rq = int64_t(H) * Dk, rv = int64_t(H) * Dv;
  const int64_t head = int64_t(b) * T * H + h, bh = int64_t(b) * H + h;
  const int32_t* sb = seg ? seg + int64_t(b) * T : nullptr;
  const int qhi = block_qhi(klast, int64_t(b) * T, k0, T, kSB, &bound);
  load_rows(Ks, Dk, k + head * Dk, rq, k0, kSB, T - k0, Dk);
  load_rows(Vs, Dv, v + head * Dv, rv, k0, kSB, T - k0, Dv);
  for (int i = threadIdx.x; i < kSB * Dk; i += blockDim.x) dKs[i] = 0.f;
  for (int i = threadIdx.x; i < kSB * Dv; i += blockDim.x) dVs[i] = 0.f;
  int j[kSR];
#pragma unroll
  for (int i = 0; i < kSR; ++i) j[i] = k0 + warp * kSR + i;
  for (int t0 = k0 / kST * kST; t0 < qhi; t0 += kST) {
    const int nq = min(kST, qhi - t0);
    __syncthreads();
    load_rows(Qs, qs, q + head * Dk, rq, t0, kST, nq, Dk);
    load_rows(dOs, os, dout + head * Dv, rv, t0, kST, nq, Dv);
    if (threadIdx.x < kST) {
      const int t = t0 + threadIdx.x;
      const bool ok = int(threadIdx.x) < nq;
      lse_s[threadIdx.x] = ok ? lse[bh * T + t] : 0.f;
      D_s[threadIdx.x] = ok ? Dd[bh * T + t] : 0.f;
      seg_s[threadIdx.x] = ok && sb ? sb[t] : 0;
    }
    __syncthreads();
    float s[kSR] = {}, dp[kSR] = {};
    const float* qr = Qs + lane * qs;
    for (int d = 0; d < Dk; ++d) {
      const float qv = qr[d];
#pragma unroll
      for (int i = 0; i < kSR; ++i) s[i] = fmaf(Ks[(warp * kSR + i) * Dk + d], qv, s[i]);
    }
    const float* orow = dOs + lane * os;
    for (int d = 0; d < Dv; ++d) {
      const float ov = orow[d];
#pragma unroll
      for (int i = 0; i < kSR; ++i) dp[i] = fmaf(Vs[(warp * kSR + i) * Dv + d], ov, dp[i]);
    }
#pragma unroll
    for (int i = 0; i < kSR; ++i) {
      const bool vis = lane < nq && j[i] < T && visible(t0 + lane, j[i], T, sb, seg_s[lane]);
      const float p = vis ? expf(s[i] * scale - lse_s[lane]) : 0.f;
      Ps[(warp * kSR + i) * kST + lane] = p;
      Ss[(warp * kSR + i) * kST + lane] = vis ? p * (dp[i] - D_s[lane]) : 0.f;
    }
    __syncwarp();
    for (int e = lane; e < Dv; e += 32) {
      float a[kSR];
#pragma unroll
      for (int i = 0; i < kSR; ++i) a[i] = dVs[(warp * kSR + i) * Dv + e];
      for (int r = 0; r < nq; ++r) {
        const float ov = dOs[r * os + e];
#pragma unroll
        for (int i = 0; i < kSR; ++i) a[i] = fmaf(Ps[(warp * kSR + i) * kST + r], ov, a[i]);
      }
#pragma unroll
      for (int i = 0; i < kSR; ++i) dVs[(warp * kSR + i) * Dv + e] = a[i];
    }
    for (int e = lane; e < Dk; e += 32) {
      float a[kSR];
#pragma unroll
      for (int i = 0; i < kSR; ++i) a[i] = dKs[(warp * kSR + i) * Dk + e];
      for (int r = 0; r < nq; ++r) {
        const float qv = Qs[r * qs + e];
#pragma unroll
        for (int i = 0; i < kSR; ++i) a[i] = fmaf(Ss[(warp * kSR + i) * kST + r], qv, a[i]);
      }
#pragma unroll
      for (int i = 0; i < kSR; ++i) dKs[(warp * kSR + i) * Dk + e] = a[i];
    }
  }
#pragma unroll
  for (int i = 0; i < kSR; ++i) {
    if (j[i] >= T) continue;
    const int64_t r = head + int64_t(j[i]) * H;
    for (int e = lane; e < Dk; e += 32) dk[r * Dk + e] = dKs[(warp * kSR + i) * Dk + e] * scale;
    for (int e = lane; e < Dv; e += 32) dv[r * Dv + e] = dVs[(warp * kSR + i) * Dv + e];
  }
}

// Dynamic shared memory of each kernel (bytes), as its comment lays it out.
inline size_t simt_fwd_smem(int Dk, int Dv) {
  return sizeof(float) * (size_t(kSB) * Dk + kSB * Dv + kST * (Dk | 1) + kST * Dv + kSB * kST);
}
inline size_t simt_dq_smem(int Dk, int Dv) {
  return sizeof(float) *
         (size_t(2) * kSB * Dk + kSB * Dv + kST * (Dk | 1) + kST * (Dv | 1) + kSB * kST);
}
inline size_t simt_dkdv_smem(int Dk, int Dv) {
  return sizeof(float) * (size_t(2) * kSB * (Dk + Dv) + kST * (Dk | 1) + kST * (Dv | 1) +
                          2 * kSB * kST);
}

}  // namespace
}  // namespace ds::cuda::flash
