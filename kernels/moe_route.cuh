// MoE routing on the GPU (declared here, defined in kernels/moe_route.cu): the router's scores
// and group-limited top-K selection, its backward, the sequence-wise balance loss and the
// expert counts. Semantics in include/ds/ops/ops.hpp ("MoE routing"); the CPU reference is
// lib/ops/cpu/ref_moe.cpp and the selection here reproduces it exactly (same float selection
// scores, same tie and NaN rules). Plain C++ header: all pointers are device pointers, F32
// unless I32 is said; everything runs on ds::cuda::stream().
#pragma once
#include <cstdint>

namespace ds::cuda {

// Largest expert count of moe_route / moe_route_backward (per-warp shared memory).
inline constexpr int64_t kMoeMaxExperts = 2048;

struct MoeRouteArgs {
  int n_groups = 1, topk_groups = 1, topk = 1;
  bool sigmoid = true, norm_topk = true;
  float route_scale = 1.0f;
};

// logits (N, E); bias (E) or null. scores (N, E), idx (N, K) I32, weights (N, K).
// Requires E % n_groups == 0, 1 <= topk_groups <= n_groups, 1 <= K <= topk_groups * E/n_groups.
void moe_route(const float* logits, const float* bias, int64_t N, int64_t E,
               const MoeRouteArgs& p, float* scores, int32_t* idx, float* weights);

// dlogits (N, E) from dweights (N, K) and dscores_extra (N, E) or null. idx entries outside
// [0, E) are skipped.
void moe_route_backward(const float* scores, const int32_t* idx, const float* dweights,
                        const float* dscores_extra, int64_t N, int64_t E, const MoeRouteArgs& p,
                        float* dlogits);

// scores (N, E), idx (N, K), N = n_seq * seq_len sequence-major. Returns the loss (copied to
// the host: this synchronises the stream); writes dscores (N, E) when not null. lengths: null
// or a host array (n_seq) of the tokens of each sequence that count (ops::moe_balance_loss).
double moe_balance_loss(const float* scores, const int32_t* idx, int64_t n_seq, int64_t seq_len,
                        int64_t E, int64_t K, float alpha, float* dscores,
                        const int32_t* lengths = nullptr);

// counts[idx[i]] += 1 for the n entries of idx inside [0, E) (atomics; counts I32).
void moe_count(const int32_t* idx, int64_t n, int64_t E, int32_t* counts);

// ops::moe_sort_pairs: counts (E) = the pairs of each expert (written); pair_src / pair_tok
// (NK) in expert order, pairs ascending within an expert; pair_slot (NK, may be null) the
// inverse. NK < 2^31. host_counts (E host ints, may be null): the counts also on the host,
// copied as soon as they are counted (the call waits for that copy only; the sort is queued
// behind it).
void moe_sort_pairs(const int32_t* idx, int64_t NK, int64_t K, int64_t E, int32_t* counts,
                    int32_t* pair_src, int32_t* pair_tok, int32_t* pair_slot,
                    int32_t* host_counts = nullptr);
// ops::moe_pad_pairs: the FP8 grouped experts' padded layout (kernels/moe_pad.cuh) from the
// expert-sorted pair_src / pair_w (NK) and a device table of the E + 1 sorted-pair offsets
// then the E + 1 padded offsets (I32); NKp = the last padded offset < 2^31, N = NK / K >= 1.
void moe_pad_pairs(const int32_t* pair_src, const float* pair_w, const int32_t* tab, int64_t E,
                   int64_t K, int64_t N, int64_t NKp, int32_t* p_tok, float* p_w, int32_t* p_row,
                   int32_t* p_pair);
// ops::combine_pairs: dst (N, C) += per token its K rows of src (R rows) in ascending slot
// order (w (N, K) or null), one warp a token, no atomics. K <= 16. src F32, or (bf16) BF16
// codes widened exactly.
void combine_pairs(const void* src, bool bf16, int64_t R, const int32_t* slot, const float* w,
                   float* dst, int64_t N, int64_t K, int64_t C);

}  // namespace ds::cuda
