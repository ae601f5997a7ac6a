// Linear layer without bias and the parameter-registration helpers (see linear.hpp).
// reference: DeepSeek-V3 inference/model.py Linear (y = x W^T), HF nn.Linear layout.
#include "ds/model/linear.hpp"

#include "ds/core/error.hpp"
#include "model_util.hpp"

namespace ds::model {

Param& add_matrix(ParamStore& store, const std::string& name, int64_t out, int64_t in,
                  double init_std, bool fp8, int layer, int expert) {
  ParamInfo info;
  info.name = name;
  info.shape = {out, in};
  info.decay = true;
  info.fp8 = fp8;
  info.layer = layer;
  info.expert = expert;
  info.init_std = init_std;
  return store.add(std::move(info));
}

Param& add_norm_gain(ParamStore& store, const std::string& name, int64_t C, int layer) {
  ParamInfo info;
  info.name = name;
  info.shape = {C};
  info.decay = false;
  info.layer = layer;
  info.init_one = true;
  return store.add(std::move(info));
}

Linear::Linear(ParamStore& store, const std::string& name, int64_t out_features,
               int64_t in_features, double init_std, bool fp8, int layer, int expert)
    : w(&add_matrix(store, name, out_features, in_features, init_std, fp8, layer, expert)),
      in(in_features), out(out_features) {}

void Linear::forward(const ops::Context& ctx, const Tensor& x, Tensor& y) const {
  DS_CHECK_SHAPE(x, {-1, in});
  if (!y.defined()) y = detail::empty_f32(ctx, {x.size(0), out});
  ops::linear_forward(ctx, x, w->value, y);
}

void Linear::backward(const ops::Context& ctx, const Tensor& x, const Tensor& dy, Tensor& dx,
                      bool want_dx) const {
  DS_CHECK(w->grad.defined(), "{}: gradient not allocated", w->info.name);
  Tensor none;
  if (want_dx && !dx.defined()) dx = detail::empty_f32(ctx, {x.size(0), in});
  ops::linear_backward(ctx, x, w->value, dy, want_dx ? dx : none, w->grad);
}

}  // namespace ds::model
