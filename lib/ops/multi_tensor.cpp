// Dispatch of the many-tensor ops (include/ds/ops/ops.hpp "many tensors in one call", and
// bf16_round_multi of fp8.hpp): every entry gets the checks of its one-tensor op, then the CUDA
// path (cuda/multi_tensor.cpp: one launch over a table of all entries) or, on the CPU and
// with DS_CUDA_FUSED=0, the one-tensor op per entry (no launches to save on the CPU). The profiler
// sees one call of the many-tensor op, not the per-entry calls.
#include <string>

#include "dispatch.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"

namespace ds::ops {

namespace {

using detail::check_devices;
using detail::Scope;

// The context of the per-entry calls of the CPU path: no profiler (the many-tensor op's own
// scope times them together).
Context inner(const Context& ctx) {
  Context c = ctx;
  c.prof = nullptr;
  return c;
}

}  // namespace

std::vector<double> sum_squares_multi(const Context& ctx, const std::vector<const Tensor*>& xs) {
  check_devices(ctx, "sum_squares_multi", xs);
  for (size_t i = 0; i < xs.size(); ++i)
    DS_CHECK(xs[i]->dtype() == DType::f32, "sum_squares_multi: tensor {} is {}, expected F32", i,
             dtype_name(xs[i]->dtype()));
  const Scope scope_(ctx, "sum_squares_multi");
  if (scope_.on())
    for (const Tensor* x : xs) scope_.add_bytes(double(x->nbytes()));
  DS_CUDA_ROUTE_FUSED(sum_squares_multi, (ctx, xs));
  const Context c = inner(ctx);
  std::vector<double> out;
  out.reserve(xs.size());
  for (const Tensor* x : xs) out.push_back(sum_squares(c, *x));
  return out;
}

void zero_multi(const Context& ctx, const std::vector<Tensor*>& xs) {
  check_devices(ctx, "zero_multi", std::vector<const Tensor*>(xs.begin(), xs.end()));
  const Scope scope_(ctx, "zero_multi");
  if (scope_.on())
    for (const Tensor* x : xs) scope_.add_bytes(x->defined() ? double(x->nbytes()) : 0.0);
  DS_CUDA_ROUTE_FUSED(zero_multi, (ctx, xs));
  for (Tensor* x : xs)
    if (x->defined()) x->zero_();
}

void adamw_step_multi(const Context& ctx, const std::vector<AdamWTensors>& ts,
                      const AdamWParams& p) {
  std::vector<const Tensor*> all;
  all.reserve(4 * ts.size());
  for (const AdamWTensors& t : ts) {
    DS_CHECK(t.param && t.grad && t.m && t.v, "adamw_step_multi: an entry lacks a tensor");
    all.insert(all.end(), {t.param, t.grad, t.m, t.v});
  }
  check_devices(ctx, "adamw_step_multi", all);
  for (const AdamWTensors& t : ts) {
    detail::check_adamw(*t.param, *t.grad, *t.m, *t.v, p);
    DS_CHECK(t.m->dtype() == ts[0].m->dtype() && t.v->dtype() == ts[0].v->dtype(),
             "adamw_step_multi: the moments' dtypes differ between entries");
    if (!t.operand) continue;
    check_devices(ctx, "adamw_step_multi", {t.operand});
    DS_CHECK(t.operand->numel() == t.param->numel() &&
                 (t.operand->dtype() == DType::f32 || t.operand->dtype() == DType::bf16),
             "adamw_step_multi: an operand must be F32 or BF16 with the param's {} elements, "
             "got {} {}", t.param->numel(), dtype_name(t.operand->dtype()),
             shape_str(t.operand->shape()));
  }
  const Scope scope_(ctx, "adamw_step_multi");
  if (scope_.on())
    for (const AdamWTensors& t : ts)   // param, m, v read and written, grad read, operand written
      scope_.add_bytes(double(2 * (t.param->nbytes() + t.m->nbytes() + t.v->nbytes()) +
                              t.grad->nbytes() + (t.operand ? t.operand->nbytes() : 0)));
  DS_CUDA_ROUTE_FUSED(adamw_step_multi, (ctx, ts, p));
  const Context c = inner(ctx);
  for (const AdamWTensors& t : ts) {
    AdamWParams q = p;
    q.weight_decay = t.weight_decay;
    adamw_step(c, *t.param, *t.grad, *t.m, *t.v, q);
    if (t.operand) {
      Tensor o = t.operand->view(t.param->shape());
      bf16_round(c, *t.param, o);
    }
  }
}

void bf16_round_multi(const Context& ctx, const std::vector<const Tensor*>& xs,
                      const std::vector<Tensor*>& outs) {
  DS_CHECK(xs.size() == outs.size(), "bf16_round_multi: {} inputs but {} outputs", xs.size(),
           outs.size());
  std::vector<const Tensor*> all(xs.begin(), xs.end());
  all.insert(all.end(), outs.begin(), outs.end());
  check_devices(ctx, "bf16_round_multi", all);
  for (size_t i = 0; i < xs.size(); ++i) {
    DS_CHECK(outs[i]->defined(), "bf16_round_multi: output {} is not allocated", i);
    detail::check_bf16_round(*xs[i], *outs[i]);
    DS_CHECK(outs[i]->dtype() == outs[0]->dtype(),
             "bf16_round_multi: outputs mix F32 and BF16 ({} and {})",
             dtype_name(outs[0]->dtype()), dtype_name(outs[i]->dtype()));
  }
  const Scope scope_(ctx, "bf16_round_multi");
  if (scope_.on())
    for (size_t i = 0; i < xs.size(); ++i)
      scope_.add_bytes(double(xs[i]->nbytes() + outs[i]->nbytes()));
  DS_CUDA_ROUTE_FUSED(bf16_round_multi, (ctx, xs, outs));
  const Context c = inner(ctx);
  for (size_t i = 0; i < xs.size(); ++i) bf16_round(c, *xs[i], *outs[i]);
}

}  // namespace ds::ops
