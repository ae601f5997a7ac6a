// The GRPO objective (spec §5.3, DeepSeekMath's token-level form) on per-token log-probs:
// group-normalised advantages, the k3 KL estimator and the clipped surrogate, with the loss
// value and its gradient dL/dlogp per token (the model turns that into dlogits; see
// model::Transformer::forward_backward_policy). Everything here is plain arithmetic in double.
//
//   A_i    = (r_i - mean_G(r)) / (std_G(r) + adv_eps), std with Bessel's correction (G - 1);
//            exactly 0 for every member of a group whose rewards are all equal
//   rho_t  = exp(logp_t - logp_old_t)
//   kl_t   = exp(lref_t - logp_t) - (lref_t - logp_t) - 1            (k3, >= 0)
//   l_t    = -min(rho_t A_i, clip(rho_t, 1 - eps, 1 + eps) A_i) + beta kl_t
//   L      = (1 / n) sum_i (1 / |o_i|) sum_{t in o_i} l_t               (n completions)
//   dL/dlogp_t = w_i (-A_i rho_t [unclipped term is the min] + beta (1 - exp(lref_t - logp_t)))
// with w_i = 1 / (n |o_i|). A token is "clipped" when the clipped term is strictly smaller
// (then its surrogate gradient is 0): rho > 1 + eps with A > 0, or rho < 1 - eps with A < 0.
// reference: spec §5.3; DeepSeekMath (Shao et al. 2024) eqs. 3-4; Schulman's k3 estimator.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace ds::rl {

struct GrpoOptions {
  double clip_eps = 0.2;    // eps of the clipped ratio
  double beta = 0.04;       // KL coefficient (0: no reference model)
  double adv_eps = 1e-4;    // added to the group standard deviation
};

// Advantages of rewards grouped as consecutive runs of group_size (>= 2; the size must
// divide rewards.size(), InternalError otherwise).
std::vector<double> group_advantages(std::span<const double> rewards, int64_t group_size,
                                     double adv_eps);

// The k3 estimate of KL(pi || pi_ref) at one token, as expm1(d) - d with d = logp_ref - logp,
// clamped at 0 (rounding can make it a tiny negative number otherwise).
double k3_kl(double logp, double logp_ref);

// One completion's tokens inside a forward's flat (B*T) score arrays.
struct GrpoSeq {
  int64_t offset = 0;                 // index of its first token in logp / dlogp
  int64_t length = 0;                 // |o_i| >= 1
  double advantage = 0;               // A_i
  double weight = 0;                  // w_i = 1 / (n |o_i|)
  const float* logp_old = nullptr;    // (|o_i|) log pi_old; nullptr: the current logp (rho = 1)
  const float* logp_ref = nullptr;    // (|o_i|) log pi_ref; required when beta > 0
};

// Sums over the tokens of the sequences given (loss and kl weighted by w_i).
struct GrpoStats {
  double loss = 0;       // sum_i w_i sum_t l_t
  double kl = 0;         // sum_i w_i sum_t kl_t
  double tokens = 0;     // completion tokens
  double clipped = 0;    // tokens whose clipped term is active
  void add(const GrpoStats& o);
};

// Adds the sequences' loss to `st` and writes dlogp at their tokens (other entries are left
// as they are); returns the sequences' part of L. logp, dlogp: the forward's (B*T) arrays.
double grpo_loss(const GrpoOptions& o, std::span<const GrpoSeq> seqs, std::span<const float> logp,
                 std::span<float> dlogp, GrpoStats& st);

}  // namespace ds::rl
