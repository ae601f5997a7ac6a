// MoE routing on the GPU (declared in moe_route.cuh): scores and group-limited top-K
// selection, its backward, the sequence-wise balance loss and the expert counts.
//
// Routing is one warp per token with the token's scores, selection scores and flags in
// per-warp shared memory. Selection must equal the reference's (ref_moe.cpp) index for
// index, so the arithmetic is the same: the score is the double sigmoid (or softmax) rounded
// to float, the selection score score + bias is a float add, a group score is the float sum
// 0 + best + second, and every "top" is the reference's sequential scan: the first candidate
// wins if it is NaN (NaN never loses to a later value), otherwise the largest non-NaN value,
// ties to the lower index. warp_pick reproduces that scan with a butterfly reduction. Weights
// and the backward use double like the reference.
#include <climits>
#include <cstring>

#include "kernels/common.cuh"
#include "kernels/moe_combine.cuh"
#include "kernels/moe_pad.cuh"
#include "kernels/moe_route.cuh"
#include "kernels/moe_sort.cuh"

namespace ds::cuda {

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
  extern __shared__ __align__(16) unsigned char smem[];
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
      const int m = gs >= 2 ? 2 : 1;
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

// ---- balance loss ---------------------------------------------------------------------------

__device__ double block_sum_d(double v, double* sh /*32*/) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum_d(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : 0.0;
  return warp_sum_d(v);
}

// Per token: S[t] = sum_e scores (double); expert hits counted per sequence.
__global__ void balance_stats_kernel(const float* __restrict__ scores,
                                     const int32_t* __restrict__ idx, int64_t N, int E, int K,
                                     int64_t seq_len, double* __restrict__ S,
                                     int* __restrict__ counts /*(n_seq, E)*/) {
  const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
  for (int64_t t = int64_t(blockIdx.x) * wpb + (threadIdx.x >> 5); t < N;
       t += int64_t(gridDim.x) * wpb) {
    double z = 0;
    for (int e = lane; e < E; e += 32) z += double(scores[t * E + e]);
    z = warp_sum_d(z);
    if (lane == 0) S[t] = z;
    const int64_t sq = t / seq_len;
    for (int k = lane; k < K; k += 32) {
      const int e = idx[t * K + k];
      if (e >= 0 && e < E) atomicAdd(&counts[sq * E + e], 1);
    }
  }
}

constexpr int kBalanceChunk = 64;   // tokens per partial sum of P

// partial[(sq, chunk, e)] = sum over the chunk's tokens of scores[t, e] / S[t]; a fixed order,
// so the loss is deterministic. grid (chunks, n_seq).
__global__ void balance_partial_kernel(const float* __restrict__ scores,
                                       const double* __restrict__ S, int E, int64_t seq_len,
                                       double* __restrict__ partial) {
  const int64_t sq = blockIdx.y, ch = blockIdx.x;
  const int64_t t0 = sq * seq_len + ch * kBalanceChunk;
  const int64_t t1 = sq * seq_len + min(seq_len, (ch + 1) * int64_t(kBalanceChunk));
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    double acc = 0;
    for (int64_t t = t0; t < t1; ++t) acc += double(scores[t * E + e]) / S[t];
    partial[(sq * gridDim.x + ch) * E + e] = acc;
  }
}

// Per sequence: f_e = hits * E / (K seq_len), P_e = mean of s_e / S; lseq = alpha l / n_seq
// with l = sum_e f_e P_e; cf = c f_e with c = alpha / (n_seq seq_len) (for the gradient).
__global__ void balance_finish_kernel(const double* __restrict__ partial,
                                      const int* __restrict__ counts, int nchunk, int E, int K,
                                      int64_t seq_len, int64_t n_seq, double alpha,
                                      double* __restrict__ cf, double* __restrict__ lseq) {
  __shared__ double sh[32];
  const int64_t sq = blockIdx.x;
  const double c = alpha / double(n_seq * seq_len);
  double l = 0;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    double P = 0;
    for (int ch = 0; ch < nchunk; ++ch) P += partial[(sq * nchunk + ch) * E + e];
    P /= double(seq_len);
    const double f = double(counts[sq * E + e]) * double(E) / double(int64_t(K) * seq_len);
    l = __dadd_rn(l, __dmul_rn(f, P));   // unfused, as the reference
    cf[sq * E + e] = c * f;
  }
  l = block_sum_d(l, sh);
  if (threadIdx.x == 0) lseq[sq] = alpha * l / double(n_seq);
}

__global__ void balance_total_kernel(const double* __restrict__ lseq, int64_t n_seq,
                                     double* __restrict__ out) {
  if (threadIdx.x != 0) return;
  double s = 0;
  for (int64_t i = 0; i < n_seq; ++i) s += lseq[i];
  *out = s;
}

