// Optimised CPU kernels of the ops layer (internal header): OpenBLAS SGEMM for the matrix
// products (GEMM, linear, per-(b,h) attention blocks) and OpenMP loops elsewhere. FP32 only.
// Every kernel is deterministic: static schedules, reductions in a fixed order that does not
// depend on the thread count. `nt` is the OpenMP thread count (Context::threads, at least 1).
#pragma once
#include <cstdint>

#include "ref.hpp"

namespace ds::ops::opt {

// Threads for a loop over `work` elements: memory-bound loops below kParMinWork run on the
// calling thread (a fork/join and the cross-core cache traffic cost more than they save).
// The kernels that use it give the same results for any thread count.
constexpr int64_t kParMinWork = int64_t(1) << 18;
inline int par_threads(int64_t work, int nt) { return work >= kParMinWork ? nt : 1; }

// ---- opt_gemm.cpp ----
// Output split into nt panels over OpenMP threads (OpenBLAS itself single-threaded).
// Single-threaded strided GEMM c(m,n) (leading dim ldc) = alpha op(a) op(b) + beta c with the
// kernel choice of matmul (small-M streaming, packed AVX-512, else OpenBLAS).
void gemm_strided(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb,
                  float* c, int64_t ldc, int64_t m, int64_t n, int64_t K, float alpha,
                  float beta);
void matmul(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K,
            bool trans_a, bool trans_b, float alpha, float beta, int nt);
double matmul_flops(int64_t M, int64_t N, int64_t K);

// ---- gemm_bf16.cpp ----
// y(N,O) = x(N,I) @ w(O,I)^T with BF16 weights (products and sums in FP32). N <= 8: small-M
// streaming kernel (AVX-512 or portable), OpenMP over output rows; larger N: weight rows
// widened to F32 in fixed blocks, one gemm_strided per block. Results independent of nt.
void linear_bf16(const float* x, const uint16_t* w, float* y, int64_t N, int64_t O, int64_t I,
                 int nt);

// ---- opt_embedding.cpp ----
void embedding_forward(const float* table, const int32_t* ids, float* out, int64_t N, int64_t C,
                       int nt);
// Deterministic: tokens grouped by id (stable), each table row summed in token order.
void embedding_backward(const int32_t* ids, const float* dout, float* dtable, int64_t N,
                        int64_t V, int64_t C, int nt);

// ---- opt_norm.cpp ----
void rmsnorm_forward(const float* x, const float* g, float eps, float* y, float* rstd, int64_t N,
                     int64_t C, int nt);
// h = x + a, then the forward over h (h may be x or a).
void add_rmsnorm_forward(const float* x, const float* a, float* h, const float* g, float eps,
                         float* y, float* rstd, int64_t N, int64_t C, int nt);
// res non-null: dx = res + the norm's dx (res may be dx).
void rmsnorm_backward(const float* x, const float* g, const float* rstd, const float* dy,
                      float* dx, float* dg, int64_t N, int64_t C, int nt,
                      const float* res = nullptr);

// ---- opt_rope.cpp ----
void rope(const float* x, const int32_t* pos, const float* freqs, float* out, int64_t N,
          int64_t H, int64_t Dr, int dir, int nt, int64_t row = -1, int64_t off = 0);
void split_last(const float* x, float* a, float* b, int64_t R, int64_t A, int64_t B, int nt);
void concat_last(const float* a, const float* b, float* x, int64_t R, int64_t A, int64_t B, int nt);
void broadcast_heads(const float* x, float* out, int64_t N, int64_t H, int64_t D, int nt);
void sum_heads(const float* dout, float* dx, int64_t N, int64_t H, int64_t D, int nt);
void mla_kv_split(const float* kv, const float* krot, float* k, float* v, int64_t N, int64_t H,
                  int64_t Dn, int64_t Dr, int64_t Dv, int nt);
void mla_kv_split_backward(const float* dk, const float* dv, float* dkv, float* dkrot, int64_t N,
                           int64_t H, int64_t Dn, int64_t Dr, int64_t Dv, int nt);

// ---- opt_attention.cpp ----
void attention_forward(const float* q, const float* k, const float* v, const int32_t* seg,
                       float scale, float* out, float* lse, const ref::AttnDims& d, int nt);
void attention_backward(const float* q, const float* k, const float* v, const int32_t* seg,
                        float scale, const float* out, const float* lse, const float* dout,
                        float* dq, float* dk, float* dv, const ref::AttnDims& d, int nt);

// ---- opt_swiglu.cpp ----
void swiglu_forward(const float* gate, const float* up, float* out, int64_t n, int nt);
void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate,
                     float* dup, int64_t n, int nt);
