// CUDA path of the losses and routing ops (ops_cuda.hpp, "losses and routing"): cross-entropy,
// per-token log-probabilities, MoE routing, its backward, the balance loss and expert counts.
// The dispatchers (ops.cpp, token_logprob.cpp) have checked shapes and devices; here the
// dtypes are checked and the Tensors turned into the pointers of the launchers in
// kernels/cross_entropy.cu and kernels/moe_route.cu. Index tensors are not range-checked on
// the host for GPU tensors: the kernels skip bad targets / expert indices instead.
#include <algorithm>
#include <climits>

#include "ds/core/error.hpp"
#include "kernels/cross_entropy.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/moe_route.cuh"
#include "kernels/runtime.cuh"
#include "ops_cuda.hpp"

namespace ds::ops::cuda {

namespace {

void check_f32(const Tensor& t, const char* op, const char* what) {
  DS_CHECK(t.dtype() == DType::f32, "{}: {} must be f32 on the GPU, got {}", op, what,
           dtype_name(t.dtype()));
}
void check_i32(const Tensor& t, const char* op, const char* what) {
  DS_CHECK(t.dtype() == DType::i32, "{}: {} must be i32, got {}", op, what, dtype_name(t.dtype()));
}
// logits (N, V) f32, targets (N) i32; V must fit the kernels' int row index.
void check_rows(const Tensor& logits, const Tensor& targets, const char* op) {
  check_f32(logits, op, "logits");
  check_i32(targets, op, "targets");
  DS_CHECK(logits.size(1) <= INT_MAX / 2, "{}: vocabulary {} too large for the CUDA kernels", op,
           logits.size(1));
}
float* f32_or_null(const Tensor& t) { return t.defined() ? t.f32() : nullptr; }

ds::cuda::MoeRouteArgs route_args(const RouteParams& p) {
  ds::cuda::MoeRouteArgs a;
  a.n_groups = p.n_groups;
  a.topk_groups = p.topk_groups;
  a.topk = p.topk;
  a.sigmoid = p.sigmoid;
  a.norm_topk = p.norm_topk;
  a.route_scale = p.route_scale;
  return a;
}

}  // namespace

// ---- cross-entropy ---------------------------------------------------------------------------

void cross_entropy_forward(const Context&, const Tensor& logits, const Tensor& targets,
                           Tensor& losses) {
  check_rows(logits, targets, "cross_entropy_forward");
  check_f32(losses, "cross_entropy_forward", "losses");
  ds::cuda::cross_entropy(logits.f32(), targets.i32(), logits.size(0), logits.size(1), 1.0f,
                          losses.f32(), nullptr);
}

void cross_entropy_backward(const Context&, const Tensor& logits, const Tensor& targets,
                            float scale, Tensor& dlogits) {
  check_rows(logits, targets, "cross_entropy_backward");
  check_f32(dlogits, "cross_entropy_backward", "dlogits");
  ds::cuda::cross_entropy(logits.f32(), targets.i32(), logits.size(0), logits.size(1), scale,
                          nullptr, dlogits.f32());
}

void cross_entropy_forward_backward(const Context&, const Tensor& logits, const Tensor& targets,
                                    float scale, Tensor& losses, Tensor& dlogits) {
  check_rows(logits, targets, "cross_entropy_forward_backward");
  if (losses.defined()) check_f32(losses, "cross_entropy_forward_backward", "losses");
  const int64_t N = logits.size(0), V = logits.size(1);
  if (dlogits.dtype() != DType::bf16) {
    check_f32(dlogits, "cross_entropy_forward_backward", "dlogits");
    ds::cuda::cross_entropy(logits.f32(), targets.i32(), N, V, scale, f32_or_null(losses),
                            dlogits.f32());
  } else if (ds::cuda::fused_ops()) {   // the head's BF16 GEMM operand straight from the kernel
    ds::cuda::cross_entropy_codes(logits.f32(), targets.i32(), N, V, scale, f32_or_null(losses),
                                  dlogits.data<uint16_t>());
  } else {   // DS_CUDA_FUSED=0: F32 into a temporary, then bf16_round
    const Tensor t = Tensor::empty(logits.shape(), DType::f32, Device::cuda);
    ds::cuda::cross_entropy(logits.f32(), targets.i32(), N, V, scale, f32_or_null(losses), t.f32());
    ds::cuda::bf16_round(t.f32(), nullptr, dlogits.data<uint16_t>(), N * V);
  }
}

// ---- per-token log-probabilities -------------------------------------------------------------

void token_logprob_forward(const Context&, const Tensor& logits, const Tensor& targets,
                           Tensor& logp, Tensor& lse, Tensor& entropy) {
  check_rows(logits, targets, "token_logprob_forward");
  check_f32(logp, "token_logprob_forward", "logp");
  check_f32(lse, "token_logprob_forward", "lse");
  if (entropy.defined()) check_f32(entropy, "token_logprob_forward", "entropy");
  ds::cuda::token_logprob_forward(logits.f32(), targets.i32(), logits.size(0), logits.size(1),
                                  logp.f32(), lse.f32(), f32_or_null(entropy));
}

void token_logprob_backward(const Context&, const Tensor& logits, const Tensor& targets,
                            const Tensor& lse, const Tensor& dlogp, Tensor& dlogits) {
  check_rows(logits, targets, "token_logprob_backward");
  check_f32(lse, "token_logprob_backward", "lse");
  check_f32(dlogp, "token_logprob_backward", "dlogp");
  const int64_t N = logits.size(0), V = logits.size(1);
  if (dlogits.dtype() != DType::bf16) {
    check_f32(dlogits, "token_logprob_backward", "dlogits");
    ds::cuda::token_logprob_backward(logits.f32(), targets.i32(), lse.f32(), dlogp.f32(), N, V,
                                     dlogits.f32());
  } else if (ds::cuda::fused_ops()) {   // the policy head's BF16 GEMM operand
    ds::cuda::token_logprob_backward_codes(logits.f32(), targets.i32(), lse.f32(), dlogp.f32(),
                                           N, V, dlogits.data<uint16_t>());
  } else {   // DS_CUDA_FUSED=0: F32 into a temporary, then bf16_round
    const Tensor t = Tensor::empty(logits.shape(), DType::f32, Device::cuda);
    ds::cuda::token_logprob_backward(logits.f32(), targets.i32(), lse.f32(), dlogp.f32(), N, V,
                                     t.f32());
    ds::cuda::bf16_round(t.f32(), nullptr, dlogits.data<uint16_t>(), N * V);
  }
}

// ---- MoE routing -----------------------------------------------------------------------------

void moe_route(const Context&, const Tensor& logits, const Tensor& bias, const RouteParams& p,
               Tensor& scores, Tensor& idx, Tensor& weights) {
  const char* op = "moe_route";
  check_f32(logits, op, "logits");
  if (bias.defined()) check_f32(bias, op, "bias");
  check_f32(scores, op, "scores");
  check_i32(idx, op, "idx");
  check_f32(weights, op, "weights");
  const int64_t E = logits.size(1);
  DS_CHECK(E <= ds::cuda::kMoeMaxExperts, "moe_route: {} experts, the CUDA kernel takes at most {}",
           E, ds::cuda::kMoeMaxExperts);
  ds::cuda::moe_route(logits.f32(), f32_or_null(bias), logits.size(0), E, route_args(p),
                      scores.f32(), idx.i32(), weights.f32());
}

void moe_route_backward(const Context&, const Tensor& scores, const Tensor& idx,
                        const Tensor& dweights, const Tensor& dscores_extra, const RouteParams& p,
                        Tensor& dlogits) {
  const char* op = "moe_route_backward";
  check_f32(scores, op, "scores");
  check_i32(idx, op, "idx");
  check_f32(dweights, op, "dweights");
  if (dscores_extra.defined()) check_f32(dscores_extra, op, "dscores_extra");
  check_f32(dlogits, op, "dlogits");
  ds::cuda::moe_route_backward(scores.f32(), idx.i32(), dweights.f32(), f32_or_null(dscores_extra),
                               scores.size(0), scores.size(1), route_args(p), dlogits.f32());
}

double moe_balance_loss(const Context&, const Tensor& scores, const Tensor& idx, int n_seq,
                        int seq_len, float alpha, Tensor& dscores,
                        std::span<const int32_t> lengths) {
  const char* op = "moe_balance_loss";
  check_f32(scores, op, "scores");
  check_i32(idx, op, "idx");
  if (dscores.defined()) check_f32(dscores, op, "dscores");
  DS_CHECK(n_seq <= 65535, "moe_balance_loss: {} sequences, the CUDA path takes at most 65535",
           n_seq);
  return ds::cuda::moe_balance_loss(scores.f32(), idx.i32(), n_seq, seq_len, scores.size(1),
                                    idx.size(1), alpha, f32_or_null(dscores),
                                    lengths.empty() ? nullptr : lengths.data());
}

void moe_count(const Context&, const Tensor& idx, Tensor& counts) {
  check_i32(idx, "moe_count", "idx");
  check_i32(counts, "moe_count", "counts");
  ds::cuda::moe_count(idx.i32(), idx.numel(), counts.size(0), counts.i32());
}

// moe_sort_pairs, moe_pad_pairs, combine_pairs: shapes and dtypes checked by
// lib/ops/moe_pairs.cpp.
void moe_sort_pairs(const Context&, const Tensor& idx, Tensor& counts, Tensor& pair_src,
                    Tensor& pair_tok, Tensor& pair_slot, std::vector<int32_t>* host_counts) {
  ds::cuda::moe_sort_pairs(idx.i32(), idx.numel(), idx.size(1), counts.size(0), counts.i32(),
                           pair_src.i32(), pair_tok.i32(),
                           pair_slot.defined() ? pair_slot.i32() : nullptr,
                           host_counts ? host_counts->data() : nullptr);
}

void moe_pad_pairs(const Context&, const Tensor& pair_src, const Tensor& pair_w, int64_t K,
                   const std::vector<int64_t>& offsets, const std::vector<int64_t>& p_offsets,
                   Tensor& p_tok, Tensor& p_w, Tensor& p_row, Tensor& p_pair) {
  const int64_t E = int64_t(offsets.size()) - 1, NKp = p_offsets.back();
  if (NKp == 0) return;
  // the two offset tables as one I32 upload (staged: no wait for the GPU)
  Tensor host = Tensor::empty({2 * (E + 1)}, DType::i32);
  for (int64_t e = 0; e <= E; ++e) {
    host.i32()[e] = int32_t(offsets[size_t(e)]);
    host.i32()[E + 1 + e] = int32_t(p_offsets[size_t(e)]);
  }
  Tensor tab = Tensor::empty(host.shape(), DType::i32, Device::cuda);
  tab.copy_from(host);
  ds::cuda::moe_pad_pairs(pair_src.i32(), pair_w.f32(), tab.i32(), E, K,
                          std::max<int64_t>(offsets.back() / K, 1), NKp, p_tok.i32(), p_w.f32(),
                          p_row.i32(), p_pair.i32());
}

void combine_pairs(const Context&, const Tensor& src, const Tensor& slot, const Tensor& w,
                   Tensor& dst) {
  ds::cuda::combine_pairs(src.raw(), src.dtype() == DType::bf16, src.size(0), slot.i32(),
                          w.defined() ? w.f32() : nullptr, dst.f32(), slot.size(0),
                          slot.size(1), src.size(1));
}

}  // namespace ds::ops::cuda
