// AdamW with global-norm clipping over a ParamStore (see include/ds/train/optimizer.hpp).
#include "ds/train/optimizer.hpp"

#include <cmath>
#include <map>
#include <utility>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/train/flag_checks.hpp"

namespace ds::train {

void validate(const OptimizerOptions& o) {
  for (auto [v, flag] : {std::pair{o.beta1, "--adam-beta1"}, std::pair{o.beta2, "--adam-beta2"}})
    if (!(v >= 0 && v < 1)) DS_THROW(UsageError, "{} {}: expected a value in [0, 1)", flag, v);
  check_flag_value(o.eps, "--adam-eps", true);
  check_flag_value(o.weight_decay, "--weight-decay");
  check_flag_value(o.clip_norm, "--clip-grad-norm");
}

AdamW::AdamW(model::ParamStore& params, const OptimizerOptions& opts)
    : params_(params), opts_(opts) {
  DType mt = opts.bf16_moments ? DType::bf16 : DType::f32;
  for (auto& p : params_.params()) {
    m_.push_back(Tensor::zeros(p.info.shape, mt, p.value.device()));   // beside the weights
    v_.push_back(Tensor::zeros(p.info.shape, mt, p.value.device()));
  }
}

GradStats AdamW::grad_stats(const ops::Context& ctx) const {
  GradStats s;
  std::vector<const Tensor*> grads;
  for (const auto& p : params_.params()) grads.push_back(&p.grad);
  const std::vector<double> q = ops::sum_squares_multi(ctx, grads);   // one pass, one sync
  double sq = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    sq += q[i];
    // squares summed in double cannot overflow: a finite sum means every element is finite
    if (!std::isfinite(q[i])) s.nonfinite += ops::count_nonfinite(ctx, *grads[i]);
  }
  s.norm = std::sqrt(sq);
  return s;
}

void AdamW::step(const ops::Context& ctx, float lr, const GradStats& stats) {
  // The weights' cached operands go stale now: refreshed by the update itself where the cache
  // can say where each lies (BF16 operands), the others dropped (ops::OperandCache).
  std::map<const void*, Tensor> plan;
  if (ctx.operands && ops::refreshes_operands(ctx)) {
    std::vector<std::pair<const void*, int64_t>> ps;
    for (const auto& p : params_.params()) ps.emplace_back(p.value.raw(), p.value.numel());
    plan = ctx.operands->refresh_plan(ps);
  } else if (ctx.operands) {
    ctx.operands->clear();
  }
  ++step_;
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when norm > max_norm.
  // The factor is applied inside AdamW as it reads each gradient (the same float product as
  // scaling the gradients first, without a separate pass over them).
  float c = 1.0f;
  if (opts_.clip_norm > 0 && stats.norm > opts_.clip_norm)
    c = float(opts_.clip_norm / (stats.norm + 1e-6));
  ops::AdamWParams ap;
  ap.lr = lr;
  ap.beta1 = opts_.beta1;
  ap.beta2 = opts_.beta2;
  ap.eps = opts_.eps;
  ap.step = step_;
  ap.grad_scale = c;
  std::vector<ops::AdamWTensors> ts;   // every parameter in one call (one launch on the GPU)
  size_t i = 0;
  for (auto& p : params_.params()) {
    auto op = plan.find(p.value.raw());
    const bool mine = op != plan.end() && op->second.numel() == p.value.numel();
    ts.push_back({&p.value, &p.grad, &m_[i], &v_[i], p.info.decay ? opts_.weight_decay : 0.0f,
                  mine ? &op->second : nullptr});
    ++i;
  }
  ops::adamw_step_multi(ctx, ts, ap);
}

std::vector<std::pair<std::string, Tensor*>> AdamW::state_tensors() {
  std::vector<std::pair<std::string, Tensor*>> out;
  size_t i = 0;
  for (auto& p : params_.params()) {
    out.emplace_back(p.info.name + ".exp_avg", &m_[i]);
    out.emplace_back(p.info.name + ".exp_avg_sq", &v_[i]);
    ++i;
  }
  return out;
}

void check_moment_dtype(const std::string& where, const std::string& name, DType saved,
                        DType want) {
  if (saved == want) return;
  auto moment = [](DType t) { return t == DType::f32 || t == DType::bf16; };
  if (moment(saved) && moment(want))
    DS_THROW(UsageError, "{}: optimizer moment {} is {}, this run keeps {} moments: resume {} "
             "--fp32-moments, as the run was saved", where, name, dtype_name(saved),
             dtype_name(want), saved == DType::f32 ? "with" : "without");
  DS_THROW(FormatError, "{}: optimizer moment {} is {}, expected {}", where, name,
           dtype_name(saved), dtype_name(want));
}

}  // namespace ds::train
