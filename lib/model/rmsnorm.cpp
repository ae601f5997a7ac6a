// RMSNorm (see rmsnorm.hpp).
// reference: DeepSeek-V3 inference/model.py RMSNorm; spec §1.5 (FP32 statistics).
#include "ds/model/rmsnorm.hpp"

#include "ds/core/error.hpp"
#include "ds/model/linear.hpp"
#include "model_util.hpp"

namespace ds::model {

RMSNorm::RMSNorm(ParamStore& store, const std::string& name, int64_t C, double eps_, int layer)
    : g(&add_norm_gain(store, name, C, layer)), dim(C), eps(float(eps_)) {}

void RMSNorm::forward(const ops::Context& ctx, const Tensor& x, Tensor& y, Tensor& rstd) const {
  DS_CHECK_SHAPE(x, {-1, dim});
  if (!y.defined()) y = detail::empty_f32(ctx, {x.size(0), dim});
  if (!rstd.defined()) rstd = detail::empty_f32(ctx, {x.size(0)});
  ops::rmsnorm_forward(ctx, x, g->value, eps, y, rstd);
}

void RMSNorm::backward(const ops::Context& ctx, const Tensor& x, const Tensor& rstd,
                       const Tensor& dy, Tensor& dx) const {
  DS_CHECK(g->grad.defined(), "{}: gradient not allocated", g->info.name);
  if (!dx.defined()) dx = detail::empty_f32(ctx, {x.size(0), dim});
  ops::rmsnorm_backward(ctx, x, g->value, rstd, dy, dx, g->grad);
}

void RMSNorm::forward_add(const ops::Context& ctx, const Tensor& x, const Tensor& a, Tensor& h,
                          Tensor& y, Tensor& rstd) const {
  DS_CHECK_SHAPE(x, {-1, dim});
  if (!h.defined()) h = detail::empty_f32(ctx, {x.size(0), dim});
  if (!y.defined()) y = detail::empty_f32(ctx, {x.size(0), dim});
  if (!rstd.defined()) rstd = detail::empty_f32(ctx, {x.size(0)});
  ops::add_rmsnorm_forward(ctx, x, a, g->value, eps, h, y, rstd);
}

void RMSNorm::backward_add(const ops::Context& ctx, const Tensor& h, const Tensor& rstd,
                           const Tensor& dy, const Tensor& res, Tensor& dx,
                           Tensor* dx_codes) const {
  DS_CHECK(g->grad.defined(), "{}: gradient not allocated", g->info.name);
  if (!dx.defined()) dx = detail::empty_f32(ctx, {h.size(0), dim});
  if (dx_codes && !dx_codes->defined())
    *dx_codes = Tensor::empty({h.size(0), dim}, DType::bf16, ctx.device);
  ops::rmsnorm_backward_add(ctx, h, g->value, rstd, dy, res, dx, g->grad, dx_codes);
}

}  // namespace ds::model
