// DeepSeekMoE layer: shared experts (one merged SwiGLU) plus the routed experts chosen by the
// Gate. The N*K (token, expert) pairs are grouped by expert with a stable counting sort (so the
// order is a function of the routing only), each expert runs on its gathered rows, and its
// outputs are scatter-added with the gate weights; no capacity, no token dropping.
// reference: DeepSeek-V3 inference/model.py MoE.forward / Expert; spec §1.9; docs/model.md.
#pragma once
#include <string>
#include <vector>

#include "ds/model/gate.hpp"
#include "ds/model/mlp.hpp"

namespace ds::model {

struct ExpertSaved {
  Tensor tok;        // (M) i32 token rows routed to this expert (view into MoESaved::pair_tok)
  Tensor w;          // (M) their gate weights (view into MoESaved::pair_w)
  MLPSaved mlp;      // mlp.x: (M, C) gathered inputs
  Tensor y;          // (M, C) expert output before weighting
};

struct MoESaved {
  GateSaved gate;
  MLPSaved shared;                 // shared experts (if any)
  Tensor pair_src;                 // (N*K) i32 flat n*K + k of each pair, grouped by expert
  Tensor pair_tok;                 // (N*K) i32 token row n of each pair
  Tensor pair_w;                   // (N*K) gate weight of each pair
  std::vector<int64_t> offsets;    // (E+1) pairs of expert e are [offsets[e], offsets[e+1])
  std::vector<ExpertSaved> experts;   // (E)
  std::vector<int32_t> counts;     // (E) tokens routed to each expert in this pass
  double balance = 0;              // this layer's balance loss (alpha included)
};

// What a pass asks of the MoE layers besides the activations.
struct MoEOptions {
  bool train = false;         // keep what backward needs, compute the balance-loss gradient
  float balance_alpha = 0;    // alpha of the sequence-wise balance loss
  float grad_scale = 1;       // multiplies the balance-loss gradient
};

struct MoE {
  int64_t C = 0, E = 0, K = 0;
  Gate gate;
  bool has_shared = false;         // n_shared_experts > 0
  MLP shared_experts;              // width n_shared_experts * moe_inter_dim (if has_shared)
  std::vector<MLP> experts;        // (E) routed experts, width moe_inter_dim

  MoE() = default;
  // prefix e.g. "model.layers.3.mlp."
  MoE(ParamStore& store, const ModelArgs& args, const std::string& prefix, int layer);
  // y (N, C) allocated when undefined; the rows form n_seq sequences of seq_len tokens (for the
  // balance loss).
  void forward(const ops::Context& ctx, const Tensor& u /*(N,C)*/, int64_t n_seq, int64_t seq_len,
               const MoEOptions& opt, Tensor& y /*(N,C)*/, MoESaved& s) const;
  // du (N, C) overwritten (allocated when undefined); parameter grads +=.
  void backward(const ops::Context& ctx, MoESaved& s, const Tensor& dy /*(N,C)*/,
                Tensor& du /*(N,C)*/) const;

 private:
  void group_pairs(const ops::Context& ctx, MoESaved& s) const;
};

}  // namespace ds::model
