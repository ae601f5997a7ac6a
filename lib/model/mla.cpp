// Multi-head Latent Attention, naive form, forward and exact backward (see mla.hpp).
// reference: DeepSeek-V3 inference/model.py MLA.forward (attn_impl="naive"); spec §1.6 row
// layouts: wq_b rows per head [q_nope | q_pe], wkv_a rows [ckv (R) | k_pe (Dr)], wkv_b rows per
// head [k_nope | v], wo input = heads' outputs concatenated.
#include "ds/model/mla.hpp"

#include "ds/core/error.hpp"
#include "model_util.hpp"

namespace ds::model {

using detail::empty_f32;

MLA::MLA(ParamStore& store, const ModelArgs& a, const std::string& p, int layer)
    : C(a.dim), H(a.n_heads), Q(a.q_lora_rank), R(a.kv_lora_rank), Dn(a.qk_nope_head_dim),
      Dr(a.qk_rope_head_dim), Dv(a.v_head_dim), softmax_scale(float(a.softmax_scale())) {
  const double sd = a.init_std;
  const int64_t Dq = Dn + Dr;
  if (Q > 0) {
    wq_a = Linear(store, p + "q_a_proj.weight", Q, C, sd, true, layer);
    q_norm = RMSNorm(store, p + "q_a_layernorm.weight", Q, a.norm_eps, layer);
    wq_b = Linear(store, p + "q_b_proj.weight", H * Dq, Q, sd, true, layer);
  } else {
    wq = Linear(store, p + "q_proj.weight", H * Dq, C, sd, true, layer);
  }
  wkv_a = Linear(store, p + "kv_a_proj_with_mqa.weight", R + Dr, C, sd, true, layer);
  kv_norm = RMSNorm(store, p + "kv_a_layernorm.weight", R, a.norm_eps, layer);
  wkv_b = Linear(store, p + "kv_b_proj.weight", H * (Dn + Dv), R, sd, true, layer);
  wo = Linear(store, p + "o_proj.weight", C, H * Dv, sd, true, layer);
}

// q (N, H, Dn+Dr) = [q_nope | rope(q_pe)] from x through the (optionally compressed) q path:
// the projection's output rotated in place (its rows already hold [q_nope | q_pe] per head),
// or rotated straight into the attention's BF16 codes.
void MLA::forward_q(const ops::Context& ctx, const Tensor& x, const SeqInfo& seq,
                    MLASaved& s) const {
  const int64_t N = x.size(0);
  Tensor qraw;                                             // (N, H*(Dn+Dr))
  if (Q > 0) {
    wq_a.forward(ctx, x, s.qa);
    s.cq = gemm_input_empty(ctx, {N, Q});                 // q_norm writes wq_b's operand
    q_norm.forward(ctx, s.qa, s.cq, s.qa_rstd);
    wq_b.forward(ctx, s.cq, qraw);
  } else {
    wq.forward(ctx, x, qraw);
  }
  const Tensor q3 = qraw.view({N, H, Dn + Dr});
  if (ops::attention_bf16_inputs(ctx, Dn + Dr, Dv)) {   // the attention's operand, kept:
    s.q = Tensor::empty({seq.B, seq.T, H, Dn + Dr}, DType::bf16, ctx.device);
    Tensor c3 = s.q.view({N, H, Dn + Dr});               // rotated and rounded in one pass
    ops::rope_tail_codes(ctx, q3, seq.pos, seq.freqs, +1, c3);
    return;
  }
  Tensor qr = q3;
  ops::rope_tail_inplace(ctx, qr, seq.pos, seq.freqs, +1);
  s.q = qraw.view({seq.B, seq.T, H, Dn + Dr});
}

// k (N, H, Dn+Dr) = [k_nope | rope(k_pe)], v (N, H, Dv) from the kv latent.
void MLA::forward_kv(const ops::Context& ctx, const Tensor& x, const SeqInfo& seq,
                     MLASaved& s) const {
  const int64_t N = x.size(0);
  Tensor kva;                                              // (N, R+Dr)
  wkv_a.forward(ctx, x, kva);
  s.ckv_raw = empty_f32(ctx, {N, R});
  Tensor k_pe = empty_f32(ctx, {N, 1, Dr}), k_rot = empty_f32(ctx, {N, 1, Dr});
  Tensor ckv3 = s.ckv_raw.view({N, 1, R});
  ops::split_last(ctx, kva.view({N, 1, R + Dr}), ckv3, k_pe);
  ops::rope_forward(ctx, k_pe, seq.pos, seq.freqs, k_rot);
  s.ckv = gemm_input_empty(ctx, {N, R});                   // kv_norm writes wkv_b's operand
  kv_norm.forward(ctx, s.ckv_raw, s.ckv, s.kv_rstd);
  Tensor kv;                                               // (N, H*(Dn+Dv))
  wkv_b.forward(ctx, s.ckv, kv);
  // F32, or the attention's BF16 operands written by the split itself
  const DType kv_dtype = ops::attention_bf16_inputs(ctx, Dn + Dr, Dv) ? DType::bf16 : DType::f32;
  s.k = Tensor::empty({seq.B, seq.T, H, Dn + Dr}, kv_dtype, ctx.device);
  s.v = Tensor::empty({seq.B, seq.T, H, Dv}, kv_dtype, ctx.device);
  Tensor k3 = s.k.view({N, H, Dn + Dr}), v3 = s.v.view({N, H, Dv});
  ops::mla_kv_split(ctx, kv.view({N, H, Dn + Dv}), k_rot.view({N, Dr}), k3, v3);
}

void MLA::forward(const ops::Context& ctx, const Tensor& x, const SeqInfo& seq, Tensor& out,
                  MLASaved& s) const {
  DS_CHECK_SHAPE(x, {seq.B * seq.T, C});
  s.x = gemm_input(ctx, x);   // one operand for wq_a / wq and wkv_a, forward and backward
  forward_q(ctx, s.x, seq, s);
  forward_kv(ctx, s.x, seq, s);
  s.o = empty_f32(ctx, {seq.B, seq.T, H, Dv});
  s.lse = empty_f32(ctx, {seq.B, H, seq.T});
  ops::attention_forward(ctx, s.q, s.k, s.v, seq.segments, softmax_scale, s.o, s.lse);
  // o stays F32 for the attention's backward; wo rounds it per use (a BF16 copy kept as well
  // would cost 2*H*Dv bytes a token, more than the C-wide inputs at DeepSeek-V3's shapes)
  wo.forward(ctx, s.o.view({seq.B * seq.T, H * Dv}), out);
}

void MLA::backward_q(const ops::Context& ctx, const MLASaved& s, const SeqInfo& seq,
                     Tensor& dq, Tensor& dx) const {
  const int64_t N = seq.B * seq.T;
  Tensor dqraw = dq.view({N, H, Dn + Dr}), dqraw2;   // dq's rope part rotated back:
  if (gemm_inputs_shared(ctx)) {   // into q_b_proj's BF16 dy operand, in one pass
    dqraw2 = Tensor::empty({N, H * (Dn + Dr)}, DType::bf16, ctx.device);
    Tensor c3 = dqraw2.view({N, H, Dn + Dr});
    ops::rope_tail_codes(ctx, dqraw, seq.pos, seq.freqs, -1, c3);
  } else {                         // in place
    ops::rope_tail_inplace(ctx, dqraw, seq.pos, seq.freqs, -1);
    dqraw2 = dqraw.view({N, H * (Dn + Dr)});
  }
  if (Q > 0) {   // dx += the q path's input gradient (by the GEMM where it can add)
    Tensor dcq, dqa = gemm_input_empty(ctx, {N, Q});   // q_norm writes wq_a's dy operand
    wq_b.backward(ctx, s.cq, dqraw2, dcq);
    q_norm.backward(ctx, s.qa, s.qa_rstd, dcq, dqa);
    wq_a.backward(ctx, s.x, dqa, dx, true, true);
  } else {
    wq.backward(ctx, s.x, dqraw2, dx, true, true);
  }
}

void MLA::backward_kv(const ops::Context& ctx, const MLASaved& s, const SeqInfo& seq,
                      const Tensor& dk, const Tensor& dv, Tensor& dx) const {
  const int64_t N = seq.B * seq.T;
  // dkv (N, H*(Dn+Dv)) in the form of wkv_b's GEMM operand (BF16 codes when inputs are shared)
  Tensor dkv = gemm_input_empty(ctx, {N, H * (Dn + Dv)}), dkv3 = dkv.view({N, H, Dn + Dv});
  Tensor dk_rot = empty_f32(ctx, {N, Dr}), dk_pe = empty_f32(ctx, {N, 1, Dr});
  ops::mla_kv_split_backward(ctx, dk.view({N, H, Dn + Dr}), dv.view({N, H, Dv}), dkv3, dk_rot);
  ops::rope_backward(ctx, dk_rot.view({N, 1, Dr}), seq.pos, seq.freqs, dk_pe);
  Tensor dckv, dckv_raw;
  wkv_b.backward(ctx, s.ckv, dkv, dckv);
  kv_norm.backward(ctx, s.ckv_raw, s.kv_rstd, dckv, dckv_raw);
  Tensor dkva = empty_f32(ctx, {N, 1, R + Dr});
  ops::concat_last(ctx, dckv_raw.view({N, 1, R}), dk_pe, dkva);
  wkv_a.backward(ctx, s.x, dkva.view({N, R + Dr}), dx);
}

void MLA::backward(const ops::Context& ctx, const MLASaved& s, const SeqInfo& seq,
                   const Tensor& dout, Tensor& dx) const {
  Tensor dout_o;                                           // (N, H*Dv)
  wo.backward(ctx, s.o.view({seq.B * seq.T, H * Dv}), dout, dout_o);
  Tensor dq = empty_f32(ctx, s.q.shape()), dk = empty_f32(ctx, s.k.shape());   // F32 always
  Tensor dv = empty_f32(ctx, s.v.shape());
  ops::attention_backward(ctx, s.q, s.k, s.v, seq.segments, softmax_scale, s.o, s.lse,
                          dout_o.view({seq.B, seq.T, H, Dv}), dq, dk, dv);
  backward_kv(ctx, s, seq, dk, dv, dx);   // writes dx
  backward_q(ctx, s, seq, dq, dx);        // adds into dx
}

}  // namespace ds::model
