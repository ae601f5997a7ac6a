// The CUDA path of the ops layer: one function per op of include/ds/ops/ops.hpp and fp8.hpp,
// same names and arguments, called by the dispatchers (ops.cpp, fp8.cpp, mla_decode.cpp,
// token_logprob.cpp) after the shared shape/dtype checks when ctx.device is cuda. Each is
// implemented in lib/ops/cuda/<group>.cpp over the launchers in kernels/<group>.cu and tested
// against the CPU reference by tests/kernels (label gpu). Compiled only with DS_HAVE_CUDA.
// Unless stated otherwise tensors are F32 and contiguous on the GPU; index tensors I32.
#pragma once
#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"

namespace ds::ops::cuda {

// ---- GEMM (lib/ops/cuda/gemm.cpp) --------------------------------------------------------
// a, b: both F32 (cuBLAS SGEMM, exact FP32) or both BF16 (cuBLASLt/GemmEx, FP32 accumulate);
// c F32.
void matmul(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c, bool trans_a,
            bool trans_b, float alpha, float beta);
// w F32 or BF16; x must then be F32 or BF16 (converted as needed); y F32.
void linear_forward(const Context& ctx, const Tensor& x, const Tensor& w, Tensor& y);
// Grouped GEMMs (lib/ops/cuda/gemm_grouped.cpp): one cuBLAS grouped call per op.
void grouped_matmul(const Context& ctx, const Tensor& x, const std::vector<Tensor>& w,
                    bool trans_w, const std::vector<int64_t>& offsets, Tensor& y, float beta);
void grouped_matmul_wgrad(const Context& ctx, const Tensor& dy, const Tensor& x,
                          const std::vector<int64_t>& offsets, std::vector<Tensor>& dw);
// out (K, M) = x (M, K)^T; F32, BF16 or U8/F8_E4M3 (same dtype in and out).
void transpose(const Context& ctx, const Tensor& x, Tensor& out);

// ---- FP8 (lib/ops/cuda/fp8.cpp) -----------------------------------------------------------
// Reads DS_FP8_GEMM (auto, overlap, wgmma or fallback) and DS_FP8_KSPLIT (off or on; anything
// else a UsageError naming the variable), once per process: ops::init_device calls it, so
// that a bad value fails before any input is read and a later set_fp8_gemm_overlap or
// set_fp8_ksplit (tests, benchmarks) is not undone by it.
void check_fp8_gemm_env();
// DS_FP8_QUANT: plain (unset or empty: the default until they have run on a GPU) or tiles, the
// tile quantisers (kernels/fp8_quant.cuh fp8_quantize_tiles); read once (a bad value throws
// UsageError), then ds::cuda::fp8_quant_tiles(), which tests and benchmarks may set; off
// whatever the setting under DS_CUDA_FUSED=0 (the paths that ran on the H200).
bool fp8_tiles_on();
void fp8_quantize(const Context& ctx, const Tensor& x, Fp8Group g, ScaleFormat fmt, bool act,
                  Tensor& q, Tensor& scales);
void fp8_dequantize(const Context& ctx, const Tensor& q, const Tensor& scales, Fp8Group g,
                    Tensor& out);
void fp8_fake_quant(const Context& ctx, const Tensor& x, Fp8Group g, ScaleFormat fmt, bool act,
                    Tensor& out);
// out F32 (round trip) or BF16 (the codes).
void bf16_round(const Context& ctx, const Tensor& x, Tensor& out);
void bf16_round_multi(const Context& ctx, const std::vector<const Tensor*>& xs,
                      const std::vector<Tensor*>& outs);
void fp8_gemm_nt(const Context& ctx, const Tensor& a, const Tensor& a_scales, const Tensor& b,
                 const Tensor& b_scales, Tensor& c, Fp8Group a_group, Fp8Group b_group);
void fp8_quantize_transposed(const Context& ctx, const Tensor& x, ScaleFormat fmt, bool act,
                             Tensor& qt, Tensor& st);
void fp8_quantize_dual(const Context& ctx, const Tensor& x, ScaleFormat fmt, bool act, Tensor& q,
                       Tensor& s, Tensor& qt, Tensor& st);
void fp8_requantize_transposed(const Context& ctx, const Tensor& x, ScaleFormat fmt, bool act,
                               Tensor& qt, Tensor& st);
void fp8_quantize_blocks_multi(const Context& ctx, const std::vector<const Tensor*>& xs,
                               ScaleFormat fmt, const std::vector<Tensor*>& qs,
                               const std::vector<Tensor*>& ss, const std::vector<Tensor*>& qts,
                               const std::vector<Tensor*>& sts);
void fp8_gemm_nt_grouped(const Context& ctx, const Tensor& a, const Tensor& a_scales,
                         const std::vector<Tensor>& b, const std::vector<Tensor>& b_scales,
                         const std::vector<int64_t>& offsets, Tensor& c, Fp8Group b_group);
void fp8_gemm_nt_kgrouped(const Context& ctx, const Tensor& a, const Tensor& a_scales,
                          const Tensor& b, const Tensor& b_scales,
                          const std::vector<int64_t>& offsets, std::vector<Tensor>& c);

// ---- element-wise, norms, RoPE, layout (lib/ops/cuda/elementwise.cpp) ----------------------
void embedding_forward(const Context& ctx, const Tensor& table, const Tensor& ids, Tensor& out);
void embedding_backward(const Context& ctx, const Tensor& ids, const Tensor& dout, Tensor& dtable);
void rmsnorm_forward(const Context& ctx, const Tensor& x, const Tensor& g, float eps, Tensor& y,
                     Tensor& rstd);
void rmsnorm_backward(const Context& ctx, const Tensor& x, const Tensor& g, const Tensor& rstd,
                      const Tensor& dy, Tensor& dx, Tensor& dg);
void add_rmsnorm_forward(const Context& ctx, const Tensor& x, const Tensor& a, const Tensor& g,
                         float eps, Tensor& h, Tensor& y, Tensor& rstd);
void rmsnorm_backward_add(const Context& ctx, const Tensor& x, const Tensor& g,
                          const Tensor& rstd, const Tensor& dy, const Tensor& res, Tensor& dx,
                          Tensor& dg, Tensor* dx_codes);
// dir +1: rope_forward, -1: rope_backward (x = dout, out = dx).
void rope(const Context& ctx, const Tensor& x, const Tensor& pos, const Tensor& freqs, Tensor& out,
          int dir);
void split_last(const Context& ctx, const Tensor& x, Tensor& a, Tensor& b);
void concat_last(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& x);
void broadcast_heads(const Context& ctx, const Tensor& x, Tensor& out);
void sum_heads(const Context& ctx, const Tensor& dout, Tensor& dx);
void mla_kv_split(const Context& ctx, const Tensor& kv, const Tensor& k_rot, Tensor& k, Tensor& v);
void mla_kv_split_backward(const Context& ctx, const Tensor& dk, const Tensor& dv, Tensor& dkv,
                           Tensor& dk_rot);
void swiglu_forward(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& out);
void swiglu_backward(const Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& dout,
                     Tensor& dgate, Tensor& dup);
void swiglu_packed_forward(const Context& ctx, const Tensor& h, Tensor& out);
void swiglu_packed_backward(const Context& ctx, const Tensor& h, const Tensor& dout, Tensor& dh);
void gather_rows(const Context& ctx, const Tensor& src, const Tensor& rows, Tensor& dst);
void gather_rows_scaled(const Context& ctx, const Tensor& src, const Tensor& rows, const Tensor& w,
                        Tensor& dst);
void gather_rows_bf16(const Context& ctx, const Tensor& src, const Tensor& rows, const Tensor& w,
                      Tensor& dst);
void gather_rows_bf16_dot(const Context& ctx, const Tensor& src, const Tensor& rows,
                          const Tensor& w, const Tensor& b, Tensor& dst, Tensor& dot);
void scatter_add_rows(const Context& ctx, const Tensor& src, const Tensor& rows, const Tensor& w,
                      Tensor& dst);
void gather_rows_dot(const Context& ctx, const Tensor& a, const Tensor& rows, const Tensor& b,
                     Tensor& out);
void set_rows(const Context& ctx, const Tensor& src, const Tensor& rows, Tensor& dst);
void add(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& out);
void add_(const Context& ctx, Tensor& dst, const Tensor& src);
void scale_(const Context& ctx, Tensor& x, float s);
double sum_squares(const Context& ctx, const Tensor& x);
int64_t count_nonfinite(const Context& ctx, const Tensor& x);
double sum(const Context& ctx, const Tensor& x);
void adamw_step(const Context& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                const AdamWParams& p);
// Many tensors in one launch (kernels/multi_tensor.cu, adamw.cu).
std::vector<double> sum_squares_multi(const Context& ctx, const std::vector<const Tensor*>& xs);
void zero_multi(const Context& ctx, const std::vector<Tensor*>& xs);
void adamw_step_multi(const Context& ctx, const std::vector<AdamWTensors>& ts,
                      const AdamWParams& p);

// ---- losses and routing (lib/ops/cuda/loss_route.cpp) ---------------------------------------
void cross_entropy_forward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                           Tensor& losses);
void cross_entropy_backward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                            float scale, Tensor& dlogits);
void cross_entropy_forward_backward(const Context& ctx, const Tensor& logits,
                                    const Tensor& targets, float scale, Tensor& losses,
                                    Tensor& dlogits);
