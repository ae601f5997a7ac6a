// The GRPO objective on per-token log-probabilities (see include/ds/rl/grpo.hpp for the
// formulas, the averaging and the clipping rule).
// reference: spec §5.3; DeepSeekMath (Shao et al. 2024) eqs. 3-4.
#include "ds/rl/grpo.hpp"

#include <algorithm>
#include <cmath>

#include "ds/core/error.hpp"

namespace ds::rl {

void GrpoStats::add(const GrpoStats& o) {
  loss += o.loss;
  kl += o.kl;
  tokens += o.tokens;
  clipped += o.clipped;
}

std::vector<double> group_advantages(std::span<const double> rewards, int64_t group_size,
                                     double adv_eps) {
  const int64_t n = int64_t(rewards.size()), G = group_size;
  DS_CHECK(G >= 2 && n % G == 0, "group_advantages: {} rewards in groups of {}", n, G);
  std::vector<double> a(rewards.size(), 0.0);
  for (int64_t g0 = 0; g0 < n; g0 += G) {
    const auto r = rewards.subspan(size_t(g0), size_t(G));
    const auto [lo, hi] = std::minmax_element(r.begin(), r.end());
    if (*lo == *hi) continue;   // no signal: exact zeros (not rounding noise / eps)
    // (r - mean) / (sd + eps) is computed on r / c with eps / c: the same value, but rewards
    // near the double range (1e308) no longer overflow the sum or the squares. c = 1 for
    // ordinary rewards, so their advantages are unchanged to the bit.
    const double big = std::max(std::abs(*lo), std::abs(*hi));
    const double c = big > 1e150 ? big : 1.0;
    double mean = 0;
    for (double v : r) mean += v / c;
    mean /= double(G);
    double ss = 0;
    for (double v : r) ss += (v / c - mean) * (v / c - mean);
    const double sd = std::sqrt(ss / double(G - 1));
    for (int64_t i = 0; i < G; ++i)
      a[size_t(g0 + i)] = (r[size_t(i)] / c - mean) / (sd + adv_eps / c);
  }
  return a;
}

double k3_kl(double logp, double logp_ref) {
  const double d = logp_ref - logp;
  return std::max(0.0, std::expm1(d) - d);
}

double grpo_loss(const GrpoOptions& o, std::span<const GrpoSeq> seqs, std::span<const float> logp,
                 std::span<float> dlogp, GrpoStats& st) {
  DS_CHECK(logp.size() == dlogp.size(), "grpo_loss: {} log-probs, {} gradients", logp.size(),
           dlogp.size());
  const double lo = 1.0 - o.clip_eps, hi = 1.0 + o.clip_eps;
  double total = 0;
  for (const GrpoSeq& s : seqs) {
    DS_CHECK(s.length >= 1 && s.offset >= 0 && size_t(s.offset + s.length) <= logp.size(),
             "grpo_loss: tokens [{}, {}) outside the {} scores", s.offset, s.offset + s.length,
             logp.size());
    DS_CHECK(o.beta == 0 || s.logp_ref, "grpo_loss: beta > 0 needs reference log-probs");
    const double A = s.advantage;
    double seq_loss = 0, seq_kl = 0;
    for (int64_t t = 0; t < s.length; ++t) {
      const size_t k = size_t(s.offset + t);
      const double lp = logp[k];
      const double ratio = s.logp_old ? std::exp(lp - double(s.logp_old[t])) : 1.0;
      const double unclipped = ratio * A, clipped = std::clamp(ratio, lo, hi) * A;
      double g = 0;
      if (unclipped <= clipped) g = -A * ratio;     // the min takes the unclipped term
      else st.clipped += 1;                         // clipped term active: no gradient
      double l = -std::min(unclipped, clipped);
      if (o.beta != 0) {
        const double lr = s.logp_ref[t];
        const double kl = k3_kl(lp, lr);
        seq_kl += kl;
        l += o.beta * kl;
        g += o.beta * (1.0 - std::exp(lr - lp));
      }
      seq_loss += l;
      dlogp[k] = float(s.weight * g);
    }
    st.tokens += double(s.length);
    st.kl += s.weight * seq_kl;
    st.loss += s.weight * seq_loss;
    total += s.weight * seq_loss;
  }
  return total;
}

}  // namespace ds::rl
