// YaRN-corrected RoPE frequencies (see rope_yarn.hpp). Host-side table, computed in double
// and rounded to FP32 once, as the table is tiny (Dr/2 entries).
// reference: DeepSeek-V3 inference/model.py precompute_freqs_cis; spec §1.7.
#include "ds/model/rope_yarn.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "ds/core/error.hpp"
#include "model_util.hpp"

namespace ds::model {

namespace {
// Pair index at which a wavelength completes `rotations` turns over original_seq_len tokens.
double correction_dim(double rotations, const ModelArgs& a) {
  const double Dr = double(a.qk_rope_head_dim);
  return Dr * std::log(double(a.original_seq_len) / (rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(a.rope_theta));
}
}  // namespace

YarnRange yarn_correction_range(const ModelArgs& a) {
  YarnRange r;
  r.low = std::max(int(std::floor(correction_dim(a.beta_fast, a))), 0);
  r.high = std::min(int(std::ceil(correction_dim(a.beta_slow, a))), int(a.qk_rope_head_dim) - 1);
  return r;
}

std::vector<double> yarn_ramp(const ModelArgs& a) {
  const int64_t P = a.qk_rope_head_dim / 2;
  std::vector<double> ramp(size_t(P), 0.0);
  if (!a.yarn) return ramp;
  const YarnRange r = yarn_correction_range(a);
  const double lo = r.low;
  const double hi = r.high == r.low ? r.high + 0.001 : r.high;
  for (int64_t i = 0; i < P; ++i)
    ramp[size_t(i)] = std::clamp((double(i) - lo) / (hi - lo), 0.0, 1.0);
  return ramp;
}

std::vector<double> rope_inv_freqs(const ModelArgs& a) {
  DS_CHECK_AS(ConfigError, a.qk_rope_head_dim > 0 && a.qk_rope_head_dim % 2 == 0,
              "qk_rope_head_dim ({}) must be even and positive", a.qk_rope_head_dim);
  const int64_t P = a.qk_rope_head_dim / 2;
  const std::vector<double> ramp = yarn_ramp(a);
  std::vector<double> f(static_cast<size_t>(P));
  for (int64_t i = 0; i < P; ++i) {
    const double fi = std::pow(a.rope_theta, -2.0 * double(i) / double(a.qk_rope_head_dim));
    const double rho = ramp[size_t(i)];
    f[size_t(i)] = fi * (1.0 - rho) + (fi / a.rope_factor) * rho;
  }
  return f;
}

Tensor rope_freqs_tensor(const ops::Context& ctx, const ModelArgs& a) {
  const std::vector<double> f = rope_inv_freqs(a);
  std::vector<float> f32(f.begin(), f.end());
  return detail::upload_f32(ctx, f32, {int64_t(f32.size())});
}

}  // namespace ds::model
