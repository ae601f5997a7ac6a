// Reference CPU kernels of the ops layer (internal header): plain loops that say what each op
// computes, templated on T = float / double where the math is differentiable so that the tests
// can run them in double against finite differences. Shapes and semantics are those of
// include/ds/ops/ops.hpp; pointers are contiguous row-major; no checks here (ops.cpp checks).
// Explicit instantiations for float and double live in each ref_<family>.cpp.
#pragma once
#include <cstdint>

#include "ds/ops/ops.hpp"

namespace ds::ops::ref {

// ---- GEMM (ref_gemm.cpp) ----
// c(M,N) = alpha * op(a) @ op(b) + beta * c; a is (M,K) or (K,M) when trans_a, b is (K,N) or
// (N,K) when trans_b. Accumulates each dot product in double.
template <class T>
void matmul(const T* a, const T* b, T* c, int64_t M, int64_t N, int64_t K, bool trans_a,
            bool trans_b, T alpha, T beta);

// ---- embedding (ref_embedding.cpp) ----
// y(N,O) = x(N,I) @ w(O,I)^T with BF16 weights widened on the fly, double accumulation.
void linear_bf16(const float* x, const uint16_t* w, float* y, int64_t N, int64_t O, int64_t I);
template <class T>
void embedding_forward(const T* table /*(V,C)*/, const int32_t* ids /*(N)*/, T* out /*(N,C)*/,
                       int64_t N, int64_t C);
template <class T>
void embedding_backward(const int32_t* ids /*(N)*/, const T* dout /*(N,C)*/, T* dtable /*(V,C) +=*/,
                        int64_t N, int64_t C);

// ---- RMSNorm (ref_norm.cpp); statistics accumulated in double ----
template <class T>
void rmsnorm_forward(const T* x /*(N,C)*/, const T* g /*(C)*/, double eps, T* y /*(N,C)*/,
                     T* rstd /*(N)*/, int64_t N, int64_t C);
template <class T>
void rmsnorm_backward(const T* x /*(N,C)*/, const T* g /*(C)*/, const T* rstd /*(N)*/,
                      const T* dy /*(N,C)*/, T* dx /*(N,C)*/, T* dg /*(C) +=*/, int64_t N,
                      int64_t C);

// ---- RoPE and head layout (ref_rope.cpp) ----
// Interleaved pairs; angle = float(pos) * freq rounded to FP32 (as R/HF build their table in
// FP32), cos/sin evaluated in double. dir = +1 forward, -1 backward (rotation by -angle).
// row, off: each (n, h) row of x and out holds `row` elements, the rotated ones at [off,
// off + Dr) (default: rows of Dr, all rotated; ops::rope_inplace rotates a row's tail).
template <class T>
void rope(const T* x /*(N,H,Dr)*/, const int32_t* pos /*(N)*/, const float* freqs /*(Dr/2)*/,
          T* out /*(N,H,Dr)*/, int64_t N, int64_t H, int64_t Dr, int dir, int64_t row = -1,
          int64_t off = 0);
template <class T>
void split_last(const T* x /*(R,A+B)*/, T* a /*(R,A)*/, T* b /*(R,B)*/, int64_t R, int64_t A,
                int64_t B);
template <class T>
void concat_last(const T* a /*(R,A)*/, const T* b /*(R,B)*/, T* x /*(R,A+B)*/, int64_t R, int64_t A,
                 int64_t B);
template <class T>
void broadcast_heads(const T* x /*(N,D)*/, T* out /*(N,H,D)*/, int64_t N, int64_t H, int64_t D);
template <class T>
void sum_heads(const T* dout /*(N,H,D)*/, T* dx /*(N,D)*/, int64_t N, int64_t H, int64_t D);
// k (N,H,Dn+Dr) = [kv (N,H,Dn+Dv)[..,:Dn] | krot (N,Dr)], v (N,H,Dv) = kv[..,Dn:]; backward.
template <class T>
void mla_kv_split(const T* kv, const T* krot, T* k, T* v, int64_t N, int64_t H, int64_t Dn,
                  int64_t Dr, int64_t Dv);
template <class T>
void mla_kv_split_backward(const T* dk, const T* dv, T* dkv, T* dkrot, int64_t N, int64_t H,
                           int64_t Dn, int64_t Dr, int64_t Dv);

// ---- causal attention (ref_attention.cpp) ----
struct AttnDims { int64_t B, T, H, Dk, Dv; };
// q,k (B,T,H,Dk); v (B,T,H,Dv); seg (B,T) or nullptr; out (B,T,H,Dv); lse (B,H,T).
template <class T>
void attention_forward(const T* q, const T* k, const T* v, const int32_t* seg, double scale,
                       T* out, T* lse, const AttnDims& d);
// dq, dk, dv overwritten. Uses lse to rebuild the probabilities.
template <class T>
void attention_backward(const T* q, const T* k, const T* v, const int32_t* seg, double scale,
                        const T* out, const T* lse, const T* dout, T* dq, T* dk, T* dv,
                        const AttnDims& d);

// ---- SwiGLU (ref_swiglu.cpp) ----
template <class T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n);
template <class T>
void swiglu_backward(const T* gate, const T* up, const T* dout, T* dgate, T* dup, int64_t n);

