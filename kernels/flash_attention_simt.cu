// Exact FP32 SIMT attention kernels (forward, dQ, dK/dV) and the public launchers of
// kernels/flash_attention.cuh: attention_forward / attention_backward run the segment-bound
// and D = rowsum(dO * O) pre-passes, then dispatch to the BF16 tensor-core path
// (flash_attention_tc.cu, through flash_attention_common.cuh) when it takes the dims and
// pointers, else to the kernels here. Split from the former flash_attention.cu (kept under the
// project's file-size limit); the algorithm overview is in flash_attention_common.cuh.
//   exact path: FP32 SIMT, any dims: a CTA holds 16 rows (4 warps x 4); each lane owns one
//     streamed row for the dot products, then lanes own head dims for the accumulation;
//     accumulators live in shared memory so any Dk/Dv works. Measured on an H200 (B 2,
//     T 4096, H 16, Dk 192, Dv 128, causal): ~3-4 TFLOP/s (the tensor path: ~120-180).
#include <algorithm>
#include <cmath>

#include "kernels/flash_attention_common.cuh"

namespace ds::cuda {
using namespace flash;
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
  extern __shared__ float sm[];
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
  extern __shared__ float sm[];
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
  extern __shared__ float sm[];
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

size_t simt_fwd_smem(int Dk, int Dv) {
  return sizeof(float) * (size_t(kSB) * Dk + kSB * Dv + kST * (Dk | 1) + kST * Dv + kSB * kST);
}
size_t simt_dq_smem(int Dk, int Dv) {
  return sizeof(float) *
         (size_t(2) * kSB * Dk + kSB * Dv + kST * (Dk | 1) + kST * (Dv | 1) + kSB * kST);
}
size_t simt_dkdv_smem(int Dk, int Dv) {
  return sizeof(float) * (size_t(2) * kSB * (Dk + Dv) + kST * (Dk | 1) + kST * (Dv | 1) +
                          2 * kSB * kST);
}
constexpr size_t kMaxSmem = 227 * 1024;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Scratch carving: 256-byte aligned pieces of one scratch() block.
struct Carve {
  size_t off = 0;
  size_t take(size_t bytes) {
    const size_t at = off;
    off += (bytes + 255) & ~size_t(255);
    return at;
  }
};

void seg_bounds(const int32_t* seg, int32_t* kfirst, int32_t* klast, const AttnShape& s) {
  const int64_t BT = s.B * s.T;
  seg_bounds_kernel<<<unsigned(cdiv(BT * 32, 256)), 256, 0, stream()>>>(seg, kfirst, klast, BT,
                                                                         int(s.T));
  DS_CUDA_LAUNCHED();
}

}  // namespace

bool attention_simt_supported(int64_t Dk, int64_t Dv) {
  if (Dk <= 0 || Dv <= 0 || Dk > 65536 || Dv > 65536) return false;
  return std::max({simt_fwd_smem(int(Dk), int(Dv)), simt_dq_smem(int(Dk), int(Dv)),
                   simt_dkdv_smem(int(Dk), int(Dv))}) <= kMaxSmem;
}

bool attention_tc_runs(const AttnQKV& in, const AttnShape& s, bool tensor_cores) {
  return tensor_cores && aligned16(in.q) && aligned16(in.k) && aligned16(in.v) &&
         tc_variant(s.Dk, s.Dv) >= 0;
}

namespace {

void check_bf16_inputs(const AttnQKV& in, int variant) {
  if (in.bf16 && variant < 0)
    raise_cuda("attention: BF16 q/k/v need the tensor-core kernels (dims, alignment)",
               cudaErrorInvalidValue, __FILE__, __LINE__);
}

// The BF16 operand x (n elements) of the tensor-core kernels: x itself when the caller's
// inputs are BF16 codes, else converted into `buf`.
const bf16* as_bf16(const void* x, bool is_bf16, bf16* buf, int64_t n) {
  if (is_bf16) return static_cast<const bf16*>(x);
  convert(static_cast<const float*>(x), buf, n);
  return buf;
}

void transpose_bf16(const void* x, bool is_bf16, bf16* xt, const AttnShape& s, int64_t D,
                    int64_t Tp) {
  if (is_bf16) convert_t(static_cast<const bf16*>(x), xt, s, D, Tp);
  else convert_t(static_cast<const float*>(x), xt, s, D, Tp);
}

}  // namespace

