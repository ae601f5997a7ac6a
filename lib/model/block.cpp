// Transformer block with pre-norm residuals (see block.hpp), forward and exact backward.
// reference: DeepSeek-V3 inference/model.py Block.forward:
//   x = x + attn(attn_norm(x)); x = x + ffn(ffn_norm(x)).
#include "ds/model/block.hpp"

#include "model_util.hpp"

namespace ds::model {

Block::Block(ParamStore& store, const ModelArgs& a, const std::string& p, int layer_, bool is_moe,
             const ExpertParallel& ep)
    : layer(layer_) {
  attn_norm = RMSNorm(store, p + "input_layernorm.weight", a.dim, a.norm_eps, layer);
  attn = MLA(store, a, p + "self_attn.", layer);
  ffn_norm = RMSNorm(store, p + "post_attention_layernorm.weight", a.dim, a.norm_eps, layer);
  if (is_moe) moe = std::make_unique<MoE>(store, a, p + "mlp.", layer, ep);
  else mlp = std::make_unique<MLP>(store, p + "mlp.", a.dim, a.inter_dim, a.init_std, layer);
}

void Block::ffn_forward(const ops::Context& ctx, const Tensor& u, const SeqInfo& seq,
                        const MoEOptions& opt, Tensor& y, BlockSaved& s) const {
  if (moe) moe->forward(ctx, u, seq.B, seq.T, opt, y, s.moe, seq.lengths);
  else mlp->forward(ctx, u, y, s.mlp);
}

void Block::forward(const ops::Context& ctx, const Tensor& x, const SeqInfo& seq,
                    const MoEOptions& opt, Tensor& out, BlockSaved& s) const {
  Tensor a, f;                                           // (N, C) sub-layer outputs
  // (N, C) a norm's output, written as the Linears' GEMM input where only Linears read it
  // (gemm_input_empty); the sub-layers keep what their backward needs of it
  Tensor xn = gemm_input_empty(ctx, x.shape());
  s.x = x;
  attn_norm.forward(ctx, x, xn, s.rstd_attn);
  attn.forward(ctx, xn, seq, a, s.attn);
  xn = moe ? Tensor() : gemm_input_empty(ctx, x.shape());   // the router reads F32
  s.h = detail::empty_f32(ctx, x.shape());
  ffn_norm.forward_add(ctx, x, a, s.h, xn, s.rstd_ffn);  // h = x + attn(attn_norm(x)); norm(h)
  ffn_forward(ctx, xn, seq, opt, f, s);
  if (!out.defined()) out = detail::empty_f32(ctx, x.shape());
  ops::add(ctx, s.h, f, out);                            // out = h + ffn(ffn_norm(h))
}

void Block::backward(const ops::Context& ctx, BlockSaved& s, const SeqInfo& seq,
                     const Tensor& dout, Tensor& dx, Tensor dout_codes,
                     Tensor* dx_codes) const {
  // dout's codes serve where only Linears read it (the FFN's down projections; the routed
  // experts weight dout's F32 rows before rounding); dh's, o_proj
  const bool codes = gemm_inputs_shared(ctx);
  Tensor dxn;                                             // (N, C)
  if (moe) moe->backward(ctx, s.moe, dout, dxn, dout_codes);
  else mlp->backward(ctx, s.mlp, dout_codes.defined() ? dout_codes : dout, dxn);
  dout_codes = Tensor();
  s.mlp = MLPSaved{};
  s.moe = MoESaved{};
  Tensor dh, dh_codes;
  ffn_norm.backward_add(ctx, s.h, s.rstd_ffn, dxn, dout, dh,   // dh = dout + ffn path
                        codes ? &dh_codes : nullptr);
  Tensor dxa;
  attn.backward(ctx, s.attn, seq, codes ? dh_codes : dh, dxa);
  s.attn = MLASaved{};
  if (dx_codes) *dx_codes = Tensor();
  attn_norm.backward_add(ctx, s.x, s.rstd_attn, dxa, dh, dx,   // dx = dh + attention path
                         codes ? dx_codes : nullptr);
  s = BlockSaved{};
}

}  // namespace ds::model
