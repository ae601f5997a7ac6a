// Kernels of the per-token log-probability op (internal header; public contract in
// include/ds/ops/ops.hpp, "policy gradients"): plain reference loops templated on float/double
// (double for the finite-difference tests) and the optimised FP32 OpenMP rows.
// Letters: N rows (tokens), V vocabulary. Targets -1 = row not scored.
#pragma once
#include <cstdint>

namespace ds::ops::ref {

// logp/lse/entropy (N) overwritten (entropy may be null); computed in double.
template <class T>
void token_logprob_forward(const T* logits /*(N,V)*/, const int32_t* targets /*(N)*/, T* logp,
                           T* lse, T* entropy, int64_t N, int64_t V);
// dlogits (N,V) = dlogp[n] * (onehot - exp(logits - lse[n])); dlogits != logits.
template <class T>
void token_logprob_backward(const T* logits, const int32_t* targets, const T* lse,
                            const T* dlogp, T* dlogits, int64_t N, int64_t V);

}  // namespace ds::ops::ref

namespace ds::ops::opt {

// Rows split statically over nt threads; results independent of nt. dlogits may be logits.
void token_logprob_forward(const float* logits, const int32_t* targets, float* logp, float* lse,
                           float* entropy, int64_t N, int64_t V, int nt);
void token_logprob_backward(const float* logits, const int32_t* targets, const float* lse,
                            const float* dlogp, float* dlogits, int64_t N, int64_t V, int nt);

}  // namespace ds::ops::opt
