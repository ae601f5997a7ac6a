// MoE routing on the GPU (declared in moe_route.cuh): the launchers of the scores and
// group-limited top-K selection and its backward (kernels/moe_router.cuh), the sequence-wise
// balance loss and the expert counts (kernels/moe_balance.cuh), the pairs' sort, padded layout
// and combine (kernels/moe_sort.cuh, moe_pad.cuh, moe_combine.cuh): every kernel plain CUDA
// C++ that the host emulator runs too.
#include <cstring>

#include "kernels/common.cuh"
#include "kernels/moe_balance.cuh"
#include "kernels/moe_combine.cuh"
#include "kernels/moe_pad.cuh"
#include "kernels/moe_route.cuh"
#include "kernels/moe_router.cuh"
#include "kernels/moe_sort.cuh"

namespace ds::cuda {

namespace {

unsigned warp_grid(int64_t items, int warps_per_block) {
  const int64_t b = cdiv(items, warps_per_block);
  const int64_t cap = int64_t(sm_count() > 0 ? sm_count() : 132) * 64;
  return unsigned(b < 1 ? 1 : b > cap ? cap : b);
}

}  // namespace

void moe_route(const float* logits, const float* bias, int64_t N, int64_t E,
               const MoeRouteArgs& p, float* scores, int32_t* idx, float* weights) {
  if (N <= 0) return;
  using namespace moeroute;
  RouteK k{int(E), p.n_groups, p.topk_groups, p.topk, p.sigmoid, p.norm_topk, p.route_scale, 0};
  k.warp_bytes = route_warp_bytes(k.E, k.K, k.G);
  const int wpb = route_warps_per_block(k.warp_bytes);
  route_kernel<<<warp_grid(N, wpb), wpb * 32, size_t(wpb) * k.warp_bytes, stream()>>>(
      logits, bias, N, k, scores, idx, weights);
  DS_CUDA_LAUNCHED();
}

void moe_route_backward(const float* scores, const int32_t* idx, const float* dweights,
                        const float* dscores_extra, int64_t N, int64_t E, const MoeRouteArgs& p,
                        float* dlogits) {
  if (N <= 0) return;
  using moeroute::route_backward_kernel;
  route_backward_kernel<<<warp_grid(N, 8), 256, 0, stream()>>>(
      scores, idx, dweights, dscores_extra, N, int(E), p.topk, p.sigmoid, p.norm_topk,
      p.route_scale, dlogits);
  DS_CUDA_LAUNCHED();
}

double moe_balance_loss(const float* scores, const int32_t* idx, int64_t n_seq, int64_t seq_len,
                        int64_t E, int64_t K, float alpha, float* dscores,
                        const int32_t* lengths) {
  using namespace moebalance;
  const int64_t N = n_seq * seq_len;
  const int nchunk = int(cdiv(seq_len, kBalanceChunk));
  // One scratch block: S (N), partial (n_seq, nchunk, E), cf (n_seq, E), lseq (n_seq),
  // total (1) as doubles, then counts (n_seq, E) and the lengths (n_seq) as ints.
  const size_t nd = size_t(N) + size_t(n_seq) * nchunk * E + size_t(n_seq) * E + n_seq + 1;
  const size_t ni = size_t(n_seq) * E + (lengths ? size_t(n_seq) : 0);
  double* S = static_cast<double*>(scratch(nd * sizeof(double) + ni * sizeof(int)));
  double* partial = S + N;
  double* cf = partial + size_t(n_seq) * nchunk * E;
  double* lseq = cf + size_t(n_seq) * E;
  double* total = lseq + n_seq;
  int* counts = reinterpret_cast<int*>(total + 1);
  int32_t* len = nullptr;
  if (lengths) {   // pageable source: the copy has read it when the call returns
    len = counts + size_t(n_seq) * E;
    DS_CUDA_CHECK(cudaMemcpyAsync(len, lengths, size_t(n_seq) * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream()));
  }
  DS_CUDA_CHECK(cudaMemsetAsync(counts, 0, size_t(n_seq) * E * sizeof(int), stream()));
  balance_stats_kernel<<<warp_grid(N, 8), 256, 0, stream()>>>(scores, idx, N, int(E), int(K),
                                                              seq_len, len, S, counts);
  DS_CUDA_LAUNCHED();
  balance_partial_kernel<<<dim3(unsigned(nchunk), unsigned(n_seq)), 256, 0, stream()>>>(
      scores, S, int(E), seq_len, len, partial);
  DS_CUDA_LAUNCHED();
  balance_finish_kernel<<<unsigned(n_seq), 256, 0, stream()>>>(
      partial, counts, nchunk, int(E), int(K), seq_len, len, n_seq, double(alpha), cf, lseq);
  DS_CUDA_LAUNCHED();
  balance_total_kernel<<<1, 32, 0, stream()>>>(lseq, n_seq, total);
  DS_CUDA_LAUNCHED();
  if (dscores) {
    balance_grad_kernel<<<warp_grid(N, 8), 256, 0, stream()>>>(scores, S, cf, N, int(E),
                                                               seq_len, len, dscores);
    DS_CUDA_LAUNCHED();
  }
  double h = 0;
  DS_CUDA_CHECK(cudaMemcpyAsync(&h, total, sizeof(double), cudaMemcpyDeviceToHost, stream()));
  DS_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return h;
}

void moe_count(const int32_t* idx, int64_t n, int64_t E, int32_t* counts) {
  using moebalance::count_kernel;
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
