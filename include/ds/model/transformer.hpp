// DeepSeek-V3 as trained by ds: embedding, n_layers blocks (dense then MoE), final norm,
// untied head, n_mtp_layers MTP modules, and the losses of docs/model.md (next-token CE, MTP CE,
// sequence-wise balance loss). forward_backward runs the forward pass keeping activations and
// an exact manual backward (llm.c style) that accumulates into Param::grad.
// reference: DeepSeek-V3 inference/model.py Transformer; paper §2.2, §2.1.2; spec §1.3-1.11.
//
// Loss normalisation (docs/model.md "Losses"). W = sum of loss_mask over the B*T main targets
// (W = B*T without a mask). L_main = sum_t mask_t CE_t / W. Depth k: row i of a sequence
// predicts main target i+k with weight mask_{i+k} (times [seg_i == seg_{i+k}] with packing);
// L_mtp^k = sum_i w_i CE^k_i / W; L_mtp = lambda / D * sum_k L_mtp^k. Balance losses are over
// all tokens of every sequence (mask ignored). L = L_main + L_mtp + sum_layers L_bal.
// With mtp_lambda == 0 the MTP chain is not run at all (no MTP balance losses; its MoE layers
// report zero expert counts).
//
// Policy gradients (GRPO, ds-rl; docs/model.md "GRPO objective"): token_scores() returns the
// log-probability of every scored target (loss_mask != 0: the sampled completion tokens) and
// the entropy of its softmax; forward_backward_policy() runs one forward, hands the scores to
// a loss callback that returns dL/dlogp per token, and back-propagates
// dlogits_t = dL/dlogp_t * (onehot(y_t) - softmax_t) (one forward + one backward per update).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ds/model/block.hpp"
#include "ds/model/config.hpp"
#include "ds/model/embedding.hpp"
#include "ds/model/mtp.hpp"
#include "ds/model/parallel.hpp"

namespace ds::model {

struct Batch {
  Tensor tokens;      // (B, T+1) i32: inputs x = tokens[:, :T], targets y = tokens[:, 1:]
  Tensor segments;    // (B, T) i32 packed-sample ids (SFT: block-diagonal mask) or undefined
  Tensor positions;   // (B, T) i32 RoPE positions or undefined (= 0..T-1)
  Tensor loss_mask;   // (B, T) f32 weights of the target positions, or undefined (all 1)
  // (B) tokens of each row of `tokens` that are not padding (a prefix, 1..T+1), or empty: none
  // is. Padding is computed like any token, but the MoE balance losses leave it out: row b's
  // sequence is its first lengths[b] - 1 positions (those predicting a real token; k fewer at
  // MTP depth k).
  std::vector<int32_t> lengths;
};

struct LossWeights {
  float mtp_lambda = 0.3f;       // lambda of L_mtp
  float balance_alpha = 1e-4f;   // alpha of every MoE layer's balance loss
};

struct StepResult {
  double loss = 0;               // L_main + L_mtp + loss_balance
  double loss_main = 0;
  double loss_mtp = 0;           // lambda / D * sum_k L_mtp^k
  double loss_balance = 0;       // summed over MoE layers (main and MTP)
  int64_t n_targets = 0;         // main target positions with non-zero weight
  double target_weight = 0;      // W, the normaliser of L_main and L_mtp
  // Per MoE layer of the whole model (moe_layer_names()), (E); zeros for layers another
  // pipeline stage holds.
  std::vector<std::vector<int32_t>> expert_counts;
  std::vector<Tensor> route_idx;   // per MoE layer (N_l, K) i32 selected experts (diagnostics;
                                   // undefined for other stages' layers)
};

// Per-token scores of a batch's main head, (B*T) host arrays in the layout of loss_mask.
struct TokenScores {
  std::vector<float> logp;      // (B*T) log softmax(logits_t)[y_t] of scored targets, else 0
  std::vector<float> entropy;   // (B*T) -sum_v p_v log p_v of the softmax at t, else 0
};
// The policy loss of one forward: returns L_pg and writes dlogp (B*T, zero-filled on entry)
// = dL_pg / dlogp_t for the scored targets (entries of other targets are ignored).
using PolicyLossFn = std::function<double(const TokenScores& scores, std::vector<float>& dlogp)>;

class Transformer {
 public:
  // Registers every parameter and buffer in `store` (HF names, registration order = dataflow
  // order); with a shape-only store nothing large is allocated (see describe_params). With a
  // ModelParallel only this rank's part is registered (include/ds/model/parallel.hpp).
  Transformer(const ModelArgs& args, ParamStore& store, const ModelParallel& par = {});
  const ModelArgs& args() const { return args_; }
  const ModelParallel& parallel() const { return par_; }
  ParamStore& store() { return store_; }
  // Main layers [first, second) this rank holds.
  std::pair<int64_t, int64_t> local_layers() const {
    return {layer0_, layer0_ + int64_t(layers_.size())};
  }
  // True when this rank holds a copy of model.embed_tokens.weight for the MTP modules (last
  // pipeline stage, pp > 1, MTP present): its gradient must be summed with the first stage's.
  bool holds_embedding_copy() const { return embed_copy_; }

