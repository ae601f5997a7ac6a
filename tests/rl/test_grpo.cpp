// The GRPO objective on per-token log-probabilities: group advantages (sample std, exact zeros
// for equal rewards), the k3 KL estimate (never negative, zero at equality), the clipping rule
// and clip count, rho = 1 without pi_old, and dL/dlogp against central finite differences.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "ds/rl/grpo.hpp"

using namespace ds::rl;

TEST_CASE("group advantages: (r - mean) / (sample std + eps), equal rewards give exact zeros") {
  const std::vector<double> r = {1, 0, 0, 1, 0.1, 0.1, 0.1, 0.1};
  const auto a = group_advantages(r, 4, 1e-4);
  const double sd = std::sqrt(4 * 0.25 / 3.0);   // sample std of {1, 0, 0, 1}
  CHECK(a[0] == doctest::Approx(0.5 / (sd + 1e-4)).epsilon(1e-12));
  CHECK(a[1] == doctest::Approx(-0.5 / (sd + 1e-4)).epsilon(1e-12));
  for (int i = 4; i < 8; ++i) CHECK(a[size_t(i)] == 0.0);   // 0.1 * 4 / 4 != 0.1 in floating point
  double s = 0;
  for (int i = 0; i < 4; ++i) s += a[size_t(i)];
  CHECK(std::fabs(s) < 1e-12);
  const auto b = group_advantages(std::vector<double>{3, 5}, 2, 0.0);
  CHECK(b[0] == doctest::Approx(-1 / std::sqrt(2.0)));
  // rewards near the double range: the same advantages as their scaled-down copies
  const auto huge = group_advantages(std::vector<double>{1e308, -1e308, 1e308, 0}, 4, 1e-4);
  const auto unit = group_advantages(std::vector<double>{1, -1, 1, 0}, 4, 0.0);
  for (size_t i = 0; i < 4; ++i) {
    CHECK(std::isfinite(huge[i]));
    CHECK(huge[i] == doctest::Approx(unit[i]).epsilon(1e-12));
  }
}

TEST_CASE("k3 KL estimate: never negative, zero at equality, matches its formula") {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(-30, 0), small(-1e-7, 1e-7);
  for (int i = 0; i < 100000; ++i) {
    const double lp = u(rng), lr = i % 2 ? u(rng) : lp + small(rng);
    const double k = k3_kl(lp, lr);
    CHECK_MESSAGE(k >= 0.0, "logp ", lp, " ref ", lr);
    if (i % 2 && std::fabs(lr - lp) < 20)
      CHECK(k == doctest::Approx(std::exp(lr - lp) - (lr - lp) - 1).epsilon(1e-9));
  }
  CHECK(k3_kl(-2.5, -2.5) == 0.0);
  CHECK(k3_kl(float(-1.1), double(float(-1.1 + 1e-8))) >= 0.0);
}

TEST_CASE("grpo_loss: clipping rule, clip count, rho = 1 without pi_old") {
  const GrpoOptions o{0.2, 0.0, 1e-4};
  // three tokens of one completion, A > 0: ratios 1.5 (clipped), 0.5 (not), 1.1 (not)
  const std::vector<float> logp = {std::log(1.5f), std::log(0.5f), std::log(1.1f)};
  const std::vector<float> old = {0, 0, 0};
  std::vector<float> d(3, 9.0f);
  GrpoSeq s{0, 3, 2.0, 1.0 / 3.0, old.data(), nullptr};
  GrpoStats st;
  const double L = grpo_loss(o, {&s, 1}, logp, d, st);
  CHECK(L == doctest::Approx(-(1.2 * 2 + 0.5 * 2 + 1.1 * 2) / 3).epsilon(1e-6));
  CHECK(d[0] == 0.0f);                                            // clipped: no gradient
  CHECK(d[1] == doctest::Approx(-2.0 * 0.5 / 3).epsilon(1e-6));
  CHECK(d[2] == doctest::Approx(-2.0 * 1.1 / 3).epsilon(1e-6));
  CHECK(st.clipped == 1);
  CHECK(st.tokens == 3);
  s.advantage = -2.0;   // A < 0: the low side clips (0.5 < 0.8), 1.5 is not clipped
  st = {};
  grpo_loss(o, {&s, 1}, logp, d, st);
  CHECK(d[1] == 0.0f);
  CHECK(d[0] == doctest::Approx(2.0 * 1.5 / 3).epsilon(1e-6));
  CHECK(st.clipped == 1);
  s.logp_old = nullptr;   // rho = 1: -A per token, never clipped
  st = {};
  grpo_loss(o, {&s, 1}, logp, d, st);
  for (float g : d) CHECK(g == doctest::Approx(2.0 / 3).epsilon(1e-6));
  CHECK(st.clipped == 0);
  s.advantage = 0.0;      // no advantage, no KL: exactly zero gradient
  grpo_loss(o, {&s, 1}, logp, d, st);
  for (float g : d) CHECK(g == 0.0f);
}

TEST_CASE("grpo_loss: dL/dlogp == finite differences (two completions, beta > 0)") {
  const GrpoOptions o{0.2, 0.04, 1e-4};
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(-3, -0.1), delta(-0.6, 0.6);
  const int64_t N = 12;
  std::vector<double> lp(N);
  std::vector<float> old(N), ref(N);
  for (int64_t i = 0; i < N; ++i) {
    lp[size_t(i)] = u(rng);
    double dl = delta(rng);
    while (std::fabs(std::exp(-dl) - 1.2) < 0.02 || std::fabs(std::exp(-dl) - 0.8) < 0.02)
      dl = delta(rng);
    old[size_t(i)] = float(lp[size_t(i)] + dl);
    ref[size_t(i)] = float(lp[size_t(i)] + delta(rng));
  }
  const std::vector<GrpoSeq> seqs = {{1, 5, 1.3, 1.0 / (2 * 5), old.data() + 1, ref.data() + 1},
                           {7, 4, -0.7, 1.0 / (2 * 4), old.data() + 7, ref.data() + 7}};
  auto loss = [&](const std::vector<double>& x) {
    std::vector<float> xf(x.begin(), x.end()), d(static_cast<size_t>(N));
    GrpoStats st;
    return grpo_loss(o, seqs, xf, d, st);
  };
  std::vector<float> xf(lp.begin(), lp.end()), d(size_t(N), 0.0f);
  GrpoStats st;
  grpo_loss(o, seqs, xf, d, st);
  CHECK(st.clipped > 0);
  CHECK(st.kl > 0);
  for (int64_t i = 0; i < N; ++i) {
    std::vector<double> p = lp, m = lp;
    p[size_t(i)] += 1e-3;
    m[size_t(i)] -= 1e-3;
    const double num = (loss(p) - loss(m)) / 2e-3;
    INFO("token " << i);
    CHECK(double(d[size_t(i)]) == doctest::Approx(num).epsilon(2e-3).scale(1e-4));
  }
  CHECK(d[0] == 0.0f);     // not part of any completion: untouched (0)
  CHECK(d[6] == 0.0f);
}