// dscores[t, e] = (g_e - g.s/S) / S with g_e = c f_e (the gradient through P only).
__global__ void balance_grad_kernel(const float* __restrict__ scores, const double* __restrict__ S,
                                    const double* __restrict__ cf, int64_t N, int E,
                                    int64_t seq_len, float* __restrict__ dscores) {
  const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
  for (int64_t t = int64_t(blockIdx.x) * wpb + (threadIdx.x >> 5); t < N;
       t += int64_t(gridDim.x) * wpb) {
    const double St = S[t];
    const double* g = cf + (t / seq_len) * E;
    double gdot = 0;
    for (int e = lane; e < E; e += 32) gdot += g[e] * double(scores[t * E + e]) / St;
    gdot = warp_sum_d(gdot);
    for (int e = lane; e < E; e += 32) dscores[t * E + e] = float((g[e] - gdot) / St);
  }
}

// ---- counts ---------------------------------------------------------------------------------

constexpr int kCountSmem = 8192;   // experts counted in shared memory first

__global__ void count_kernel(const int32_t* __restrict__ idx, int64_t n, int E,
                             int32_t* __restrict__ counts) {
  __shared__ int hist[kCountSmem];
  const bool local = E <= kCountSmem;
  if (local) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
    __syncthreads();
  }
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int e = idx[i];
    if (e < 0 || e >= E) continue;
    if (local) atomicAdd(&hist[e], 1);
    else atomicAdd(&counts[e], 1);
  }
  if (local) {
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x)
      if (hist[e]) atomicAdd(&counts[e], hist[e]);
  }
}

// ---- the pairs' stable sort by expert, their padded layout and the combine back into the
// tokens: kernels/moe_sort.cuh, moe_pad.cuh and moe_combine.cuh (plain CUDA C++, run by the
// host emulator too), launched below -----------------------------------------------------------

unsigned warp_grid(int64_t items, int warps_per_block) {
  const int64_t b = cdiv(items, warps_per_block);
  const int64_t cap = int64_t(sm_count() > 0 ? sm_count() : 132) * 64;
  return unsigned(b < 1 ? 1 : b > cap ? cap : b);
}

}  // namespace

void moe_route(const float* logits, const float* bias, int64_t N, int64_t E,
               const MoeRouteArgs& p, float* scores, int32_t* idx, float* weights) {
  if (N <= 0) return;
  RouteK k{int(E), p.n_groups, p.topk_groups, p.topk, p.sigmoid, p.norm_topk, p.route_scale, 0};
  k.warp_bytes = route_warp_bytes(k.E, k.K, k.G);
  int wpb = kRouteWarps;
  while (wpb > 1 && wpb * k.warp_bytes > 48 * 1024) wpb /= 2;
  route_kernel<<<warp_grid(N, wpb), wpb * 32, size_t(wpb) * k.warp_bytes, stream()>>>(
      logits, bias, N, k, scores, idx, weights);
  DS_CUDA_LAUNCHED();
}

void moe_route_backward(const float* scores, const int32_t* idx, const float* dweights,
                        const float* dscores_extra, int64_t N, int64_t E, const MoeRouteArgs& p,
                        float* dlogits) {
  if (N <= 0) return;
  route_backward_kernel<<<warp_grid(N, 8), 256, 0, stream()>>>(
      scores, idx, dweights, dscores_extra, N, int(E), p.topk, p.sigmoid, p.norm_topk,
      p.route_scale, dlogits);
  DS_CUDA_LAUNCHED();
}

double moe_balance_loss(const float* scores, const int32_t* idx, int64_t n_seq, int64_t seq_len,
                        int64_t E, int64_t K, float alpha, float* dscores) {
  const int64_t N = n_seq * seq_len;
  const int nchunk = int(cdiv(seq_len, kBalanceChunk));
  // One scratch block: S (N), partial (n_seq, nchunk, E), cf (n_seq, E), lseq (n_seq),
  // total (1) as doubles, then counts (n_seq, E) ints.
  const size_t nd = size_t(N) + size_t(n_seq) * nchunk * E + size_t(n_seq) * E + n_seq + 1;
  double* S = static_cast<double*>(scratch(nd * sizeof(double) + size_t(n_seq) * E * sizeof(int)));
  double* partial = S + N;
  double* cf = partial + size_t(n_seq) * nchunk * E;
  double* lseq = cf + size_t(n_seq) * E;
  double* total = lseq + n_seq;
  int* counts = reinterpret_cast<int*>(total + 1);
  DS_CUDA_CHECK(cudaMemsetAsync(counts, 0, size_t(n_seq) * E * sizeof(int), stream()));
  balance_stats_kernel<<<warp_grid(N, 8), 256, 0, stream()>>>(scores, idx, N, int(E), int(K),
                                                              seq_len, S, counts);
  DS_CUDA_LAUNCHED();
  balance_partial_kernel<<<dim3(unsigned(nchunk), unsigned(n_seq)), 256, 0, stream()>>>(
      scores, S, int(E), seq_len, partial);
  DS_CUDA_LAUNCHED();
  balance_finish_kernel<<<unsigned(n_seq), 256, 0, stream()>>>(
      partial, counts, nchunk, int(E), int(K), seq_len, n_seq, double(alpha), cf, lseq);
  DS_CUDA_LAUNCHED();
  balance_total_kernel<<<1, 32, 0, stream()>>>(lseq, n_seq, total);
  DS_CUDA_LAUNCHED();
  if (dscores) {
    balance_grad_kernel<<<warp_grid(N, 8), 256, 0, stream()>>>(scores, S, cf, N, int(E),
                                                               seq_len, dscores);
    DS_CUDA_LAUNCHED();
  }
  double h = 0;
  DS_CUDA_CHECK(cudaMemcpyAsync(&h, total, sizeof(double), cudaMemcpyDeviceToHost, stream()));
  DS_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return h;
}