  // ---- Pipeline stages (docs/distributed.md). forward_backward = stage_forward +
  // stage_backward on a single stage. One pass per micro-batch in flight.
  struct Pass;
  struct PassDeleter { void operator()(Pass* p) const; };
  using PassPtr = std::unique_ptr<Pass, PassDeleter>;
  // This stage's forward of one micro-batch (every stage is given the whole Batch: the first
  // embeds its tokens, the last reads the targets). h_in (N, C): the previous stage's output
  // (ignored on the first stage); h_out receives this stage's output for the next stage
  // (left undefined on the last stage, which computes the losses). With train the pass keeps
  // what stage_backward needs and gradients will be ADDED x grad_scale.
  PassPtr stage_forward(const ops::Context& ctx, const Batch& batch, const LossWeights& lw,
                        float grad_scale, bool train, const Tensor& h_in /*(N,C)*/,
                        Tensor& h_out /*(N,C)*/);
  // dh_out (N, C): gradient at h_out from the next stage (ignored on the last stage); dh_in
  // receives the gradient at h_in for the previous stage (undefined on the first stage).
  void stage_backward(const ops::Context& ctx, Pass& p, const Tensor& dh_out, Tensor& dh_in);
  // The pass's results: head losses on the last stage only (0 elsewhere), the balance losses
  // and expert counts of this stage's MoE layers (zeros for the others); n_targets and
  // target_weight on every stage.
  StepResult stage_result(Pass& p);

  // Forward + backward of one micro-batch; gradients are ADDED (x grad_scale) to Param::grad
  // (allocated here on first use).
  StepResult forward_backward(const ops::Context& ctx, const Batch& batch, const LossWeights& lw,
                              float grad_scale);
  // The same losses without keeping activations or touching gradients.
  StepResult forward_loss(const ops::Context& ctx, const Batch& batch, const LossWeights& lw);
  // Main-model logits for positions 0..T-1 (no MTP); logits allocated when undefined.
  void forward_logits(const ops::Context& ctx, const Tensor& tokens /*(B,T) i32*/,
                      Tensor& logits /*(B,T,V)*/);

  // Scores of the targets with loss_mask != 0 (all targets without a mask); main model only,
  // no gradients. loss_mask values other than 0 are not used as weights.
  TokenScores token_scores(const ops::Context& ctx, const Batch& batch);
  // Forward + backward of L = L_pg + sum_layers L_bal over the main model (the MTP chain is not
  // run; MTP parameters get no gradient): gradients ADDED (x grad_scale) to Param::grad.
  // StepResult: loss_main = L_pg, loss_balance, loss = their sum, expert counts (zeros for MTP
  // layers). scores (optional) receives the forward's scores.
  StepResult forward_backward_policy(const ops::Context& ctx, const Batch& batch,
                                     const PolicyLossFn& loss_fn, float balance_alpha,
                                     float grad_scale, TokenScores* scores = nullptr);

