// RoPE inverse frequencies with the YaRN correction (spec §1.7): f_i = theta^(-2i/Dr) for the
// Dr/2 interleaved pairs; when YaRN is on (ModelArgs::yarn, i.e. rope_scaling present) pairs
// below the correction range keep f_i, pairs above it use f_i / factor, and the pairs in between
// blend linearly. The attention softmax scale (with mscale^2) is ModelArgs::softmax_scale().
// reference: DeepSeek-V3 inference/model.py precompute_freqs_cis (find_correction_range,
// linear_ramp_factor); HF rope_scaling rule for when YaRN applies.
#pragma once
#include <vector>

#include "ds/model/config.hpp"
#include "ds/ops/ops.hpp"

namespace ds::model {

struct YarnRange {
  int low = 0;    // pairs i <= low keep their frequency
  int high = 0;   // pairs i >= high are divided by rope_factor
};

// corr(r) = Dr * ln(L0 / (2 pi r)) / (2 ln theta); low = max(floor(corr(beta_fast)), 0),
// high = min(ceil(corr(beta_slow)), Dr - 1).
YarnRange yarn_correction_range(const ModelArgs& args);

// Per pair i (Dr/2 values, in double): the YaRN ramp in [0, 1] (0 everywhere without YaRN).
std::vector<double> yarn_ramp(const ModelArgs& args);
// Per pair i (Dr/2 values, in double): the inverse frequencies actually used.
std::vector<double> rope_inv_freqs(const ModelArgs& args);
// The same as an (Dr/2) F32 tensor on ctx.device, as ops::rope_forward takes it.
Tensor rope_freqs_tensor(const ops::Context& ctx, const ModelArgs& args);

}  // namespace ds::model
