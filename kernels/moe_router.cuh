// MoE routing's per-token kernels (ops::moe_route and ops::moe_route_backward on the GPU):
// included by kernels/moe_route.cu, which launches them, and by the host emulation test
// tests/kernels/test_emu_moe_route.cpp, which runs this same source on a CPU against the
// reference. Plain CUDA C++ without inline PTX, so that the emulator
// (tests/kernels/cuda_emu.hpp) can run it; the block's dynamic shared memory is declared
// through DS_DYNAMIC_SHARED, which the emulator defines its own way.
//
// Routing is one warp per token with the token's scores, selection scores and flags in
// per-warp shared memory. Selection must equal the reference's (ref_moe.cpp) index for index,
// so the arithmetic is the same: the score is the double sigmoid (or softmax) rounded to float,
// the selection score score + bias is a float add, a group score is the float sum 0 + best +
// second (with a bias; without one, V2's rule, 0 + best), and every "top" is the reference's
// sequential scan: the first candidate wins if it is NaN (NaN never loses to a later value),
// otherwise the largest non-NaN value, ties to the lower index. warp_pick reproduces that scan
// with a butterfly reduction. Weights and the backward use double like the reference.
#pragma once
#include <climits>
#include <cmath>
#include <cstdint>

#include "kernels/shared_mem.cuh"
#include "kernels/warp_reduce.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::moeroute {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kRouteWarps = 4;   // warps (tokens in flight) per block

// flag values in the per-warp tables
constexpr uint8_t kOut = 0, kCand = 1, kPicked = 2;

