// MoE router (see gate.hpp), forward and exact backward.
// reference: DeepSeek-V3 inference/model.py Gate.forward (sigmoid scores, bias for selection
// only, group-limited top-k, weights renormalised and scaled); spec §1.9-1.10.
#include "ds/model/gate.hpp"

#include "ds/core/error.hpp"
#include "model_util.hpp"

namespace ds::model {

using detail::empty_f32;

Gate::Gate(ParamStore& st, const ModelArgs& a, const std::string& prefix, int layer)
    : C(a.dim), E(a.n_routed_experts), K(a.n_activated_experts), store(&st) {
  rp.n_groups = int(a.n_expert_groups);
  rp.topk_groups = int(a.n_limited_groups);
  rp.topk = int(a.n_activated_experts);
  rp.sigmoid = a.score_func == "sigmoid";
  rp.norm_topk = a.norm_topk_prob;
  rp.route_scale = float(a.route_scale);
  // The router stays in high precision in the released checkpoints: not FP8.
  weight = &add_matrix(st, prefix + "weight", E, C, a.init_std, /*fp8=*/false, layer);
  if (a.gate_bias) {
    bias_index = std::ptrdiff_t(st.buffers().size());
    st.add_buffer(prefix + "e_score_correction_bias", {E});
  }
}

Tensor Gate::bias() const {
  if (bias_index < 0) return Tensor();
  return store->buffers()[size_t(bias_index)].second;
}

void Gate::forward(const ops::Context& ctx, const Tensor& u, GateSaved& s) const {
  const int64_t N = u.size(0);
  s.u = u;
  Tensor logits = empty_f32(ctx, {N, E});
  ops::linear_forward(ctx, u, weight->value, logits);     // F32 master weights: FP32 logits
  s.scores = empty_f32(ctx, {N, E});
  s.idx = Tensor::empty({N, K}, DType::i32, ctx.device);
  s.weights = empty_f32(ctx, {N, K});
  ops::moe_route(ctx, logits, bias(), rp, s.scores, s.idx, s.weights);
}

double Gate::balance_loss(const ops::Context& ctx, GateSaved& s, int64_t n_seq, int64_t seq_len,
                          float alpha, float grad_scale, bool want_grad,
                          std::span<const int32_t> lengths) const {
  DS_CHECK(n_seq * seq_len == s.scores.size(0), "balance loss: {} x {} tokens for {} rows",
           n_seq, seq_len, s.scores.size(0));
  // Nothing to compute for inference without the loss (generation, rollouts, scoring): on the
  // GPU that is four kernels and a wait for the host per MoE layer and decode step.
  if (alpha == 0.0f && !want_grad) return 0.0;
  Tensor none;
  if (want_grad) s.dscores = empty_f32(ctx, s.scores.shape());
  const double loss = ops::moe_balance_loss(ctx, s.scores, s.idx, int(n_seq), int(seq_len), alpha,
                                            want_grad ? s.dscores : none, lengths);
  if (want_grad) ops::scale_(ctx, s.dscores, grad_scale);
  return loss;
}

void Gate::backward(const ops::Context& ctx, const GateSaved& s, const Tensor& dweights,
                    Tensor& du, bool accumulate) const {
  DS_CHECK(weight->grad.defined(), "{}: gradient not allocated", weight->info.name);
  Tensor dlogits = empty_f32(ctx, s.scores.shape());
  ops::moe_route_backward(ctx, s.scores, s.idx, dweights, s.dscores, rp, dlogits);
  if (accumulate && !ops::gemm_accumulates(ctx)) {   // into a temporary, then du +=
    Tensor t = empty_f32(ctx, s.u.shape());
    ops::linear_backward(ctx, s.u, weight->value, dlogits, t, weight->grad);
    ops::add_(ctx, du, t);
    return;
  }
  if (!accumulate && !du.defined()) du = empty_f32(ctx, s.u.shape());
  DS_CHECK_SHAPE(du, {s.u.size(0), s.u.size(1)});
  ops::linear_backward(ctx, s.u, weight->value, dlogits, du, weight->grad,
                       accumulate ? 1.0f : 0.0f);
}

}  // namespace ds::model
