// Row-softmax losses on the GPU: cross-entropy (forward, backward, fused) and the per-token
// log-probabilities / entropy of GRPO (include/ds/ops/ops.hpp for the semantics; the CPU
// references are lib/ops/cpu/ref_cross_entropy.cpp and ref_token_logprob.cpp). Plain C++
// header of the pointer-level launchers in kernels/cross_entropy.cu: all pointers are device
// pointers, F32 rows (N, V) row-major, targets I32. A target outside [0, V) (the -1 of an
// ignored row, or a bad index that the host did not check) makes the row "ignored": zero
// outputs, zero gradient row, and no access out of the row. Everything runs on
// ds::cuda::stream() without host synchronisation.
#pragma once
#include <cstdint>

namespace ds::cuda {

// losses (N) = lse(row) - row[target] (skipped when null); dlogits (N, V) =
// (softmax(row) - onehot(target)) * scale (skipped when null). dlogits may equal logits (in
// place): every logit is read by the max/sum pass before its gradient is written.
void cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, float scale,
                   float* losses, float* dlogits);
// The same with dlogits (N, V) written as BF16 codes (RNE, bf16_round of the F32 gradient):
// the head's GEMM operand in the backward; losses as above (skipped when null).
void cross_entropy_codes(const float* logits, const int32_t* targets, int64_t N, int64_t V,
                         float scale, float* losses, uint16_t* dlogits);

// logp (N) = row[target] - lse, lse (N) = log sum exp(row), entropy (N) = -sum p log p
// (skipped when null); all 0 for ignored rows.
void token_logprob_forward(const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           float* logp, float* lse, float* entropy);
// dlogits (N, V) = dlogp[n] * (onehot(target) - exp(row - lse[n])); 0 rows when ignored.
// dlogits may equal logits.
void token_logprob_backward(const float* logits, const int32_t* targets, const float* lse,
                            const float* dlogp, int64_t N, int64_t V, float* dlogits);
// The same with dlogits written as BF16 codes (the policy head's GEMM operand).
void token_logprob_backward_codes(const float* logits, const int32_t* targets, const float* lse,
                                  const float* dlogp, int64_t N, int64_t V, uint16_t* dlogits);

}  // namespace ds::cuda
