// DeepSeekMoE layer: shared experts (one merged SwiGLU) plus the routed experts chosen by the
// Gate. The N*K (token, expert) pairs are grouped by expert with a stable counting sort (so the
// order is a function of the routing only), each expert runs on its gathered rows, and its
// outputs are scatter-added with the gate weights; no capacity, no token dropping.
// With expert parallelism (ep > 1) a rank holds experts [e0, e0 + E/ep) only: the rows of the
// pairs routed elsewhere travel there and back with all-to-all (lib/model/moe_ep.cpp).
// reference: DeepSeek-V3 inference/model.py MoE.forward / Expert; spec §1.9, §4.5;
// docs/model.md.
#pragma once
#include <string>
#include <vector>

#include "ds/model/gate.hpp"
#include "ds/model/mlp.hpp"
#include "ds/model/parallel.hpp"

namespace ds::model {

struct ExpertSaved {
  Tensor tok;        // (M) i32 token rows routed to this expert (view into MoESaved::pair_tok)
  Tensor w;          // (M) their gate weights (view into MoESaved::pair_w)
  MLPSaved mlp;      // mlp.x: (M, C) gathered inputs
  Tensor y;          // (M, C) expert output before weighting
};

// Expert-parallel bookkeeping of one pass. "Received order": the rows from rank 0, then rank 1,
// ...; from each source, its rows for local expert 0, then 1, ... "Expert-major order": the
// rows of local expert 0 from every source (in source order), then expert 1, ... R = ep size,
// El = E/R local experts, Mr = rows this rank received.
struct MoEDispatch {
  std::vector<int64_t> send_rows;        // (R) pairs this rank sends to rank j (j's experts)
  std::vector<int64_t> recv_rows;        // (R) rows rank j sends to this rank
  std::vector<int64_t> expert_offsets;   // (El+1) local expert l: expert-major rows [o[l], o[l+1])
  Tensor to_expert;                      // (Mr) i32 received-order row of each expert-major row
  Tensor to_source;                      // (Mr) i32 expert-major row of each received-order row
  Tensor y_pairs;                        // (N*K, C) unweighted expert outputs, pair order
};

struct MoESaved {
  GateSaved gate;
  MLPSaved shared;                 // shared experts (if any)
  Tensor pair_src;                 // (N*K) i32 flat n*K + k of each pair, grouped by expert
  Tensor pair_tok;                 // (N*K) i32 token row n of each pair
  Tensor pair_slot;                // (N*K) i32 slot of pair n*K + k in the grouped order
  Tensor pair_w;                   // (N*K) gate weight of each pair
  std::vector<int64_t> offsets;    // (E+1) pairs of expert e are [offsets[e], offsets[e+1])
  std::vector<ExpertSaved> experts;   // (E); with ep: (El) local experts, only .mlp used
  std::vector<int32_t> counts;     // (E) this rank's tokens routed to each expert in this pass
  std::vector<int32_t> real_counts;   // (E) the same without the padding (forward's lengths);
                                      // empty when there is none: then counts
  double balance = 0;              // this layer's balance loss (alpha included)
  MoEDispatch ep;                  // expert parallelism only
  // Grouped-GEMM path (moe_grouped.cpp), in expert-sorted pair order (N*K rows):
  bool grouped = false;            // the forward took it (the backward follows)
  Tensor g_x;                      // (N*K, C) gathered inputs as the GEMMs read them (F32/BF16)
  Tensor g_h1, g_h3, g_act;        // (N*K, I) gate, up, silu(gate) * up (act: BF16 operand in bf16)
  Tensor g_h;                      // (N*K, 2I) [gate | up] instead of g_h1 and g_h3 when one GEMM
                                   // over the stacked gate_proj / up_proj made them
  Tensor g_y;                      // (N*K, C) unweighted expert outputs
  // FP8 grouped path (moe_fp8.cpp): the same tensors over the padded layout (NKp rows), where
  // expert e's pairs are rows [p_offsets[e], p_offsets[e] + count_e) and the rows up to
  // p_offsets[e+1] (a multiple of 128) are zero, so that every 128-row tile and every 128x1
  // scale group along the tokens lies inside one expert. g_x is then the F32 input.
  std::vector<int64_t> p_offsets;  // (E+1) padded offsets
  Tensor p_tok;                    // (NKp) i32 token row of each padded row (pads: r mod N)
  Tensor p_w;                      // (NKp) gate weight of each padded row (pads: 0)
  Tensor p_row;                    // (N*K) i32 padded row of each expert-sorted pair
  Tensor p_pair;                   // (N, K) i32 padded row of each (token, k) pair (combine_pairs)
  bool fp8_codes = false;          // its GEMMs run on E4M3 codes (always on the GPU)
  // Bytes of expert rows this rank sent to OTHER ranks of the ep group in this pass: forward
  // dispatch + combine, then backward adds its dispatch + combine (the per-expert count
  // exchange, (E - E/ep) * 8 bytes per forward, is not included). 0 without ep.
  int64_t a2a_bytes_sent = 0;
};

// What a pass asks of the MoE layers besides the activations.
struct MoEOptions {
  bool train = false;         // keep what backward needs, compute the balance-loss gradient
  float balance_alpha = 0;    // alpha of the sequence-wise balance loss
  float grad_scale = 1;       // multiplies the balance-loss gradient
  // Routed experts as grouped GEMMs over the expert-sorted rows (moe_grouped.cpp) instead of a
  // loop over experts: -1 on the GPU only (default), 0 never, 1 always. Expert parallelism
  // always uses the loop; FP8 GEMMs take the grouped path (moe_fp8.cpp) only with tile
  // scaling (per-tensor scales are per expert in the loop).
  int grouped = -1;
  // The FP8 grouped path on the CPU runs its GEMMs on E4M3 codes, as the GPU does
  // (fp8_quantize_blocks_multi, fp8_gemm_nt_grouped / kgrouped), instead of the fake-quantised
  // FP32 emulation: the same numbers up to summation order; it checks the GPU's sequence of
  // ops on the CPU (tests/model/test_moe_fp8.cpp).
  bool fp8_codes = false;
};

struct MoE {
  int64_t C = 0, E = 0, K = 0;
  Gate gate;
  bool has_shared = false;         // n_shared_experts > 0
  MLP shared_experts;              // width n_shared_experts * moe_inter_dim (if has_shared)
  std::vector<MLP> experts;        // (E/ep) local routed experts e0.., width moe_inter_dim
  ExpertParallel ep;               // the ep group (inactive: every expert is local)
  int64_t e0 = 0;                  // global index of experts[0]
  // Running total of MoESaved::a2a_bytes_sent over every pass of this layer (the trainer reads
  // it per step); not thread-safe, like the passes themselves.
  mutable int64_t a2a_bytes_total = 0;

