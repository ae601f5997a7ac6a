// Pointer-level launchers of the element-wise, reduction, layout, row-permutation, RMSNorm,
// RoPE and AdamW kernels (kernels/elementwise.cu, norm_rope.cu, adamw.cu). Plain C++ so that
// lib/ops/cuda/elementwise.cpp (g++) and the host emulator's tests (through
// kernels/adamw_step.cuh) can include it; the Tensor-level checks live in elementwise.cpp.
// All pointers are device pointers of contiguous row-major arrays; everything runs on
// ds::cuda::stream(). Index arrays are int32; kernels skip (scatters) or zero-fill (gathers)
// entries whose index lies outside [0, rows) instead of touching memory out of bounds.
// Only the scalar-returning reductions synchronise with the host.
#pragma once
#include <cmath>
#include <cstdint>

namespace ds::cuda {

// ---- flat element-wise (may alias: out == a or b, dst == src) ----------------------------
void add_f32(const float* a, const float* b, float* out, int64_t n);   // out = a + b
void add_inplace_f32(float* dst, const float* src, int64_t n);         // dst += src
void scale_f32(float* x, float s, int64_t n);                          // x *= s
// Reductions accumulated in double on the device; the scalar is copied back (host sync).
double sum_f32(const float* x, int64_t n);
double sum_squares_f32(const float* x, int64_t n);
int64_t count_nonfinite_f32(const float* x, int64_t n);

// ---- SwiGLU: out = silu(gate) * up ---------------------------------------------------------
void swiglu_forward_f32(const float* gate, const float* up, float* out, int64_t n);
void swiglu_backward_f32(const float* gate, const float* up, const float* dout, float* dgate,
                         float* dup, int64_t n);
// The same results written as BF16 codes (RNE, as ds::f32_to_bf16): the GEMM operands of the
// next Linear straight from SwiGLU (bit for bit the F32 results rounded by bf16_round).
void swiglu_forward_bf16(const float* gate, const float* up, uint16_t* out, int64_t n);
void swiglu_backward_bf16(const float* gate, const float* up, const float* dout, uint16_t* dgate,
                          uint16_t* dup, int64_t n);
// Packed rows h (M, 2I) = [gate | up] (one GEMM over stacked gate_proj / up_proj): out (M, I),
// dh (M, 2I) = [dgate | dup], F32 or (codes) BF16 codes; each element as above. The inputs
// (h; h and dout) are F32, or (bf16_in) BF16 codes, widened exactly.
void swiglu_packed_forward(const void* h, bool bf16_in, void* out, bool codes, int64_t M,
                           int64_t I);
void swiglu_packed_backward(const void* h, const void* dout, bool bf16_in, void* dh, bool codes,
                            int64_t M, int64_t I);

// ---- rows (embedding lookup and the MoE permutation) ----------------------------------------
// dst (M, C) = src (n_src, C)[rows[m]]; a row with rows[m] outside [0, n_src) is zero-filled.
void gather_rows_f32(const float* src, int64_t n_src, const int32_t* rows, float* dst, int64_t M,
                     int64_t C);
// dst (M, C) = 0 + w[m] * src[rows[m]] (zero rows for a bad index): a gather and a weighted
// scatter into zeros, value for value as the CPU computes them (the atomic scatter flushed
// subnormal products to zero).
void gather_rows_scaled_f32(const float* src, int64_t n_src, const int32_t* rows, const float* w,
                            float* dst, int64_t M, int64_t C);
// dst (n_dst, C)[rows[m]] += w[m] * src (M, C)[m] (w null: weight 1). Rows may repeat (atomics,
// so the order of the additions is not fixed); bad rows are skipped.
void scatter_add_rows_f32(const float* src, const int32_t* rows, const float* w, float* dst,
                          int64_t n_dst, int64_t M, int64_t C);
// dst (n_dst, C)[rows[m]] = src (M, C)[m]; rows distinct; bad rows skipped.
void set_rows_f32(const float* src, const int32_t* rows, float* dst, int64_t n_dst, int64_t M,
                  int64_t C);
// The same into a BF16 (uint16_t codes) dst: from BF16 (copied) or from F32 (rounded to
// nearest even, bit-identical to ds::f32_to_bf16).
void set_rows_bf16(const uint16_t* src, const int32_t* rows, uint16_t* dst, int64_t n_dst,
                   int64_t M, int64_t C);
void set_rows_f32_bf16(const float* src, const int32_t* rows, uint16_t* dst, int64_t n_dst,
                       int64_t M, int64_t C);
// out (M) = dot(a (n_a, C)[rows[m]], b (M, C)[m]) accumulated in double; bad rows give 0.
void gather_rows_dot_f32(const float* a, int64_t n_a, const int32_t* rows, const float* b,
                         float* out, int64_t M, int64_t C);

// ---- head layout ------------------------------------------------------------------------------
// x (R, A+B) <-> a (R, A), b (R, B).
void split_last_f32(const float* x, float* a, float* b, int64_t R, int64_t A, int64_t B);
void concat_last_f32(const float* a, const float* b, float* x, int64_t R, int64_t A, int64_t B);
// out (N, H, D) = x (N, D) per head; dx (N, D) = sum_h dout (N, H, D) (heads in order, FP32).
void broadcast_heads_f32(const float* x, float* out, int64_t N, int64_t H, int64_t D);
void sum_heads_f32(const float* dout, float* dx, int64_t N, int64_t H, int64_t D);
// MLA's keys and values from kv_b_proj's output kv (N, H, Dn+Dv) and the rotated shared rope
// key k_rot (N, Dr): k (N, H, Dn+Dr) = [kv[.., :Dn] | k_rot], v (N, H, Dv) = kv[.., Dn:]; k and
// v F32, or BF16 codes when `codes` (RNE: the attention's tensor-core operands).
void mla_kv_split_f32(const float* kv, const float* krot, void* k, void* v, bool codes,
                      int64_t N, int64_t H, int64_t Dn, int64_t Dr, int64_t Dv);
// Its backward: dkv (N, H, Dn+Dv) = [dk[.., :Dn] | dv] into dkv_f32, or as BF16 codes into
// dkv_codes (the other null); dk_rot (N, Dr) = sum over heads of dk[.., Dn:] in head order.
void mla_kv_split_backward_f32(const float* dk, const float* dv, float* dkv_f32,
                               uint16_t* dkv_codes, float* dkrot, int64_t N, int64_t H,
                               int64_t Dn, int64_t Dr, int64_t Dv);

// ---- RMSNorm and RoPE (kernels/norm_rope.cu) -------------------------------------------------
// y (N, C) = x * rstd * g, rstd (N) = 1/sqrt(mean(x^2) + eps); statistics in double.
void rmsnorm_forward_f32(const float* x, const float* g, float eps, float* y, float* rstd,
                         int64_t N, int64_t C);
// The same with y as BF16 codes (RNE of the F32 result: the next GEMM's operand).
void rmsnorm_forward_bf16(const float* x, const float* g, float eps, uint16_t* y, float* rstd,
                          int64_t N, int64_t C);
// The residual add fused in front: h (N, C) = x + a (F32; h may be x or a), then y, rstd as
// above from h; y F32 into y_f32 or BF16 codes into y_codes (the other null).
void add_rmsnorm_forward(const float* x, const float* a, float* h, const float* g, float eps,
                         float* y_f32, uint16_t* y_codes, float* rstd, int64_t N, int64_t C);
// dx (N, C) overwritten; dg (C) += sum_n dy * x * rstd (deterministic: per-block partials
// reduced in a fixed order). res (N, C) or null: dx = res + the norm's dx (the residual
// gradient added in the same pass; res may be dx, not x or dy). dx_codes (N, C) or null: the
// BF16 codes of dx too (RNE, bit for bit bf16_round of the F32 dx); dx may then be null (codes
// only; not with res).
void rmsnorm_backward_f32(const float* x, const float* g, const float* rstd, const float* dy,
                          float* dx, float* dg, int64_t N, int64_t C,
                          const float* res = nullptr, uint16_t* dx_codes = nullptr);
// Interleaved RoPE over x (N, H, Dr) into out (may alias x); angle float(pos[n]) * freqs[i]
// in FP32, cos/sin in double (as ref_rope.cpp); dir -1 rotates by -angle (the backward).
// row, off as ref::rope: rows of `row` elements, the rotated ones at [off, off + Dr).
void rope_f32(const float* x, const int32_t* pos, const float* freqs, float* out, int64_t N,
              int64_t H, int64_t Dr, int dir, int64_t row = -1, int64_t off = 0);
// x (N, H, D) F32 with its last Dr of each head rotated as rope_f32 (row D, off D - Dr), the
// rest as it is, written as BF16 codes into out (N, H, D) (RNE): bit for bit rope_f32 in place
// then bf16_round, in one pass; x unchanged.
void rope_tail_codes(const float* x, const int32_t* pos, const float* freqs, uint16_t* out,
                     int64_t N, int64_t H, int64_t D, int64_t Dr, int dir);

// ---- AdamW (kernels/adamw.cu) -------------------------------------------------------------
// Per-step FP32 scalars, formed on the host exactly as ref::adamw_step forms them.
struct AdamWConsts {
  float decay;       // 1 - lr * wd
  float w1;          // 1 - beta1 (lerp weight)
  float fb2, w2;     // beta2, 1 - beta2
  float step_size;   // -lr / (1 - beta1^t)
  float bc2_sqrt;    // sqrt(1 - beta2^t)
  float eps;
  float grad_scale;
  bool lerp_lo;      // w1 < 0.5: ATen's lerp branch
};
// The FP32 scalars formed exactly as ref::adamw_step forms them (double, then rounded), so the
// per-element arithmetic on the GPU sees the same constants.
inline AdamWConsts adamw_consts(double lr, double beta1, double beta2, int64_t step,
                                float weight_decay, float eps, float grad_scale) {
  const double bc1 = 1.0 - std::pow(beta1, double(step)), bc2 = 1.0 - std::pow(beta2, double(step));
  AdamWConsts c{};
  c.decay = float(1.0 - lr * double(weight_decay));
  c.w1 = float(1.0 - beta1);
  c.fb2 = float(beta2);
  c.w2 = float(1.0 - beta2);
  c.step_size = float(-(lr / bc1));
  c.bc2_sqrt = float(std::sqrt(bc2));
  c.eps = eps;
  c.grad_scale = grad_scale;
  c.lerp_lo = c.w1 < 0.5f;
  return c;
}
// param, grad F32; m, v F32 (m_bf16/v_bf16 false) or BF16 codes (uint16). Element-wise.
void adamw_step_f32(float* param, const float* grad, void* m, bool m_bf16, void* v, bool v_bf16,
                    int64_t n, const AdamWConsts& c);
// Many tensors in one launch (the same per-element arithmetic): every entry's m (v) is BF16
// when m_bf16 (v_bf16), else F32. codes (optional): the updated param's BF16 codes (RNE, as
// bf16_round), written in the same pass.
struct AdamWEntry {
  float* param;
  const float* grad;
  void* m;
  void* v;
  int64_t n;
  AdamWConsts c;
  uint16_t* codes = nullptr;
};
void adamw_step_multi_f32(const AdamWEntry* entries, int count, bool m_bf16, bool v_bf16);

}  // namespace ds::cuda
