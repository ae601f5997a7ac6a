// MoE router: FP32 logits W_gate u, scores sigmoid (or softmax), bias-adjusted group-limited
// top-K selection, weights from the unbiased scores (ops::moe_route), the sequence-wise
// balance loss (ops::moe_balance_loss) and the backward into W_gate through the weights and the
// balance loss. The e_score_correction_bias is a buffer of the ParamStore (no gradient).
// reference: DeepSeek-V3 inference/model.py Gate.forward; spec §1.9-1.10; docs/model.md "MoE".
#pragma once
#include <cstddef>
#include <string>

#include "ds/model/config.hpp"
#include "ds/model/linear.hpp"

namespace ds::model {

struct GateSaved {
  Tensor u;          // (N, C) router input (the block's ffn_norm output)
  Tensor scores;     // (N, E) sigmoid (or softmax) of the logits, unbiased
  Tensor idx;        // (N, K) i32 selected experts, by descending selection score
  Tensor weights;    // (N, K) gate weights (normalised, times route_scale)
  Tensor dscores;    // (N, E) d(balance loss * grad_scale)/d scores, or undefined
};

struct Gate {
  int64_t C = 0, E = 0, K = 0;
  ops::RouteParams rp;
  Param* weight = nullptr;           // (E, C) mlp.gate.weight
  ParamStore* store = nullptr;
  std::ptrdiff_t bias_index = -1;    // index of mlp.gate.e_score_correction_bias (E) in buffers()

  Gate() = default;
  // prefix e.g. "model.layers.3.mlp.gate."
  Gate(ParamStore& store, const ModelArgs& args, const std::string& prefix, int layer);
  Tensor bias() const;               // (E) the correction bias, or undefined without gate_bias
  void forward(const ops::Context& ctx, const Tensor& u /*(N,C)*/, GateSaved& s) const;
  // Balance loss of this layer (alpha * mean over the n_seq sequences, each its first
  // lengths[s] tokens when lengths is not empty). When want_grad, stores
  // grad_scale * dL/dscores in s.dscores for backward().
  double balance_loss(const ops::Context& ctx, GateSaved& s, int64_t n_seq, int64_t seq_len,
                      float alpha, float grad_scale, bool want_grad,
                      std::span<const int32_t> lengths = {}) const;
  // du (N, C) overwritten (allocated when undefined), or with accumulate du (defined) += the
  // router's input gradient (by the GEMM itself where ops::gemm_accumulates); weight.grad +=.
  // dweights (N, K) is the gradient w.r.t. s.weights; s.dscores (if defined) is added at the
  // scores.
  void backward(const ops::Context& ctx, const GateSaved& s, const Tensor& dweights /*(N,K)*/,
                Tensor& du /*(N,C)*/, bool accumulate = false) const;
};

}  // namespace ds::model
