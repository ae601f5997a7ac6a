// Internal header of the inference-side MLA kernels (absorbed attention over a latent cache,
// per-head matmuls, row writes): the reference loops (templated, double-capable) and the
// optimised OpenBLAS/OpenMP versions. The latent cache is F32 or BF16 (uint16_t codes, widened
// exactly to F32 on use). Shapes and semantics: include/ds/ops/ops.hpp, section "inference:
// absorbed MLA". No checks here (lib/ops/mla_decode.cpp checks).
// reference: spec §2.1 (absorbed attention, MQA over a 576-d key / 512-d value).
#pragma once
#include <cstdint>

namespace ds::ops {

struct MlaDims {
  int64_t N = 0, H = 0, R = 0, Dr = 0, S = 0, L = 0;   // rows, heads, latent, rope, slots, cap
};

namespace ref {
template <class T>
void head_matmul(const T* x /*(N,H,I)*/, const T* w, bool trans_w, T* y /*(N,H,O)*/, int64_t N,
                 int64_t H, int64_t I, int64_t O);
// C: the cache element type, T (float / double) or uint16_t (BF16 codes, T = float).
template <class T, class C = T>
void mla_latent_attention(const T* q_lat, const T* q_pe, const C* ckv, const C* kpe,
                          const int32_t* slot, const int32_t* len, double scale, T* out,
                          const MlaDims& d);
}  // namespace ref

namespace opt {
void head_matmul(const float* x, const float* w, bool trans_w, float* y, int64_t N, int64_t H,
                 int64_t I, int64_t O, int nt);
void mla_latent_attention(const float* q_lat, const float* q_pe, const float* ckv,
                          const float* kpe, const int32_t* slot, const int32_t* len, float scale,
                          float* out, const MlaDims& d, int nt);
// The same over a BF16 cache (ckv (S, L, R), kpe (S, L, Dr) as BF16 codes).
void mla_latent_attention(const float* q_lat, const float* q_pe, const uint16_t* ckv,
                          const uint16_t* kpe, const int32_t* slot, const int32_t* len,
                          float scale, float* out, const MlaDims& d, int nt);
// dst (., C)[rows[m]] = src (M, C)[m]: F32 copy, BF16 copy, F32 rounded to BF16 (RNE).
void set_rows(const float* src, const int32_t* rows, float* dst, int64_t M, int64_t C, int nt);
void set_rows(const uint16_t* src, const int32_t* rows, uint16_t* dst, int64_t M, int64_t C,
              int nt);
void set_rows(const float* src, const int32_t* rows, uint16_t* dst, int64_t M, int64_t C, int nt);
}  // namespace opt

}  // namespace ds::ops
