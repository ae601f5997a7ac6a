// Launchers of the absorbed-MLA inference kernels (kernels/mla_decode.cu): the per-head
// matmul around the latent attention (cuBLAS strided-batched SGEMM) and the latent attention
// itself (split-K "flash-decoding" over the latent cache, exact FP32).
// Plain C++ header (no CUDA types) so lib/ops/cuda/attention.cpp (g++) can include it.
// Semantics: include/ds/ops/ops.hpp (head_matmul, mla_latent_attention).
#pragma once
#include <cstdint>

namespace ds::cuda {

// y (N, H, O) = x (N, H, I) @ w[h] per head; w (H, I, O), or (H, O, I) with trans_w.
void head_matmul(const float* x, const float* w, bool trans_w, float* y, int64_t N, int64_t H,
                 int64_t I, int64_t O);

struct MlaShape {
  int64_t N = 0, H = 0, R = 0, Dr = 0, S = 0, L = 0;
};
// q_lat (N, H, R), q_pe (N, H, Dr), ckv (S, L, R), kpe (S, L, Dr), slot (N), len (N) -> out
// (N, H, R). Rows with slot outside [0, S) or len outside [1, L] get zeros (never read out of
// bounds).
void mla_latent_attention(const float* q_lat, const float* q_pe, const float* ckv,
                          const float* kpe, const int32_t* slot, const int32_t* len, float scale,
                          float* out, const MlaShape& s);

}  // namespace ds::cuda