  // counts: per MoE layer (E) tokens routed over the whole step. b_i += gamma * sign(mean - c_i).
  // Layers held by other stages are skipped (their counts must still be present).
  void update_router_bias(const std::vector<std::vector<int32_t>>& counts, float gamma);
  int n_moe_layers() const { return int(moe_layers_.size()); }   // of the whole model
  // Bytes this rank has sent to other ranks in expert-parallel all-to-alls (dispatch + combine,
  // forward + backward) since construction, over its MoE layers.
  int64_t a2a_bytes_sent() const;
  std::vector<std::string> moe_layer_names() const;   // "model.layers.{i}.mlp", main then MTP
  // The loss heads make their (rows, V) logits at most this many elements at a time (default
  // 2^26 = 256 MiB of F32); results do not depend on it beyond summation order.
  void set_logit_chunk(int64_t elements) { logit_chunk_ = elements; }
  // The policy head (token_scores, forward_backward_policy) scores log softmax(logits / t):
  // GRPO's log-probabilities at the temperature its completions were sampled at (default 1).
  void set_policy_temperature(float t) { policy_temperature_ = t; }
  // Routed experts as grouped GEMMs: -1 on the GPU only (default), 0 never, 1 always
  // (MoEOptions::grouped); the results agree to summation order.
  void set_grouped_experts(int mode) { moe_grouped_ = mode; }
  // MoEOptions::fp8_codes for every MoE layer (the GPU's FP8 sequence of ops on the CPU).
  void set_fp8_codes(bool on) { moe_fp8_codes_ = on; }

 private:
  StepResult run(Pass& p, const ops::Context& ctx, const Batch& batch);
  void begin(Pass& p, const Batch& batch);
  void forward_main(const ops::Context& ctx, Pass& p);
  void forward_mtp(const ops::Context& ctx, Pass& p);
  void backward(const ops::Context& ctx, Pass& p);
  double head_loss(const ops::Context& ctx, Pass& p, const Tensor& g,
                   const std::vector<int32_t>& tgt, const std::vector<float>& w, double coeff,
                   Tensor& dg);
  void head_policy(const ops::Context& ctx, Pass& p, const Tensor& g,
                   const std::vector<int32_t>& tgt, Tensor& dg);
  void collect_moe(const MoESaved& s, int slot, StepResult& r) const;

  ModelArgs args_;
  int64_t logit_chunk_ = int64_t(1) << 26;
  float policy_temperature_ = 1.0f;
  int moe_grouped_ = -1;
  bool moe_fp8_codes_ = false;
  ParamStore& store_;
  ModelParallel par_;
  int64_t layer0_ = 0;          // global index of layers_[0]
  bool embed_copy_ = false;     // see holds_embedding_copy()
  Embedding embed_;             // model.embed_tokens (shared with MTP); first (and last) stage
  std::vector<Block> layers_;   // model.layers.{layer0_..}: this stage's main layers
  RMSNorm norm_;                // model.norm (last stage)
  Linear head_;                 // lm_head (shared with MTP; last stage)
  std::vector<MTPModule> mtp_;  // model.layers.{n_layers..n_layers+D-1} (last stage)
  std::vector<const MoE*> moe_layers_;   // whole model: main MoE layers, then MTP; null when
                                         // another stage holds the layer
  std::vector<int> moe_slot_;            // (n_layers) slot in moe_layers_ of main layer l, or -1
  std::vector<std::string> moe_names_;
};

// The full parameter list of a configuration (same registration code, shape-only store).
std::vector<ParamInfo> describe_params(const ModelArgs& args);

}  // namespace ds::model