// The same on packed rows h (rows, 2I) = [gate | up]; out (rows, I), dh (rows, 2I).
void swiglu_packed_forward(const float* h, float* out, int64_t rows, int64_t I, int nt);
void swiglu_packed_backward(const float* h, const float* dout, float* dh, int64_t rows,
                            int64_t I, int nt);

// ---- opt_cross_entropy.cpp ----
void cross_entropy_forward(const float* logits, const int32_t* targets, float* losses, int64_t N,
                           int64_t V, int nt);
void cross_entropy_backward(const float* logits, const int32_t* targets, float scale,
                            float* dlogits, int64_t N, int64_t V, int nt);
// Both in one pass per row; dlogits may alias logits.
void cross_entropy_fused(const float* logits, const int32_t* targets, float scale, float* losses,
                         float* dlogits, int64_t N, int64_t V, int nt);

// ---- opt_moe.cpp (tokens in parallel; per-token work shared with the reference) ----
void moe_route(const float* logits, const float* bias, const RouteParams& p, int64_t N, int64_t E,
               float* scores, int32_t* idx, float* weights, int nt);
void moe_route_backward(const float* scores, const int32_t* idx, const float* dweights,
                        const float* dscores_extra, const RouteParams& p, int64_t N, int64_t E,
                        float* dlogits, int nt);

// ---- opt_permute.cpp ----
void gather_rows(const float* src, const int32_t* rows, float* dst, int64_t M, int64_t C, int nt);
// dst[m] = 0 + w[m] * src[rows[m]] (ops::gather_rows_scaled).
void gather_rows_scaled(const float* src, const int32_t* rows, const float* w, float* dst,
                        int64_t M, int64_t C, int nt);
// out = bf16(w[m] * src[rows[m]]) (w null: bf16(src[rows[m]])): codes into out_codes, or the
// rounded values into out_f32 (the other null); w[m] * x computed as 0 + w[m] * x, as a
// weighted scatter_add_rows into zeros does.
void gather_rows_bf16(const float* src, const int32_t* rows, const float* w, float* out_f32,
                      uint16_t* out_codes, int64_t M, int64_t C, int nt);
// Deterministic: a CSR of m by destination row; each row adds its sources in order of m.
void scatter_add_rows(const float* src, const int32_t* rows, const float* w, float* dst,
                      int64_t M, int64_t N, int64_t C, int nt);
void gather_rows_dot(const float* a, const int32_t* rows, const float* b, float* out, int64_t M,
                     int64_t C, int nt);
// ref::combine_pairs over threads (tokens split; each token's sums as the reference's).
void combine_pairs(const float* src, const int32_t* slot, const float* w, float* dst, int64_t N,
                   int64_t K, int64_t C, int nt);

// ---- opt_elementwise.cpp (reductions: fixed chunks, partials summed in chunk order) ----
void add(const float* a, const float* b, float* out, int64_t n, int nt);
void add_(float* dst, const float* src, int64_t n, int nt);
void scale_(float* x, float s, int64_t n, int nt);
double sum_squares(const float* x, int64_t n, int nt);
int64_t count_nonfinite(const float* x, int64_t n, int nt);
double sum(const float* x, int64_t n, int nt);
void adamw_step(float* param, const float* grad, float* m32, float* v32, uint16_t* m16,
                uint16_t* v16, int64_t n, const AdamWParams& p, int nt);

}  // namespace ds::ops::opt