void attention_forward(const AttnQKV& in, const int32_t* seg, float scale, float* out,
                       float* lse, const AttnShape& s, bool tensor_cores) {
  if (s.B == 0 || s.T == 0 || s.H == 0) return;
  const int variant = attention_tc_runs(in, s, tensor_cores) ? tc_variant(s.Dk, s.Dv) : -1;
  check_bf16_inputs(in, variant);
  const int64_t nq = s.B * s.T * s.H * s.Dk, nv = s.B * s.T * s.H * s.Dv;
  const bool wg = variant >= 0 && sm90_attention(s.Dk, s.Dv);   // V as V^T, keys padded
  const int64_t Tp = wg ? sm90_keys_padded(s.T) : 0;
  const bool conv = variant >= 0 && !in.bf16;   // q, k (and v) converted here
  Carve cv;
  const size_t o_first = seg ? cv.take(4 * size_t(s.B * s.T)) : 0;
  const size_t o_last = seg ? cv.take(4 * size_t(s.B * s.T)) : 0;
  const size_t o_q = conv ? cv.take(2 * size_t(nq)) : 0;
  const size_t o_k = conv ? cv.take(2 * size_t(nq)) : 0;
  const size_t o_v = wg ? cv.take(2 * size_t(s.B * s.H * s.Dv * Tp))
                        : conv ? cv.take(2 * size_t(nv)) : 0;
  char* base = cv.off ? static_cast<char*>(scratch(cv.off)) : nullptr;
  int32_t* kfirst = seg ? reinterpret_cast<int32_t*>(base + o_first) : nullptr;
  int32_t* klast = seg ? reinterpret_cast<int32_t*>(base + o_last) : nullptr;
  if (seg) seg_bounds(seg, kfirst, klast, s);
  const Launch L{s, seg, kfirst, klast, scale};
  if (variant >= 0) {
    const bf16* qb = as_bf16(in.q, in.bf16, reinterpret_cast<bf16*>(base + o_q), nq);
    const bf16* kb = as_bf16(in.k, in.bf16, reinterpret_cast<bf16*>(base + o_k), nq);
    if (wg) {
      bf16* vt = reinterpret_cast<bf16*>(base + o_v);
      transpose_bf16(in.v, in.bf16, vt, s, s.Dv, Tp);
      sm90_forward(L, qb, kb, vt, Tp, out, lse);
      return;
    }
    const Bf16Inputs b{qb, kb, as_bf16(in.v, in.bf16, reinterpret_cast<bf16*>(base + o_v), nv),
                       nullptr};
    tc_forward_variant(variant, L, b, out, lse);
    return;
  }
  const auto* q = static_cast<const float*>(in.q);
  const auto* k = static_cast<const float*>(in.k);
  const auto* v = static_cast<const float*>(in.v);
  const size_t smem = simt_fwd_smem(int(s.Dk), int(s.Dv));
  set_smem(simt_fwd_kernel, smem);
  const dim3 grid(unsigned(cdiv(s.T, kSB)), unsigned(s.B * s.H));
  simt_fwd_kernel<<<grid, kSW * 32, smem, stream()>>>(q, k, v, seg, kfirst, scale, out, lse,
                                                      int(s.T), int(s.H), int(s.Dk), int(s.Dv));
  DS_CUDA_LAUNCHED();
}