  MoE() = default;
  // prefix e.g. "model.layers.3.mlp.". With ep active only experts [e0, e0 + E/ep) are
  // registered (names keep the global index); gate and shared experts on every rank.
  MoE(ParamStore& store, const ModelArgs& args, const std::string& prefix, int layer,
      const ExpertParallel& ep = {});
  // y (N, C) allocated when undefined; the rows form n_seq sequences of seq_len tokens (for the
  // balance loss), of which the first lengths[s] tokens count when lengths is not empty (the
  // rest is padding: computed, but outside the balance loss and s.real_counts). With ep active
  // every rank of the group must call it (collectives), even with no token for a remote expert.
  void forward(const ops::Context& ctx, const Tensor& u /*(N,C)*/, int64_t n_seq, int64_t seq_len,
               const MoEOptions& opt, Tensor& y /*(N,C)*/, MoESaved& s,
               std::span<const int32_t> lengths = {}) const;
  // du (N, C) overwritten (allocated when undefined); parameter grads +=. With ep the local
  // experts' grads include the rows of every rank's tokens; gate and shared-expert grads are
  // this rank's share (the caller sums them over the data-parallel group).
  // dy_codes, when defined: dy's BF16 codes (Block::backward), which the shared experts'
  // down projection reads instead of rounding dy.
  void backward(const ops::Context& ctx, MoESaved& s, const Tensor& dy /*(N,C)*/,
                Tensor& du /*(N,C)*/, const Tensor& dy_codes = Tensor()) const;

 private:
  void group_pairs(const ops::Context& ctx, MoESaved& s) const;
  // Routed experts, all local: y += sum_k w_k expert(u); backward fills dpair_w (N*K) and du +=.
  void routed_forward(const ops::Context& ctx, const Tensor& u, bool train, Tensor& y,
                      MoESaved& s) const;
  void routed_backward(const ops::Context& ctx, MoESaved& s, const Tensor& dy, Tensor& du,
                       Tensor& dpair_w) const;
  // The same as grouped GEMMs over all local experts (lib/model/moe_grouped.cpp).
  void routed_forward_grouped(const ops::Context& ctx, const Tensor& u, bool train, Tensor& y,
                              MoESaved& s) const;
  void routed_backward_grouped(const ops::Context& ctx, MoESaved& s, const Tensor& dy,
                               Tensor& du, Tensor& dpair_w) const;
  // The same with FP8 GEMMs over the padded layout (lib/model/moe_fp8.cpp).
  void pad_pairs(const ops::Context& ctx, MoESaved& s) const;
  void routed_forward_fp8(const ops::Context& ctx, const Tensor& u, bool train, Tensor& y,
                          MoESaved& s) const;
  void routed_backward_fp8(const ops::Context& ctx, MoESaved& s, const Tensor& dy, Tensor& du,
                           Tensor& dpair_w) const;
  // The same with expert parallelism (lib/model/moe_ep.cpp).
  void dispatch_plan(const ops::Context& ctx, MoESaved& s) const;
  void routed_forward_ep(const ops::Context& ctx, const Tensor& u, bool train, Tensor& y,
                         MoESaved& s) const;
  void routed_backward_ep(const ops::Context& ctx, MoESaved& s, const Tensor& dy, Tensor& du,
                          Tensor& dpair_w) const;
};

}  // namespace ds::model