// ---- cross-entropy (ref_cross_entropy.cpp); max-subtracted, sums in double ----
template <class T>
void cross_entropy_forward(const T* logits /*(N,V)*/, const int32_t* targets /*(N)*/,
                           T* losses /*(N)*/, int64_t N, int64_t V);
template <class T>
void cross_entropy_backward(const T* logits /*(N,V)*/, const int32_t* targets /*(N)*/, double scale,
                            T* dlogits /*(N,V)*/, int64_t N, int64_t V);

// ---- MoE routing (ref_moe.cpp) ----
// One token: scores (E) from logits (E); selection with optional bias (E); idx (K) and
// weights (K). Shared by the optimised path (which runs it over tokens in parallel).
template <class T>
void moe_route_token(const T* logits, const float* bias, const RouteParams& p, int64_t E,
                     T* scores, int32_t* idx, T* weights);
template <class T>
void moe_route(const T* logits /*(N,E)*/, const float* bias /*(E) or null*/, const RouteParams& p,
               int64_t N, int64_t E, T* scores /*(N,E)*/, int32_t* idx /*(N,K)*/,
               T* weights /*(N,K)*/);
template <class T>
void moe_route_backward_token(const T* scores, const int32_t* idx, const T* dweights,
                              const T* dscores_extra, const RouteParams& p, int64_t E, T* dlogits);
template <class T>
void moe_route_backward(const T* scores /*(N,E)*/, const int32_t* idx /*(N,K)*/,
                        const T* dweights /*(N,K)*/, const T* dscores_extra /*(N,E) or null*/,
                        const RouteParams& p, int64_t N, int64_t E, T* dlogits /*(N,E)*/);
// Returns the loss; writes dscores (N,E) when non-null. lengths (n_seq) or null: the leading
// tokens of each sequence that count (the rest is padding: no statistics, zero dscores).
template <class T>
double moe_balance_loss(const T* scores /*(N,E)*/, const int32_t* idx /*(N,K)*/, int64_t n_seq,
                        int64_t seq_len, int64_t E, int64_t K, double alpha, T* dscores,
                        const int32_t* lengths = nullptr);
void moe_count(const int32_t* idx /*(N*K)*/, int64_t n, int32_t* counts /*(E) +=*/);
// ops::moe_sort_pairs: counts (E) written, not added to; pair_slot may be null.
void moe_sort_pairs(const int32_t* idx /*(NK)*/, int64_t NK, int64_t K, int64_t E,
                    int32_t* counts /*(E)*/, int32_t* pair_src /*(NK)*/, int32_t* pair_tok /*(NK)*/,
                    int32_t* pair_slot /*(NK)*/);
// ops::moe_pad_pairs: off, poff (E+1) the sorted and the padded offsets (checked by the op).
void moe_pad_pairs(const int32_t* pair_src /*(NK)*/, const float* pair_w /*(NK)*/,
                   const int64_t* off, const int64_t* poff, int64_t E, int64_t K,
                   int32_t* p_tok /*(NKp)*/, float* p_w /*(NKp)*/, int32_t* p_row /*(NK)*/,
                   int32_t* p_pair /*(NK)*/);
// ops::combine_pairs (F32): dst (N, C) += per token, its K rows in ascending slot order.
void combine_pairs(const float* src /*(R,C), R >= N*K*/, const int32_t* slot /*(N,K)*/,
                   const float* w /*(N,K)|null*/, float* dst /*(N,C)*/, int64_t N, int64_t K,
                   int64_t C);

// ---- token permutation (ref_permute.cpp) ----
template <class T>
void gather_rows(const T* src /*(N,C)*/, const int32_t* rows /*(M)*/, T* dst /*(M,C)*/, int64_t M,
                 int64_t C);
template <class T>
void scatter_add_rows(const T* src /*(M,C)*/, const int32_t* rows /*(M)*/, const T* w /*(M)|null*/,
                      T* dst /*(N,C)*/, int64_t M, int64_t C);
template <class T>
void gather_rows_dot(const T* a /*(N,C)*/, const int32_t* rows /*(M)*/, const T* b /*(M,C)*/,
                     T* out /*(M)*/, int64_t M, int64_t C);

// ---- element-wise, reductions, AdamW (ref_elementwise.cpp) ----
void add(const float* a, const float* b, float* out, int64_t n);
void add_(float* dst, const float* src, int64_t n);
void scale_(float* x, float s, int64_t n);
double sum_squares(const float* x, int64_t n);
int64_t count_nonfinite(const float* x, int64_t n);
double sum(const float* x, int64_t n);
// m, v: F32 (m32/v32) when m16/v16 are null, else BF16 (stored with round-to-nearest-even).
void adamw_step(float* param, const float* grad, float* m32, float* v32, uint16_t* m16,
                uint16_t* v16, int64_t n, const AdamWParams& p);

}  // namespace ds::ops::ref
