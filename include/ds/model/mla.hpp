// Multi-head Latent Attention in the naive (training) form: queries through the optional
// low-rank q path, keys/values through the compressed latent, decoupled RoPE on q_pe and on the
// single shared k_pe (broadcast to every head), causal softmax attention, output projection.
// reference: DeepSeek-V3 inference/model.py MLA.forward, attn_impl="naive"; spec §1.6;
// docs/model.md "Forward pass".
#pragma once
#include <string>
#include <vector>

#include "ds/model/config.hpp"
#include "ds/model/linear.hpp"
#include "ds/model/rmsnorm.hpp"

namespace ds::model {

// The token layout of one pass: N = B * T rows in sequence-major order.
struct SeqInfo {
  int64_t B = 0;     // sequences
  int64_t T = 0;     // tokens per sequence
  Tensor pos;        // (N) i32 RoPE positions (0..T-1, restarting per packed sample in SFT)
  Tensor segments;   // (B, T) i32 packed-sample ids, or undefined (plain causal mask)
  Tensor freqs;      // (Dr/2) f32 RoPE inverse frequencies (rope_yarn)
  std::vector<int32_t> lengths;   // (B) leading positions of each sequence that count in the
                                  // MoE balance loss (the rest is padding), or empty: all T
};

struct MLASaved {
  Tensor x;         // (N, C) input (the block's attn_norm output) as gemm_input
  Tensor qa;        // (N, Q) wq_a x, before q_norm (q_lora_rank > 0 only)
  Tensor qa_rstd;   // (N)
  Tensor cq;        // (N, Q) q_norm(qa) as gemm_input
  Tensor ckv_raw;   // (N, R) latent part of wkv_a x, before kv_norm
  Tensor kv_rstd;   // (N)
  Tensor ckv;       // (N, R) kv_norm(ckv_raw) as gemm_input
  // q, k, v: F32, or BF16 codes where the attention reads them so (ops::attention_bf16_inputs)
  Tensor q;         // (B, T, H, Dn+Dr) [q_nope | rope(q_pe)]
  Tensor k;         // (B, T, H, Dn+Dr) [k_nope | rope(k_pe) broadcast]
  Tensor v;         // (B, T, H, Dv)
  Tensor o;         // (B, T, H, Dv) attention output
  Tensor lse;       // (B, H, T) softmax log-sum-exp
};

struct MLA {
  int64_t C = 0, H = 0, Q = 0, R = 0, Dn = 0, Dr = 0, Dv = 0;   // dim, heads, ranks, head dims
  float softmax_scale = 0;
  Linear wq_a;       // (Q, C) q_a_proj            (Q > 0)
  RMSNorm q_norm;    // (Q)    q_a_layernorm       (Q > 0)
  Linear wq_b;       // (H*(Dn+Dr), Q) q_b_proj    (Q > 0)
  Linear wq;         // (H*(Dn+Dr), C) q_proj      (Q == 0)
  Linear wkv_a;      // (R+Dr, C) kv_a_proj_with_mqa
  RMSNorm kv_norm;   // (R) kv_a_layernorm
  Linear wkv_b;      // (H*(Dn+Dv), R) kv_b_proj
  Linear wo;         // (C, H*Dv) o_proj

  MLA() = default;
  // prefix e.g. "model.layers.3.self_attn."
  MLA(ParamStore& store, const ModelArgs& args, const std::string& prefix, int layer);
  // out (N, C) allocated when undefined.
  void forward(const ops::Context& ctx, const Tensor& x /*(N,C)*/, const SeqInfo& seq,
               Tensor& out /*(N,C)*/, MLASaved& s) const;
  // dx (N, C) overwritten (allocated when undefined); weight grads +=. dout is read by o_proj
  // only: F32, or its BF16 codes under BF16 GEMMs (Block::backward).
  void backward(const ops::Context& ctx, const MLASaved& s, const SeqInfo& seq,
                const Tensor& dout /*(N,C)*/, Tensor& dx /*(N,C)*/) const;

 private:
  void forward_q(const ops::Context& ctx, const Tensor& x, const SeqInfo& seq, MLASaved& s) const;
  void forward_kv(const ops::Context& ctx, const Tensor& x, const SeqInfo& seq, MLASaved& s) const;
  // dq (B, T, H, Dn+Dr) is consumed: its rope part is rotated back in place (or, with BF16
  // GEMM inputs shared, into q_b_proj's BF16 operand).
  void backward_q(const ops::Context& ctx, const MLASaved& s, const SeqInfo& seq,
                  Tensor& dq, Tensor& dx) const;
  void backward_kv(const ops::Context& ctx, const MLASaved& s, const SeqInfo& seq,
                   const Tensor& dk, const Tensor& dv, Tensor& dx) const;
};

}  // namespace ds::model
