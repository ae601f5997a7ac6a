// The exact FP32 absorbed-MLA decode kernels (see kernels/mla_decode.cu for the algorithm):
// the tiled split kernel over 32-key tiles of the latent and rope-key caches, the combine of
// its key splits (shared with the BF16 tensor-core kernel), the simple block-per-head kernel
// for wide dims, and the launch plan (widths, shared memory, splits) the launcher and the test
// share. Included by kernels/mla_decode.cu, which launches them, and by the host emulation
// test tests/kernels/test_emu_mla_decode.cpp, which runs this same source on a CPU against the
// reference. Plain CUDA C++ except the four cp.async wrappers below, which the emulator
// (tests/kernels/cuda_emu.hpp) replaces with synchronous copies (DS_EMU_CP_ASYNC), as it
// defines DS_DYNAMIC_SHARED its own way.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/shared_mem.cuh"
#include "kernels/warp_reduce.cuh"

#ifndef DS_EMU_CP_ASYNC
namespace ds::cuda::mla {
// cp.async of 16 or 4 bytes from global memory to shared memory dst; zeros when !pred. Commit
// closes a group; cp_wait<N> waits until at most N groups are in flight.
__device__ __forceinline__ void cp16(void* dst, const void* src, bool pred) {
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
               "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp4(void* dst, const void* src, bool pred) {
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src),
               "r"(pred ? 4 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
}  // namespace ds::cuda::mla
#endif

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::mla {
namespace {

constexpr int kMH = 16;        // heads per CTA
constexpr int kMK = 32;        // keys per tile
constexpr int kMT = 256;       // threads per CTA
constexpr int kMaxDP = 640;    // R + Dr (rounded up to 4) the tiled kernel takes
constexpr int kMinSplitKeys = 64;

// The split kernel's launch plan: the concatenated [latent | rope] width DP (a multiple of 4),
// the shared-memory row stride CS (== 4 mod 32: the score loads' 8 lanes hit distinct banks),
// its dynamic shared memory, and the key splits: one CTA per SM fits, so the keys of each
// (row, head group) split into at most two full waves of CTAs over `sms` SMs (floor, so no
// straggler wave), at least kMinSplitKeys keys a split, KS keys a split (whole tiles).
struct SplitPlan {
  int64_t DP, CS;
  size_t smem;
  int64_t KS, splits;
};
inline SplitPlan split_plan(int64_t N, int64_t H, int64_t R, int64_t Dr, int64_t L, int64_t sms) {
  auto up = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  SplitPlan p{};
  p.DP = (R + Dr + 3) / 4 * 4;
  p.CS = p.DP + ((4 - p.DP % 32) + 32) % 32;
  p.smem = sizeof(float) * (size_t(kMH) * p.DP + 2 * kMK * p.CS + 4 * kMH * kMK + kMK * kMH);
  const int64_t base = N * up(H, kMH), target = 2 * sms;
  int64_t splits = 1;
  if (base < target) splits = std::min(target / base, up(L, kMinSplitKeys));
  splits = std::max<int64_t>(splits, 1);
  p.KS = std::max<int64_t>(up(up(L, splits), kMK) * kMK, kMK);
  p.splits = std::max<int64_t>(up(L, p.KS), 1);
  return p;
}

struct MlaArgs {
  const float *q_lat, *q_pe, *ckv, *kpe;
  const int32_t *slot, *len;
  float scale;
  float *out, *po, *pm, *pl;   // partials (N, splits, H, R), (N, splits, H) when splits > 1
  int H, R, Dr, S, L;
  int KS, splits;              // keys per split, splits
  int DP, CS;                  // concatenated width (multiple of 4), smem row stride (== 4 mod 32)
  bool vec;                    // 16-byte cache copies (R, Dr multiples of 4, aligned)
};

__device__ __forceinline__ float dot4(const float4& a, const float4& b, float acc) {
  return fmaf(a.x, b.x, fmaf(a.y, b.y, fmaf(a.z, b.z, fmaf(a.w, b.w, acc))));
}

// Keys [j0, j0 + nk) of cache slot sl -> dst (kMK, CS) as [latent | rope | 0], zero rows >= nk.
__device__ __forceinline__ void mla_load(const MlaArgs& a, float* dst, int64_t row0, int nk) {
  if (a.vec) {
    const int c4 = a.DP / 4;
    for (int c = threadIdx.x; c < kMK * c4; c += kMT) {
      const int r = c / c4, d = (c - r * c4) * 4;
      const bool ok = r < nk;
      const float* src = a.ckv;
      if (ok)
        src = d < a.R ? a.ckv + (row0 + r) * a.R + d : a.kpe + (row0 + r) * a.Dr + (d - a.R);
      cp16(dst + r * a.CS + d, src, ok);
    }
  } else {
    for (int c = threadIdx.x; c < kMK * a.DP; c += kMT) {
      const int r = c / a.DP, d = c - r * a.DP;
      const bool ok = r < nk && d < a.R + a.Dr;
      const float* src = a.ckv;
      if (ok)
        src = d < a.R ? a.ckv + (row0 + r) * a.R + d : a.kpe + (row0 + r) * a.Dr + (d - a.R);
      cp4(dst + r * a.CS + d, src, ok);
    }
  }
  cp_commit();
}

// grid (N, cdiv(H, 16), splits), 256 threads. smem: q (16, DP), C 2x(32, CS), partial scores
// (4, 16, 32), P (32, 16).
template <int NR>
__global__ void __launch_bounds__(kMT) mla_split_kernel(const MlaArgs a) {
  DS_DYNAMIC_SHARED(smem_bytes);
  float* const sm = reinterpret_cast<float*>(smem_bytes);
  __shared__ float als[kMH], ms[kMH], ls[kMH];
  float* qs = sm;
  float* Cs = qs + kMH * a.DP;
  float* Sp = Cs + 2 * kMK * a.CS;
  float* Ps = Sp + 4 * kMH * kMK;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int n = blockIdx.x, hg0 = blockIdx.y * kMH, sp = blockIdx.z;
  const int sl = a.slot[n], ln = a.len[n];
  const bool bad = sl < 0 || sl >= a.S || ln < 1 || ln > a.L;
  const int jb = sp * a.KS, je = bad ? jb : min(ln, jb + a.KS);
  if (jb >= je) {   // nothing to attend: zeros (bad row) or an empty partial
    if (a.splits == 1) {
      for (int i = tid; i < kMH * a.R; i += kMT) {
        const int h = hg0 + i / a.R;
        if (h < a.H) a.out[(int64_t(n) * a.H + h) * a.R + i % a.R] = 0.f;
      }
    } else if (tid < kMH && hg0 + tid < a.H) {
      const int64_t at = (int64_t(n) * a.splits + sp) * a.H + hg0 + tid;
      a.pm[at] = -INFINITY;
      a.pl[at] = 0.f;
    }
    return;
  }
  const int64_t row0 = int64_t(sl) * a.L;
  const int ntiles = (je - jb + kMK - 1) / kMK;
  mla_load(a, Cs, row0 + jb, min(kMK, je - jb));
  for (int i = tid; i < kMH * a.DP; i += kMT) {
    const int hh = i / a.DP, d = i - hh * a.DP, h = hg0 + hh;
    float x = 0.f;
    if (h < a.H) {
      const int64_t r = int64_t(n) * a.H + h;
      if (d < a.R) x = a.q_lat[r * a.R + d];
      else if (d < a.R + a.Dr) x = a.q_pe[r * a.Dr + (d - a.R)];
    }
    qs[i] = x;
  }
  // phase-1 roles: dim slice, head quad, key pair (kp, kp + 16)
  const int slc = warp >> 1, hq = ((warp & 1) << 1) | (lane >> 4), kp = lane & 15;
  const int n4 = a.DP / 4, per = (n4 + 3) / 4, d4a = slc * per, d4b = min(n4, d4a + per);
  const int cs4 = a.CS / 4;
  // phase-3 roles: 8 heads x 4 columns (x NR)
  const int hh0 = (tid >> 7) * 8, rq = tid & 127;
  float m_[2] = {-INFINITY, -INFINITY}, l_[2] = {0.f, 0.f};
  float acc[NR][8][4] = {};
  for (int it = 0; it < ntiles; ++it) {
    const int buf = it & 1, j0 = jb + it * kMK, nk = min(kMK, je - j0);
    if (it + 1 < ntiles) {
      mla_load(a, Cs + (buf ^ 1) * kMK * a.CS, row0 + j0 + kMK, min(kMK, je - j0 - kMK));
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    const float* Cb = Cs + buf * kMK * a.CS;
    {
      float s[4][2] = {};
      const float4* q4 = reinterpret_cast<const float4*>(qs) + hq * 4 * n4;
      const float4* ca = reinterpret_cast<const float4*>(Cb) + kp * cs4;
      const float4* cb = ca + 16 * cs4;
#pragma unroll 4
      for (int d4 = d4a; d4 < d4b; ++d4) {
        const float4 x = ca[d4], y = cb[d4];
#pragma unroll
        for (int hh = 0; hh < 4; ++hh) {
          const float4 qv = q4[hh * n4 + d4];
          s[hh][0] = dot4(qv, x, s[hh][0]);
          s[hh][1] = dot4(qv, y, s[hh][1]);
        }
      }
#pragma unroll
      for (int hh = 0; hh < 4; ++hh) {
        float* o = Sp + (slc * kMH + hq * 4 + hh) * kMK + kp;
        o[0] = s[hh][0];
        o[16] = s[hh][1];
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int hh = 2 * warp + i;
      const float* sp_ = Sp + hh * kMK + lane;
      const float x0 = (sp_[0] + sp_[kMH * kMK]) + (sp_[2 * kMH * kMK] + sp_[3 * kMH * kMK]);
      const bool vis = lane < nk;
      const float x = vis ? x0 * a.scale : -INFINITY;
      const float mn = fmaxf(m_[i], warp_max(x));
      const float p = vis ? expf(x - mn) : 0.f;
      const float al = m_[i] == -INFINITY ? 0.f : expf(m_[i] - mn);
      l_[i] = l_[i] * al + warp_sum(p);
      m_[i] = mn;
      Ps[lane * kMH + hh] = p;
      if (lane == 0) als[hh] = al;
    }
    __syncthreads();
    {
      float al[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) al[i] = als[hh0 + i];
      const float4* c4 = reinterpret_cast<const float4*>(Cb);
      const float4* p4 = reinterpret_cast<const float4*>(Ps) + hh0 / 4;
#pragma unroll
      for (int u = 0; u < NR; ++u) {
        const int r4 = rq + 128 * u;
        if (r4 * 4 >= a.R) break;
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[u][i][e] *= al[i];
        for (int j = 0; j < nk; ++j) {
          const float4 c = c4[j * cs4 + r4];
          const float4 pa = p4[j * 4], pb = p4[j * 4 + 1];
          const float pv[8] = {pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w};
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            acc[u][i][0] = fmaf(pv[i], c.x, acc[u][i][0]);
            acc[u][i][1] = fmaf(pv[i], c.y, acc[u][i][1]);
            acc[u][i][2] = fmaf(pv[i], c.z, acc[u][i][2]);
            acc[u][i][3] = fmaf(pv[i], c.w, acc[u][i][3]);
          }
        }
      }
    }
    __syncthreads();   // the buffer, scores and P are rewritten next tile
  }
  if (lane == 0) {
    ms[2 * warp] = m_[0]; ms[2 * warp + 1] = m_[1];
    ls[2 * warp] = l_[0]; ls[2 * warp + 1] = l_[1];
  }
  __syncthreads();
#pragma unroll
  for (int u = 0; u < NR; ++u) {
    const int r4 = rq + 128 * u;
    if (r4 * 4 >= a.R) break;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int h = hg0 + hh0 + i;
      if (h >= a.H) continue;
      float* dst;
      float inv = 1.f;
      if (a.splits == 1) {
        dst = a.out + (int64_t(n) * a.H + h) * a.R;
        inv = ls[hh0 + i] > 0.f ? 1.f / ls[hh0 + i] : 0.f;
      } else {
        dst = a.po + ((int64_t(n) * a.splits + sp) * a.H + h) * a.R;
      }
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (r4 * 4 + e < a.R) dst[r4 * 4 + e] = acc[u][i][e] * inv;
    }
  }
  if (a.splits > 1 && tid < kMH && hg0 + tid < a.H) {
    const int64_t at = (int64_t(n) * a.splits + sp) * a.H + hg0 + tid;
    a.pm[at] = ms[tid];
    a.pl[at] = ls[tid];
  }
}

// out[n, h] = sum_s w_s po[n, s, h] / sum_s w_s pl[n, s, h], w_s = exp(pm_s - max pm).
// grid (N*H, cdiv(R, 128)), 128 threads (one column each), smem splits floats.
__global__ void __launch_bounds__(128)
    mla_combine_kernel(const float* __restrict__ po, const float* __restrict__ pm,
                       const float* __restrict__ pl, float* __restrict__ out, int H, int R,
                       int splits) {
  DS_DYNAMIC_SHARED(w_bytes);   // splits floats
  float* const w = reinterpret_cast<float*>(w_bytes);
  __shared__ float inv_s;
  const int n = blockIdx.x / H, h = blockIdx.x % H, lane = threadIdx.x & 31;
  const int64_t base = int64_t(n) * splits * H + h;   // + s * H
  if (threadIdx.x < 32) {
    float mx = -INFINITY;
    for (int s = lane; s < splits; s += 32) mx = fmaxf(mx, pm[base + int64_t(s) * H]);
    mx = warp_max(mx);
    float sum = 0.f;
    for (int s = lane; s < splits; s += 32) {
      const float m = pm[base + int64_t(s) * H];
      const float ws = m == -INFINITY ? 0.f : expf(m - mx);
      w[s] = ws;
      sum += ws * pl[base + int64_t(s) * H];
    }
    sum = warp_sum(sum);
    if (lane == 0) inv_s = sum > 0.f ? 1.f / sum : 0.f;
  }
  __syncthreads();
  const int r = blockIdx.y * blockDim.x + threadIdx.x;
  if (r >= R) return;
  // Empty splits (w = 0) never wrote their partial: their garbage is selected away.
  const float* p = po + base * R + r;
  const int64_t step = int64_t(H) * R;
  float a0 = 0.f, a1 = 0.f;   // two chains so consecutive loads overlap
  int s = 0;
  for (; s + 2 <= splits; s += 2) {
    const float x0 = p[s * step], x1 = p[(s + 1) * step], w0 = w[s], w1 = w[s + 1];
    a0 = w0 != 0.f ? fmaf(w0, x0, a0) : a0;
    a1 = w1 != 0.f ? fmaf(w1, x1, a1) : a1;
  }
  if (s < splits) {
    const float x = p[s * step], ws = w[s];
    a0 = ws != 0.f ? fmaf(ws, x, a0) : a0;
  }
  out[(int64_t(n) * H + h) * R + r] = (a0 + a1) * inv_s;
}

// Fallback for wide dims: one 128-thread block per (n, h), one key at a time (block
// reductions), output accumulator (R) in shared memory.
__global__ void __launch_bounds__(128)
    mla_simple_kernel(const float* __restrict__ q_lat, const float* __restrict__ q_pe,
                      const float* __restrict__ ckv, const float* __restrict__ kpe,
                      const int32_t* __restrict__ slot, const int32_t* __restrict__ len,
                      float scale, float* __restrict__ out, int H, int R, int Dr, int S, int L) {
  DS_DYNAMIC_SHARED(os_bytes);   // R floats
  float* const os = reinterpret_cast<float*>(os_bytes);
  __shared__ float red[32];
  const int n = blockIdx.x / H, h = blockIdx.x % H;
  const int sl = slot[n], ln = len[n];
  float* o = out + (int64_t(n) * H + h) * R;
  if (sl < 0 || sl >= S || ln < 1 || ln > L) {
    for (int r = threadIdx.x; r < R; r += blockDim.x) o[r] = 0.f;
    return;
  }
  const float* ql = q_lat + (int64_t(n) * H + h) * R;
  const float* qp = q_pe + (int64_t(n) * H + h) * Dr;
  const float* C = ckv + int64_t(sl) * L * R;
  const float* K = kpe + int64_t(sl) * L * Dr;
  for (int r = threadIdx.x; r < R; r += blockDim.x) os[r] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int j = 0; j < ln; ++j) {
    float part = 0.f;
    for (int d = threadIdx.x; d < R; d += blockDim.x)
      part = fmaf(ql[d], C[int64_t(j) * R + d], part);
    for (int d = threadIdx.x; d < Dr; d += blockDim.x)
      part = fmaf(qp[d], K[int64_t(j) * Dr + d], part);
    const float s = block_sum(part, red) * scale;
    const float mn = fmaxf(m, s);
    const float al = m == -INFINITY ? 0.f : expf(m - mn), p = expf(s - mn);
    l = l * al + p;
    m = mn;
    for (int r = threadIdx.x; r < R; r += blockDim.x)
      os[r] = fmaf(p, C[int64_t(j) * R + r], os[r] * al);
  }
  const float inv = 1.f / l;
  for (int r = threadIdx.x; r < R; r += blockDim.x) o[r] = os[r] * inv;
}

}  // namespace
}  // namespace ds::cuda::mla