void attention_backward(const AttnQKV& in, const int32_t* seg, float scale, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv,
                        const AttnShape& s, bool tensor_cores) {
  if (s.B == 0 || s.T == 0 || s.H == 0) return;
  const int variant =
      attention_tc_runs(in, s, tensor_cores) && aligned16(dout) ? tc_variant(s.Dk, s.Dv) : -1;
  check_bf16_inputs(in, variant);
  const int64_t nq = s.B * s.T * s.H * s.Dk, nv = s.B * s.T * s.H * s.Dv;
  const int64_t rows = s.B * s.T * s.H;
  const bool conv = variant >= 0 && !in.bf16;   // q, k, v converted here
  Carve cv;
  const size_t o_D = cv.take(4 * size_t(rows));
  const size_t o_first = seg ? cv.take(4 * size_t(s.B * s.T)) : 0;
  const size_t o_last = seg ? cv.take(4 * size_t(s.B * s.T)) : 0;
  const size_t o_q = conv ? cv.take(2 * size_t(nq)) : 0;
  const size_t o_k = conv ? cv.take(2 * size_t(nq)) : 0;
  const size_t o_v = conv ? cv.take(2 * size_t(nv)) : 0;
  const size_t o_o = variant >= 0 ? cv.take(2 * size_t(nv)) : 0;
  const bool wg = variant >= 0 && sm90_attention(s.Dk, s.Dv);   // + transposed copies
  const int64_t Tp = wg ? sm90_keys_padded(s.T) : 0;
  const size_t o_qt = wg ? cv.take(2 * size_t(s.B * s.H * s.Dk * Tp)) : 0;
  const size_t o_kt = wg ? cv.take(2 * size_t(s.B * s.H * s.Dk * Tp)) : 0;
  const size_t o_ot = wg ? cv.take(2 * size_t(s.B * s.H * s.Dv * Tp)) : 0;
  const bool qs = wg && sm90_bwd_needs_qstats(s.Dk, s.Dv);
  const size_t o_qs = qs ? cv.take(8 * size_t(s.B * s.H * Tp)) : 0;
  char* base = static_cast<char*>(scratch(cv.off));
  float* D = reinterpret_cast<float*>(base + o_D);
  int32_t* kfirst = seg ? reinterpret_cast<int32_t*>(base + o_first) : nullptr;
  int32_t* klast = seg ? reinterpret_cast<int32_t*>(base + o_last) : nullptr;
  if (seg) seg_bounds(seg, kfirst, klast, s);
  attn_delta_kernel<<<unsigned(cdiv(rows * 32, 256)), 256, 0, stream()>>>(out, dout, D, rows,
                                                                          int(s.T), int(s.H),
                                                                          int(s.Dv));
  DS_CUDA_LAUNCHED();
  const Launch L{s, seg, kfirst, klast, scale};
  if (variant >= 0) {
    const Bf16Inputs b{as_bf16(in.q, in.bf16, reinterpret_cast<bf16*>(base + o_q), nq),
                       as_bf16(in.k, in.bf16, reinterpret_cast<bf16*>(base + o_k), nq),
                       as_bf16(in.v, in.bf16, reinterpret_cast<bf16*>(base + o_v), nv),
                       as_bf16(dout, false, reinterpret_cast<bf16*>(base + o_o), nv)};
    if (wg) {
      const Sm90BwdInputs w{b.q, b.k, b.v, b.dout, reinterpret_cast<bf16*>(base + o_qt),
                            reinterpret_cast<bf16*>(base + o_kt),
                            reinterpret_cast<bf16*>(base + o_ot),
                            qs ? reinterpret_cast<float2*>(base + o_qs) : nullptr};
      transpose_bf16(in.q, in.bf16, const_cast<bf16*>(w.qt), s, s.Dk, Tp);
      transpose_bf16(in.k, in.bf16, const_cast<bf16*>(w.kt), s, s.Dk, Tp);
      convert_t(dout, const_cast<bf16*>(w.doutt), s, s.Dv, Tp);
      sm90_backward(L, w, Tp, lse, D, dq, dk, dv);
      return;
    }
    tc_backward_variant(variant, L, b, lse, D, dq, dk, dv);
    return;
  }
  const auto* q = static_cast<const float*>(in.q);
  const auto* k = static_cast<const float*>(in.k);
  const auto* v = static_cast<const float*>(in.v);
  const int T = int(s.T), H = int(s.H), Dk = int(s.Dk), Dv = int(s.Dv);
  const dim3 grid(unsigned(cdiv(s.T, kSB)), unsigned(s.B * s.H));
  const size_t smq = simt_dq_smem(Dk, Dv), smkv = simt_dkdv_smem(Dk, Dv);
  set_smem(simt_dq_kernel, smq);
  simt_dq_kernel<<<grid, kSW * 32, smq, stream()>>>(q, k, v, dout, seg, kfirst, lse, D, scale, dq,
                                                    T, H, Dk, Dv);
  DS_CUDA_LAUNCHED();
  set_smem(simt_dkdv_kernel, smkv);
  simt_dkdv_kernel<<<grid, kSW * 32, smkv, stream()>>>(q, k, v, dout, seg, klast, lse, D, scale,
                                                       dk, dv, T, H, Dk, Dv);
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
