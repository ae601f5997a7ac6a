// Multi-token prediction module of depth k (1-based): h' = eh_proj([enorm(E[x[i+k]]) ;
// hnorm(g^{k-1}_i)]), one full MoE block over the T-k shortened positions, g^k =
// shared_head.norm(block(h')); the caller applies the shared output head to g^k and feeds g^k
// to depth k+1. g^0 is the main model's hidden after its final norm (docs/model.md "MTP").
// reference: DeepSeek-V3 paper §2.2 eqs 21-25; spec §1.11 (released weight order: embedding
// half first); HF checkpoint layout model.layers.{n_layers + k - 1}.
#pragma once
#include "ds/model/block.hpp"
#include "ds/model/embedding.hpp"

namespace ds::model {

// N' = B * (T - k) rows of depth k; Nprev = B * (T - k + 1) rows of g^{k-1}.
struct MTPSaved {
  Tensor ids;       // (N') i32 embedded tokens x[i+k]
  Tensor sel;       // (N') i32 row of g^{k-1} feeding row i (same sequence, position i)
  Tensor e;         // (N', C) E[ids]
  Tensor e_rstd;    // (N')
  Tensor hsel;      // (N', C) g^{k-1}[sel]
  Tensor h_rstd;    // (N')
  Tensor cat;       // (N', 2C) [enorm(e) ; hnorm(hsel)] as gemm_input
  Tensor hp;        // (N', C) eh_proj(cat), the block input
  BlockSaved block;
  Tensor hb;        // (N', C) block output
  Tensor g_rstd;    // (N')
  Tensor g;         // (N', C) shared_head.norm(hb): fed to the head and to depth k+1
};

struct MTPModule {
  int depth = 0;          // k, 1-based
  int layer = 0;          // checkpoint layer index n_layers + k - 1
  int64_t C = 0;
  RMSNorm enorm;          // (C) enorm.weight
  RMSNorm hnorm;          // (C) hnorm.weight
  Linear eh_proj;         // (C, 2C) eh_proj.weight
  Block block;            // input_layernorm, self_attn, post_attention_layernorm, mlp (MoE)
  RMSNorm norm;           // (C) shared_head.norm.weight

  // ep: the expert-parallel group of the block's MoE (moe.hpp).
  MTPModule(ParamStore& store, const ModelArgs& args, int depth, const ExpertParallel& ep = {});
  // seq describes the shortened sequences (B, T-k). g_prev (Nprev, C) is g^{k-1}; s.ids and
  // s.sel must be set by the caller. Result in s.g.
  void forward(const ops::Context& ctx, const Embedding& embed, const Tensor& g_prev,
               const SeqInfo& seq, const MoEOptions& opt, MTPSaved& s) const;
  // dg (N', C): gradient at s.g (head and depth k+1). Adds into dg_prev (Nprev, C) and into the
  // embedding gradient; releases s.
  void backward(const ops::Context& ctx, const Embedding& embed, MTPSaved& s, const SeqInfo& seq,
                const Tensor& dg /*(N',C)*/, Tensor& dg_prev /*(Nprev,C) +=*/) const;
};

}  // namespace ds::model