void moe_count(const int32_t* idx, int64_t n, int64_t E, int32_t* counts) {
  if (n <= 0 || E <= 0) return;
  count_kernel<<<grid_for(n, 256, int64_t(sm_count() > 0 ? sm_count() : 132) * 4), 256, 0,
                 stream()>>>(idx, n, int(E), counts);
  DS_CUDA_LAUNCHED();
}

namespace {
// The counts' way to the host: a pinned buffer (grown as needed; one at a time, the op
// waits for it before returning) and the event that marks the copy done.
struct CountsDownload {
  int32_t* pinned = nullptr;
  int64_t cap = 0;
  cudaEvent_t done = nullptr;
};
CountsDownload& counts_download(int64_t E) {
  thread_local CountsDownload d;
  if (!d.done) DS_CUDA_CHECK(cudaEventCreateWithFlags(&d.done, cudaEventDisableTiming));
  if (E > d.cap) {
    if (d.pinned) DS_CUDA_CHECK(cudaFreeHost(d.pinned));
    d.pinned = nullptr;
    d.cap = 0;   // (should the allocation below throw, the next call allocates again)
    DS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&d.pinned), size_t(E) * sizeof(int32_t),
                                cudaHostAllocDefault));
    d.cap = E;
  }
  return d;
}
}  // namespace

void moe_sort_pairs(const int32_t* idx, int64_t NK, int64_t K, int64_t E, int32_t* counts,
                    int32_t* pair_src, int32_t* pair_tok, int32_t* pair_slot,
                    int32_t* host_counts) {
  if (E <= 0) return;
  memset0(counts, size_t(E) * sizeof(int32_t));
  if (NK > 0) moe_count(idx, NK, E, counts);
  CountsDownload* d = nullptr;
  if (host_counts) {   // copied as soon as counted: the sort below runs while the host goes on
    d = &counts_download(E);
    DS_CUDA_CHECK(cudaMemcpyAsync(d->pinned, counts, size_t(E) * sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, stream()));
    DS_CUDA_CHECK(cudaEventRecord(d->done, stream()));
  }
  if (NK > 0) {
    moesort::sort_pairs_kernel<<<unsigned(E), moesort::kSortThreads, 0, stream()>>>(
        idx, NK, K, counts, pair_src, pair_tok, pair_slot);
    DS_CUDA_LAUNCHED();
  }
  if (d) {
    DS_CUDA_CHECK(cudaEventSynchronize(d->done));
    std::memcpy(host_counts, d->pinned, size_t(E) * sizeof(int32_t));
  }
}

void moe_pad_pairs(const int32_t* pair_src, const float* pair_w, const int32_t* tab, int64_t E,
                   int64_t K, int64_t N, int64_t NKp, int32_t* p_tok, float* p_w, int32_t* p_row,
                   int32_t* p_pair) {
  if (NKp <= 0) return;
  moepad::pad_pairs_kernel<<<unsigned(cdiv(NKp, moepad::kPadThreads)), moepad::kPadThreads, 0,
                             stream()>>>(pair_src, pair_w, tab, int(E), int(K), int(N), int(NKp),
                                         p_tok, p_w, p_row, p_pair);
  DS_CUDA_LAUNCHED();
}

void combine_pairs(const void* src, bool bf16, int64_t R, const int32_t* slot, const float* w,
                   float* dst, int64_t N, int64_t K, int64_t C) {
  if (N <= 0 || K <= 0 || C <= 0) return;
  if (K > moecombine::kCombineMaxK)
    raise_cuda("combine_pairs: more than 16 pairs a token", cudaErrorInvalidValue, __FILE__,
               __LINE__);
  auto bits = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  const bool vec = C % 4 == 0 && bits(src) % (bf16 ? 8 : 16) == 0 && bits(dst) % 16 == 0;
  using namespace moecombine;
  auto* k = vec ? (bf16 ? combine_pairs_kernel<true, true> : combine_pairs_kernel<true, false>)
                : (bf16 ? combine_pairs_kernel<false, true> : combine_pairs_kernel<false, false>);
  k<<<warp_grid(N, 8), 256, 0, stream()>>>(src, slot, w, dst, R, N, int(K), C);
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
