// AdamW over a ParamStore: FP32 master weights, moments in FP32 or BF16 (the paper keeps
// them in BF16), global-norm gradient clipping, weight decay on matrices only
// (ParamInfo::decay). The update arithmetic is torch.optim.AdamW's (ops::adamw_step).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ds/model/params.hpp"
#include "ds/ops/ops.hpp"

namespace ds::train {

struct OptimizerOptions {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.1f;
  float clip_norm = 1.0f;      // <= 0: no clipping
  bool bf16_moments = true;
};

// UsageError naming the flag unless every value is finite and in range: --adam-beta1/2 in
// [0, 1), --adam-eps > 0, --weight-decay and --clip-grad-norm >= 0 (a NaN flag trained a
// checkpoint of NaN weights to exit 0).
void validate(const OptimizerOptions& o);

// A saved optimizer moment `name` of dtype `saved` against this run's `want`: F32 against
// BF16 (or back) is a UsageError naming --fp32-moments (the run was saved with the other
// setting), another mismatch a FormatError; `where` names the checkpoint.
void check_moment_dtype(const std::string& where, const std::string& name, DType saved,
                        DType want);

struct GradStats {
  double norm = 0;             // global L2 norm before clipping
  int64_t nonfinite = 0;       // count of NaN/inf gradient elements
};

class AdamW {
 public:
  AdamW(model::ParamStore& params, const OptimizerOptions& opts);
  // Global norm and non-finite count of the current gradients.
  GradStats grad_stats(const ops::Context& ctx) const;
  // Clips (using stats.norm) and applies one update with learning rate lr.
  void step(const ops::Context& ctx, float lr, const GradStats& stats);
  int64_t steps_done() const { return step_; }
  void set_steps_done(int64_t s) { step_ = s; }
  // Moment tensors named "<param>.exp_avg" / "<param>.exp_avg_sq" (for the training state).
  std::vector<std::pair<std::string, Tensor*>> state_tensors();
  const OptimizerOptions& options() const { return opts_; }
  model::ParamStore& params() { return params_; }

 private:
  model::ParamStore& params_;
  OptimizerOptions opts_;
  std::vector<Tensor> m_, v_;
  int64_t step_ = 0;
};

}  // namespace ds::train