// The reference's topk_desc step over indices [lo, hi) whose flag is kCand: the first
// candidate if its value is NaN, else the lowest index of the largest non-NaN value; -1 when
// there is no candidate. Every lane returns the same index. v and flag are warp-shared.
__device__ __forceinline__ int warp_pick(const float* v, const uint8_t* flag, int lo, int hi) {
  const int lane = threadIdx.x & 31;
  int first = INT_MAX, best = -1;
  float bv = 0.f;
  for (int i = lo + lane; i < hi; i += 32) {   // ascending per lane: strict > keeps the lower
    if (flag[i] != kCand) continue;
    if (first == INT_MAX) first = i;
    const float x = v[i];
    if (x != x) continue;
    if (best < 0 || x > bv) {
      best = i;
      bv = x;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    first = min(first, __shfl_xor_sync(kFull, first, o));
    const float ov = __shfl_xor_sync(kFull, bv, o);
    const int ob = __shfl_xor_sync(kFull, best, o);
    if (ob >= 0 && (best < 0 || ov > bv || (ov == bv && ob < best))) {
      best = ob;
      bv = ov;
    }
  }
  if (first == INT_MAX) return -1;
  const float xf = v[first];
  return xf != xf ? first : best;
}

__device__ __forceinline__ double warp_max_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Bytes of one warp's tables: sc, sel (E floats each), picks (K ints), group scores (G
// floats), flags (E bytes), group flags (G bytes); 16-byte multiple.
int route_warp_bytes(int E, int K, int G) {
  const int b = E * 8 + K * 4 + G * 4 + E + G;
  return (b + 15) & ~15;
}
// Warps a block of route_kernel: kRouteWarps, halved while their tables exceed the 48 KiB of
// shared memory a launch gets without opting in.
int route_warps_per_block(int warp_bytes) {
  int wpb = kRouteWarps;
  while (wpb > 1 && wpb * warp_bytes > 48 * 1024) wpb /= 2;
  return wpb;
}

struct RouteK {
  int E, G, TG, K;
  bool sigmoid, norm;
  float rs;
  int warp_bytes;
};

// logits (N, E) -> scores (N, E), idx (N, K), weights (N, K); one warp per token.
__global__ void __launch_bounds__(kRouteWarps * 32)
    route_kernel(const float* logits, const float* __restrict__ bias, int64_t N, RouteK p,
                 float* scores, int32_t* __restrict__ idx, float* __restrict__ weights) {
  DS_DYNAMIC_SHARED(smem);   // route_warps_per_block(p.warp_bytes) * p.warp_bytes
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, wpb = blockDim.x >> 5;
  const int E = p.E, G = p.G, K = p.K, gs = p.E / p.G;
  unsigned char* base = smem + size_t(w) * p.warp_bytes;
  float* sc = reinterpret_cast<float*>(base);   // (E) scores
  float* sel = sc + E;                          // (E) selection scores
  int* pk = reinterpret_cast<int*>(sel + E);    // (K) picks
  float* gsc = reinterpret_cast<float*>(pk + K);   // (G) group scores
  uint8_t* fl = reinterpret_cast<uint8_t*>(gsc + G);   // (E)
  uint8_t* gfl = fl + E;                                // (G)

  for (int64_t n = int64_t(blockIdx.x) * wpb + w; n < N; n += int64_t(gridDim.x) * wpb) {
    const float* lg = logits + n * E;
    float* so = scores + n * E;
    if (p.sigmoid) {
      for (int e = lane; e < E; e += 32) {
        const float s = float(1.0 / (1.0 + exp(-double(lg[e]))));
        sc[e] = s;
        so[e] = s;
      }
    } else {   // any NaN (or +inf, or all -inf) logit makes every score NaN, as in the reference
      double mx = -INFINITY, z = 0;
      for (int e = lane; e < E; e += 32) mx = fmax(mx, double(lg[e]));
      mx = warp_max_d(mx);
      for (int e = lane; e < E; e += 32) z += exp(double(lg[e]) - mx);
      z = warp_sum_d(z);
      for (int e = lane; e < E; e += 32) {
        const float s = float(exp(double(lg[e]) - mx) / z);
        sc[e] = s;
        so[e] = s;
      }
    }
    for (int e = lane; e < E; e += 32) {
      sel[e] = sc[e] + (bias ? bias[e] : 0.f);
      fl[e] = kCand;
    }
    __syncwarp();
    if (G > 1) {
      const int m = bias && gs >= 2 ? 2 : 1;   // no bias (V2): the group's max
      for (int g = 0; g < G; ++g) {   // group score: sum of its top-m selection scores
        float s = 0.f;
        for (int r = 0; r < m; ++r) {
          const int b = warp_pick(sel, fl, g * gs, g * gs + gs);
          if (b >= 0) s += sel[b];
          __syncwarp();
          if (lane == 0 && b >= 0) fl[b] = kPicked;
          __syncwarp();
        }
        if (lane == 0) {
          gsc[g] = s;
          gfl[g] = kCand;
        }
      }
      __syncwarp();
      for (int r = 0; r < p.TG; ++r) {
        const int b = warp_pick(gsc, gfl, 0, G);
        __syncwarp();
        if (lane == 0 && b >= 0) gfl[b] = kPicked;
        __syncwarp();
      }
      for (int e = lane; e < E; e += 32) fl[e] = gfl[e / gs] == kPicked ? kCand : kOut;
      __syncwarp();
    }
    for (int k = 0; k < K; ++k) {
      const int b = warp_pick(sel, fl, 0, E);
      __syncwarp();
      if (lane == 0) {
        pk[k] = b;
        if (b >= 0) fl[b] = kPicked;
      }
      __syncwarp();
    }
    double tot = 0;   // in pick order, as the reference
    for (int k = 0; k < K; ++k) tot += pk[k] >= 0 ? double(sc[pk[k]]) : 0.0;
    for (int k = lane; k < K; k += 32) {
      const int b = pk[k];
      double wv = b >= 0 ? double(sc[b]) : 0.0;
      if (p.norm) wv /= tot;
      idx[n * K + k] = b;
      weights[n * K + k] = float(wv * double(p.rs));
    }
    __syncwarp();   // the tables are rewritten by the next token
  }
}

// dlogits (N, E); one warp per token, gradients in double as the reference.
__global__ void __launch_bounds__(256)
    route_backward_kernel(const float* __restrict__ scores, const int32_t* __restrict__ idx,
                          const float* __restrict__ dweights, const float* __restrict__ extra,
                          int64_t N, int E, int K, bool sigmoid, bool norm, float route_scale,
                          float* __restrict__ dlogits) {
  const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
  const double rs = double(route_scale);
  for (int64_t n = int64_t(blockIdx.x) * wpb + (threadIdx.x >> 5); n < N;
       n += int64_t(gridDim.x) * wpb) {
    const float* s = scores + n * E;
    const int32_t* ik = idx + n * K;
    const float* dw = dweights + n * K;
    const float* ex = extra ? extra + n * E : nullptr;
    double S = 0, wsum = 0;   // w_k = rs * s_k / S: every lane sums the K terms in order
    if (norm)
      for (int k = 0; k < K; ++k) {
        const int e = ik[k];
        if (e < 0 || e >= E) continue;
        S += double(s[e]);
        wsum = __dadd_rn(wsum, __dmul_rn(double(dw[k]), double(s[e])));   // no FMA
      }
    // dL/dscore_e: the extra term plus each pick of e, in k order as the reference adds them.
    auto dscore = [&](int e) {
      double d = ex ? double(ex[e]) : 0.0;
      for (int k = 0; k < K; ++k)
        if (ik[k] == e)   // unfused, as the reference (no FMA contraction)
          d = __dadd_rn(d, norm ? __dmul_rn(rs, double(dw[k]) / S - wsum / (S * S))
                                : __dmul_rn(rs, double(dw[k])));
      return d;
    };
    float* out = dlogits + n * E;
    if (sigmoid) {
      for (int e = lane; e < E; e += 32) {
        const double sv = double(s[e]);
        out[e] = float(dscore(e) * sv * (1.0 - sv));
      }
    } else {
      double dot = 0;
      for (int e = lane; e < E; e += 32) dot = __dadd_rn(dot, __dmul_rn(dscore(e), double(s[e])));
      dot = warp_sum_d(dot);
      for (int e = lane; e < E; e += 32) out[e] = float(double(s[e]) * (dscore(e) - dot));
    }
  }
}

}  // namespace
}  // namespace ds::cuda::moeroute
