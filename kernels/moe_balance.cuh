// The MoE layer's sequence-wise balance loss and expert counts on the GPU (ops::moe_balance_loss
// and ops::moe_count): included by kernels/moe_route.cu, which launches them, and by the host
// emulation test tests/kernels/test_emu_moe_balance.cpp, which runs this same source on a CPU
// against the reference. Plain CUDA C++ without inline PTX, so that the emulator
// (tests/kernels/cuda_emu.hpp) can run it.
#pragma once
#include <cstdint>

#include "kernels/warp_reduce.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::moebalance {
namespace {

// ---- balance loss ---------------------------------------------------------------------------

// The tokens of sequence sq that count: len[sq], or all seq_len when len is null (the rest
// of the sequence is padding).
__device__ __forceinline__ int64_t seq_tokens(const int32_t* len, int64_t sq, int64_t seq_len) {
  return len ? int64_t(len[sq]) : seq_len;
}

// Per token: S[t] = sum_e scores (double); expert hits counted per sequence (padding skipped).
__global__ void balance_stats_kernel(const float* __restrict__ scores,
                                     const int32_t* __restrict__ idx, int64_t N, int E, int K,
                                     int64_t seq_len, const int32_t* __restrict__ len,
                                     double* __restrict__ S,
                                     int* __restrict__ counts /*(n_seq, E)*/) {
  const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
  for (int64_t t = int64_t(blockIdx.x) * wpb + (threadIdx.x >> 5); t < N;
       t += int64_t(gridDim.x) * wpb) {
    double z = 0;
    for (int e = lane; e < E; e += 32) z += double(scores[t * E + e]);
    z = warp_sum_d(z);
    if (lane == 0) S[t] = z;
    const int64_t sq = t / seq_len;
    if (t - sq * seq_len >= seq_tokens(len, sq, seq_len)) continue;
    for (int k = lane; k < K; k += 32) {
      const int e = idx[t * K + k];
      if (e >= 0 && e < E) atomicAdd(&counts[sq * E + e], 1);
    }
  }
}

constexpr int kBalanceChunk = 64;   // tokens per partial sum of P

// partial[(sq, chunk, e)] = sum over the chunk's tokens (padding excluded) of
// scores[t, e] / S[t]; a fixed order, so the loss is deterministic. grid (chunks, n_seq).
__global__ void balance_partial_kernel(const float* __restrict__ scores,
                                       const double* __restrict__ S, int E, int64_t seq_len,
                                       const int32_t* __restrict__ len,
                                       double* __restrict__ partial) {
  const int64_t sq = blockIdx.y, ch = blockIdx.x;
  const int64_t L = seq_tokens(len, sq, seq_len);
  const int64_t t0 = sq * seq_len + ch * kBalanceChunk;
  const int64_t t1 = sq * seq_len + min(L, (ch + 1) * int64_t(kBalanceChunk));
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    double acc = 0;
    for (int64_t t = t0; t < t1; ++t) acc += double(scores[t * E + e]) / S[t];
    partial[(sq * gridDim.x + ch) * E + e] = acc;
  }
}

// Per sequence of L tokens: f_e = hits * E / (K L), P_e = mean of s_e / S; lseq = alpha l /
// n_seq with l = sum_e f_e P_e; cf = c f_e with c = alpha / (n_seq L) (for the gradient). An
// empty sequence (L = 0) gives l = 0 and cf = 0.
__global__ void balance_finish_kernel(const double* __restrict__ partial,
                                      const int* __restrict__ counts, int nchunk, int E, int K,
                                      int64_t seq_len, const int32_t* __restrict__ len,
                                      int64_t n_seq, double alpha, double* __restrict__ cf,
                                      double* __restrict__ lseq) {
  __shared__ double sh[32];
  const int64_t sq = blockIdx.x;
  const int64_t L = seq_tokens(len, sq, seq_len);
  const double c = L > 0 ? alpha / double(n_seq * L) : 0.0;
  double l = 0;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    if (L == 0) {
      cf[sq * E + e] = 0;
      continue;
    }
    double P = 0;
    for (int ch = 0; ch < nchunk; ++ch) P += partial[(sq * nchunk + ch) * E + e];
    P /= double(L);
    const double f = double(counts[sq * E + e]) * double(E) / double(int64_t(K) * L);
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

// dscores[t, e] = (g_e - g.s/S) / S with g_e = c f_e (the gradient through P only); 0 on
// padding.
__global__ void balance_grad_kernel(const float* __restrict__ scores, const double* __restrict__ S,
                                    const double* __restrict__ cf, int64_t N, int E,
                                    int64_t seq_len, const int32_t* __restrict__ len,
                                    float* __restrict__ dscores) {
  const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
  for (int64_t t = int64_t(blockIdx.x) * wpb + (threadIdx.x >> 5); t < N;
       t += int64_t(gridDim.x) * wpb) {
    const int64_t sq = t / seq_len;
    if (t - sq * seq_len >= seq_tokens(len, sq, seq_len)) {
      for (int e = lane; e < E; e += 32) dscores[t * E + e] = 0.0f;
      continue;
    }
    const double St = S[t];
    const double* g = cf + sq * E;
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

}  // namespace
}  // namespace ds::cuda::moebalance
