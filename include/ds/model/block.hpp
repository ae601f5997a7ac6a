// One transformer layer: h = x + attn(attn_norm(x)); out = h + ffn(ffn_norm(h)), the FFN being
// the dense SwiGLU for layers < n_dense_layers and the MoE otherwise (always MoE in MTP).
// reference: DeepSeek-V3 inference/model.py Block.forward; spec §1.3.
#pragma once
#include <memory>
#include <string>

#include "ds/model/mla.hpp"
#include "ds/model/mlp.hpp"
#include "ds/model/moe.hpp"

namespace ds::model {

struct BlockSaved {
  Tensor x;           // (N, C) block input
  Tensor rstd_attn;   // (N)
  MLASaved attn;
  Tensor h;           // (N, C) x + attn(...)
  Tensor rstd_ffn;    // (N)
  MLPSaved mlp;       // dense layers
  MoESaved moe;       // MoE layers
};

struct Block {
  int layer = -1;
  RMSNorm attn_norm;              // (C) input_layernorm
  MLA attn;                       // self_attn
  RMSNorm ffn_norm;               // (C) post_attention_layernorm
  std::unique_ptr<MLP> mlp;       // dense FFN, or null
  std::unique_ptr<MoE> moe;       // MoE FFN, or null

  // prefix e.g. "model.layers.3."; ep: the MoE's expert-parallel group (moe.hpp).
  Block(ParamStore& store, const ModelArgs& args, const std::string& prefix, int layer,
        bool is_moe, const ExpertParallel& ep = {});
  // out (N, C) allocated when undefined. Without opt.train the MoE frees its expert activations
  // as it goes; the caller drops s (after reading s.moe.counts / balance).
  void forward(const ops::Context& ctx, const Tensor& x /*(N,C)*/, const SeqInfo& seq,
               const MoEOptions& opt, Tensor& out /*(N,C)*/, BlockSaved& s) const;
  // dx (N, C) overwritten (allocated when undefined); releases s as it goes. With BF16 GEMM
  // inputs shared (model::gemm_inputs_shared) the residual gradients also travel as BF16
  // codes, written by the norms' backward for the Linears that read them: dout_codes (N, C),
  // when defined, are dout's (the FFN's down projections read them; released after the FFN),
  // and dx_codes, when not null, receives dx's (undefined when the inputs are not shared).
  void backward(const ops::Context& ctx, BlockSaved& s, const SeqInfo& seq,
                const Tensor& dout /*(N,C)*/, Tensor& dx /*(N,C)*/,
                Tensor dout_codes = Tensor(), Tensor* dx_codes = nullptr) const;

 private:
  void ffn_forward(const ops::Context& ctx, const Tensor& u, const SeqInfo& seq,
                   const MoEOptions& opt, Tensor& y, BlockSaved& s) const;
};

}  // namespace ds::model
