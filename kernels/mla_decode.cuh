// Launchers of the absorbed-MLA inference kernels (kernels/mla_decode.cu, mla_decode_tc.cu):
// the per-head matmul around the latent attention (cuBLAS strided-batched SGEMM) and the latent
// attention itself (split-K "flash-decoding" over the latent cache): exact FP32 over an F32
// cache, BF16 tensor cores (mma.sync, FP32 softmax and accumulators) over a BF16 cache.
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

// The same over a BF16 cache (ckv, kpe as BF16 codes, 16-byte aligned) on tensor cores
// (kernels/mla_decode_tc.cu): q and the softmax weights rounded to BF16, the rest FP32.
// Requires mla_bf16_supported(R, Dr).
void mla_latent_attention_bf16(const float* q_lat, const float* q_pe, const uint16_t* ckv,
                               const uint16_t* kpe, const int32_t* slot, const int32_t* len,
                               float scale, float* out, const MlaShape& s);
// R and Dr multiples of 16 (R > 0) and the smallest tile configuration fits in the device's
// shared memory (R + Dr up to about 1300 on sm_90).
bool mla_bf16_supported(int64_t R, int64_t Dr);
// The BF16 kernel's launch plan: heads per block (16 mtiles), the cp.async ring's stages, key
// splits per row (and keys per split), blocks resident per SM. set_mla_bf16_plan overrides
// the launcher's stages and splits, process-wide, for benchmarks (0: its own choice; stages
// are clamped to 2..4 and to what fits, a split keeps at least one 32-key tile);
// mla_bf16_last_plan is the plan of the latest launch.
struct MlaPlan {
  int mtiles = 0, stages = 0, splits = 0, keys_per_split = 0, blocks_per_sm = 0;
};
void set_mla_bf16_plan(int stages, int splits);
MlaPlan mla_bf16_last_plan();
// The BF16 cache on Hopper warpgroup MMAs (kernels/mla_decode_sm90.cu): false (default;
// DS_MLA_KERNEL=mma) the mma.sync kernel, true (DS_MLA_KERNEL=wgmma) the wgmma kernel where it
// takes the problem (mla_wgmma_supported: R 512, Dr 64, at least 64 heads, sm_90a; q_lat and
// q_pe 16-byte and out 8-byte aligned, else the mma.sync kernel). Not yet run on a GPU.
// Process-wide; the setter overrides the environment; how many launches it made (tests).
void set_mla_wgmma(bool on);
bool mla_wgmma();
bool mla_wgmma_supported(int64_t H, int64_t R, int64_t Dr);
int64_t mla_wgmma_launches();
// Internal: the wgmma kernel's launcher (mla_latent_attention_bf16 calls it when selected).
void mla_latent_attention_sm90(const float* q_lat, const float* q_pe, const uint16_t* ckv,
                               const uint16_t* kpe, const int32_t* slot, const int32_t* len,
                               float scale, float* out, const MlaShape& s);

// Internal, shared by the two kernel files: out (N, H, R) = the merge of `splits` partial
// results po (N, splits, H, R) (unnormalised), pm / pl (N, splits, H) (running max and sum;
// pm = -inf marks an empty split).
void mla_combine(const float* po, const float* pm, const float* pl, float* out, int64_t N,
                 int64_t H, int64_t R, int64_t splits);
// Internal: the device's opt-in shared memory per block in bytes (cached; the backend drives
// one GPU).
int mla_max_smem_optin();

}  // namespace ds::cuda