void token_logprob_forward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                           Tensor& logp, Tensor& lse, Tensor& entropy);
void token_logprob_backward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                            const Tensor& lse, const Tensor& dlogp, Tensor& dlogits);
void moe_route(const Context& ctx, const Tensor& logits, const Tensor& bias, const RouteParams& p,
               Tensor& scores, Tensor& idx, Tensor& weights);
void moe_route_backward(const Context& ctx, const Tensor& scores, const Tensor& idx,
                        const Tensor& dweights, const Tensor& dscores_extra, const RouteParams& p,
                        Tensor& dlogits);
double moe_balance_loss(const Context& ctx, const Tensor& scores, const Tensor& idx, int n_seq,
                        int seq_len, float alpha, Tensor& dscores,
                        std::span<const int32_t> lengths);
void moe_count(const Context& ctx, const Tensor& idx, Tensor& counts);
void rope_tail_inplace(const Context& ctx, Tensor& x, const Tensor& pos, const Tensor& freqs,
                       int dir);
void rope_tail_codes(const Context& ctx, const Tensor& x, const Tensor& pos, const Tensor& freqs,
                     int dir, Tensor& out);
void moe_sort_pairs(const Context& ctx, const Tensor& idx, Tensor& counts, Tensor& pair_src,
                    Tensor& pair_tok, Tensor& pair_slot, std::vector<int32_t>* host_counts);
void combine_pairs(const Context& ctx, const Tensor& src, const Tensor& slot, const Tensor& w,
                   Tensor& dst);
void moe_pad_pairs(const Context& ctx, const Tensor& pair_src, const Tensor& pair_w, int64_t K,
                   const std::vector<int64_t>& offsets, const std::vector<int64_t>& p_offsets,
                   Tensor& p_tok, Tensor& p_w, Tensor& p_row, Tensor& p_pair);

// ---- attention (lib/ops/cuda/attention.cpp) -------------------------------------------------
void attention_forward(const Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& segments, float scale, Tensor& out, Tensor& lse);
void attention_backward(const Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& segments, float scale, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv);
void head_matmul(const Context& ctx, const Tensor& x, const Tensor& w, bool trans_w, Tensor& y);
void mla_latent_attention(const Context& ctx, const Tensor& q_lat, const Tensor& q_pe,
                          const Tensor& ckv, const Tensor& kpe, const Tensor& slot,
                          const Tensor& len, float scale, Tensor& out);

}  // namespace ds::ops::cuda
