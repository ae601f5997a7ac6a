// Dispatch of the per-token log-probability op (include/ds/ops/ops.hpp, "policy gradients"):
// device, dtype, shape and target-range checks at the boundary, then the reference kernels
// (cpu/ref_token_logprob.cpp) or the optimised ones (cpu/opt_token_logprob.cpp) according to
// Context::impl; with Context::prof set the wall time goes to the cross_entropy family.
#include <algorithm>
#include <chrono>
#include <initializer_list>

#include "cpu/token_logprob.hpp"
#include "dispatch.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/ops.hpp"

namespace ds::ops {

namespace {

using detail::check_devices;
using detail::nthreads;
using detail::Scope;

// logits (N, V) f32 with V > 0, targets (N) i32 in [-1, V).
void check_rows(const Tensor& logits, const Tensor& targets, const char* op) {
  DS_CHECK_SHAPE(logits, {-1, -1});
  DS_CHECK(logits.dtype() == DType::f32 && targets.dtype() == DType::i32,
           "{}: logits must be f32 and targets i32", op);
  const int64_t N = logits.size(0), V = logits.size(1);
  DS_CHECK(V > 0, "{}: empty vocabulary", op);
  DS_CHECK_SHAPE(targets, {N});
  if (targets.device() != Device::cpu) return;   // host check; the CUDA kernels skip bad rows
  const int32_t* t = targets.i32();
  for (int64_t n = 0; n < N; ++n)
    if (t[n] < -1 || t[n] >= V)
      DS_THROW(InternalError, "{}: target {} at row {} outside [-1, {})", op, t[n], n, V);
}

}  // namespace

void token_logprob_forward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                           Tensor& logp, Tensor& lse, Tensor& entropy) {
  check_devices(ctx, "token_logprob_forward", {&logits, &targets, &logp, &lse, &entropy});
  const Scope scope(ctx, "cross_entropy/token_logprob_forward", 0,
                    {&logits, &targets, &logp, &lse, &entropy});
  check_rows(logits, targets, "token_logprob_forward");
  const int64_t N = logits.size(0), V = logits.size(1);
  DS_CHECK_SHAPE(logp, {N});
  DS_CHECK_SHAPE(lse, {N});
  if (entropy.defined()) DS_CHECK_SHAPE(entropy, {N});
  DS_CUDA_ROUTE(token_logprob_forward, (ctx, logits, targets, logp, lse, entropy));
  float* ent = entropy.defined() ? entropy.f32() : nullptr;
  if (ctx.impl == Impl::reference)
    ref::token_logprob_forward(logits.f32(), targets.i32(), logp.f32(), lse.f32(), ent, N, V);
  else
    opt::token_logprob_forward(logits.f32(), targets.i32(), logp.f32(), lse.f32(), ent, N, V,
                               nthreads(ctx));
}

void token_logprob_backward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                            const Tensor& lse, const Tensor& dlogp, Tensor& dlogits) {
  check_devices(ctx, "token_logprob_backward", {&logits, &targets, &lse, &dlogp, &dlogits});
  const Scope scope(ctx, "cross_entropy/token_logprob_backward", 0,
                    {&logits, &targets, &lse, &dlogp, &dlogits});
  check_rows(logits, targets, "token_logprob_backward");
  const int64_t N = logits.size(0), V = logits.size(1);
  DS_CHECK_SHAPE(lse, {N});
  DS_CHECK_SHAPE(dlogp, {N});
  DS_CHECK_SHAPE(dlogits, {N, V});
  DS_CHECK(dlogits.dtype() == DType::f32 || dlogits.dtype() == DType::bf16,
           "token_logprob_backward: dlogits must be F32 or BF16, got {}",
           dtype_name(dlogits.dtype()));
  DS_CUDA_ROUTE(token_logprob_backward, (ctx, logits, targets, lse, dlogp, dlogits));
  const Tensor d = detail::f32_target(dlogits);
  if (ctx.impl == Impl::reference) {
    const Tensor src = d.same_storage(logits) ? logits.clone() : logits;
    ref::token_logprob_backward(src.f32(), targets.i32(), lse.f32(), dlogp.f32(), d.f32(), N, V);
  } else {
    opt::token_logprob_backward(logits.f32(), targets.i32(), lse.f32(), dlogp.f32(), d.f32(), N,
                                V, nthreads(ctx));
  }
  detail::store_codes(d, dlogits);
}

}  // namespace ds::ops
