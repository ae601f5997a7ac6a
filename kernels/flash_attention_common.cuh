// Internal to the attention kernels (included only by kernels/flash_attention_simt.cu and
// kernels/flash_attention_tc.cu; public API in kernels/flash_attention.cuh). Split out of the
// former single flash_attention.cu so the two implementations can live in files of reviewable
// size: this header holds only what both need, i.e. the visibility mask and the per-CTA segment
// bounds (in flash_attention_mask.cuh), the launch parameters and the entry points
// of the tensor-core path that the public launchers (in flash_attention_simt.cu) dispatch to.
//
// Causal attention on the GPU, FlashAttention-2 style (see flash_attention.cuh for the API).
// Never materialises T x T: the forward streams key tiles with an online softmax and saves
// lse; the backward recomputes P = exp(scale q.k - lse) per tile and runs two deterministic
// passes (no atomics): dQ (per query block, streaming keys) and dK/dV (per key block,
// streaming queries), with D = rowsum(dO * O) precomputed. Segments (SFT packing) are an
// element mask j <= t && seg[j] == seg[t]; per-token bounds kfirst/klast (first/last key of
// the same segment id, any label layout) let blocks skip tiles no query of theirs can see.
// reference: Dao, "FlashAttention-2" (2023), Algorithms 1-2.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/flash_attention_mask.cuh"

namespace ds::cuda::flash {

using bf16 = __nv_bfloat16;

template <class K>
void set_smem(K kernel, size_t bytes) {
  DS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(bytes)));
}

struct Bf16Inputs {
  const bf16 *q = nullptr, *k = nullptr, *v = nullptr, *dout = nullptr;
};
struct Launch {
  const AttnShape& s;
  const int32_t *seg, *kfirst, *klast;
  float scale;
};

// ---- wgmma forward (flash_attention_sm90.cu) ----------------------------------------------------
// Whether the wgmma forward runs (Dk, Dv): selected (attention_wgmma), a supported pair and
// the sm_90a build loaded.
bool sm90_attention(int64_t Dk, int64_t Dv);
// Keys padded to the kernel's 64-key tiles: V^T's row length.
int64_t sm90_keys_padded(int64_t T);
// xt (B, H, D, Tp) BF16 = x (B, T, H, D) F32 (rounded) or BF16 (copied) transposed, zero for
// rows T..Tp-1.
void convert_t(const float* x, bf16* xt, const AttnShape& s, int64_t D, int64_t Tp);
void convert_t(const bf16* x, bf16* xt, const AttnShape& s, int64_t D, int64_t Tp);
// The forward on q, k (B, T, H, Dk) BF16 and vt as above; out, lse as attention_forward.
void sm90_forward(const Launch& L, const bf16* q, const bf16* k, const bf16* vt, int64_t Tp,
                  float* out, float* lse);
// The backward's BF16 operands: q, k (B, T, H, Dk), v, dout (B, T, H, Dv), and the transposed
// copies qt, kt (B, H, Dk, Tp), doutt (B, H, Dv, Tp) of convert_t; qstats: room for
// (B, H, Tp) float2 (16-byte aligned) where the key-row passes read the query-stats table
// (sm90_bwd_needs_qstats), else null.
struct Sm90BwdInputs {
  const bf16 *q, *k, *v, *dout, *qt, *kt, *doutt;
  float2* qstats;
};
// Whether sm90_backward reads the query-stats table for these head dims (the fused dK/dV pass
// runs, or DS_ATTENTION_QSTATS=table), and so needs qstats.
bool sm90_bwd_needs_qstats(int64_t Dk, int64_t Dv);
// dq, dk, dv as attention_backward, from the forward's lse and D = rowsum(dO * O).
void sm90_backward(const Launch& L, const Sm90BwdInputs& in, int64_t Tp, const float* lse,
                   const float* D, float* dq, float* dk, float* dv);

// ---- tensor-core path (flash_attention_tc.cu) ---------------------------------------------------
// Smallest compiled tile shape holding (Dk, Dv): 0 = (64,64), 1 = (128,128), 2 = (192,128);
// -1 when the tensor-core kernels do not take these dims.
int tc_variant(int64_t Dk, int64_t Dv);
// y = bf16(x) on stream(); n a multiple of 4, x 16-byte aligned.
void convert(const float* x, bf16* y, int64_t n);
// Launch the forward / the dQ and dK/dV passes of tile shape `variant` (tc_variant >= 0) on
// inputs already converted to BF16.
void tc_forward_variant(int variant, const Launch& L, const Bf16Inputs& in, float* out,
                        float* lse);
void tc_backward_variant(int variant, const Launch& L, const Bf16Inputs& in, const float* lse,
                         const float* D, float* dq, float* dk, float* dv);

}  // namespace ds::cuda::flash
