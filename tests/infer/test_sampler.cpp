// Sampler: greedy = argmax (ties to the lower id), top-k 1 = greedy, padding rows never
// chosen, empirical frequencies match softmax(logits / T) over 20000 draws, top-k / top-p
// truncation, determinism in (seed, seq, step), input validation.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/infer/sampler.hpp"

using namespace ds::infer;

namespace {

std::vector<double> softmax(const std::vector<float>& l, double t) {
  double mx = -1e300, sum = 0;
  for (float x : l) mx = std::max(mx, double(x));
  std::vector<double> p(l.size());
  for (size_t i = 0; i < l.size(); ++i) sum += (p[i] = std::exp((l[i] - mx) / t));
  for (double& x : p) x /= sum;
  return p;
}

// Frequencies of `draws` samples (steps 0..draws-1 of sequence `seq`).
std::vector<double> frequencies(const Sampler& s, const std::vector<float>& l, int draws,
                                uint64_t seq = 0) {
  std::vector<double> f(l.size(), 0.0);
  for (int i = 0; i < draws; ++i) f[s.sample(l, seq, uint64_t(i))] += 1.0 / draws;
  return f;
}

// Every bin within 5 binomial standard deviations of its probability.
void check_frequencies(const std::vector<double>& f, const std::vector<double>& p, int n) {
  for (size_t i = 0; i < p.size(); ++i) {
    const double tol = 5 * std::sqrt(p[i] * (1 - p[i]) / n) + 1e-12;
    CHECK_MESSAGE(std::fabs(f[i] - p[i]) <= tol,
                  "id " << i << " freq " << f[i] << " want " << p[i] << " tol " << tol);
  }
}

}  // namespace

TEST_CASE("greedy is argmax with ties to the lower id") {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  Sampler greedy({}, 0);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> l(1000);
    for (float& x : l) x = nd(rng);
    size_t want = 0;
    for (size_t i = 1; i < l.size(); ++i)
      if (l[i] > l[want]) want = i;
    CHECK(greedy.sample(l, 0, uint64_t(trial)) == want);
  }
  std::vector<float> tie = {0.f, 3.f, 1.f, 3.f};
  CHECK(greedy.sample(tie, 0, 0) == 1);
  auto d = greedy.distribution(tie);
  CHECK(d == std::vector<double>{0, 1, 0, 0});
}

TEST_CASE("top-k 1 equals greedy at any temperature") {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;
  Sampler k1({.temperature = 1.5f, .top_k = 1, .top_p = 1, .seed = 7}, 0);
  Sampler greedy({}, 0);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> l(257);
    for (float& x : l) x = nd(rng);
    CHECK(k1.sample(l, 3, uint64_t(trial)) == greedy.sample(l, 0, 0));
  }
}

TEST_CASE("padding rows are never sampled") {
  std::vector<float> l = {0.f, 0.5f, 0.2f, 50.f, 60.f};   // rows 3, 4 are padding
  Sampler greedy({}, 3);
  CHECK(greedy.sample(l, 0, 0) == 1);
  Sampler hot({.temperature = 5.f, .top_k = 0, .top_p = 1, .seed = 1}, 3);
  for (int i = 0; i < 2000; ++i) CHECK(hot.sample(l, 0, uint64_t(i)) < 3);
  CHECK(hot.distribution(l).size() == 3);
  CHECK_THROWS_AS(Sampler({}, 9).sample(l, 0, 0), ds::InternalError);
}

TEST_CASE("empirical frequencies match softmax(logits / T)") {
  const std::vector<float> l = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, -3.0f};
  const int n = 20000;
  for (float t : {0.7f, 1.0f, 2.0f}) {
    CAPTURE(t);
    Sampler s({.temperature = t, .top_k = 0, .top_p = 1, .seed = 42}, 0);
    const auto p = softmax(l, t);
    const auto d = s.distribution(l);
    for (size_t i = 0; i < p.size(); ++i) CHECK(d[i] == doctest::Approx(p[i]).epsilon(1e-12));
    check_frequencies(frequencies(s, l, n), p, n);
  }
}

TEST_CASE("top-k keeps the k most likely, renormalised") {
  const std::vector<float> l = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, -3.0f};
  Sampler s({.temperature = 1.f, .top_k = 2, .top_p = 1, .seed = 3}, 0);
  const auto full = softmax(l, 1.0);
  std::vector<double> p(l.size(), 0.0);
  p[0] = full[0] / (full[0] + full[3]);
  p[3] = full[3] / (full[0] + full[3]);
  const int n = 20000;
  const auto f = frequencies(s, l, n);
  CHECK(f[1] + f[2] + f[4] + f[5] == 0);
  check_frequencies(f, p, n);
}

TEST_CASE("top-p keeps the smallest set reaching p and excludes the tail") {
  // probabilities 0.5, 0.3, 0.15, 0.05
  const std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                std::log(0.05f)};
  Sampler s({.temperature = 1.f, .top_k = 0, .top_p = 0.75f, .seed = 5}, 0);
  const auto d = s.distribution(l);
  CHECK(d[0] == doctest::Approx(0.625));
  CHECK(d[1] == doctest::Approx(0.375));
  CHECK(d[2] == 0);
  CHECK(d[3] == 0);
  const auto f = frequencies(s, l, 20000);
  CHECK(f[2] + f[3] == 0);
  check_frequencies(f, {0.625, 0.375, 0, 0}, 20000);
  // p = 0.9 needs the third id too, never the fourth.
  Sampler s9({.temperature = 1.f, .top_k = 0, .top_p = 0.9f, .seed = 5}, 0);
  const auto d9 = s9.distribution(l);
  CHECK(d9[2] > 0);
  CHECK(d9[3] == 0);
  // Equal logits: ties are broken by id.
  Sampler half({.temperature = 1.f, .top_k = 0, .top_p = 0.5f, .seed = 5}, 0);
  CHECK(half.distribution(std::vector<float>(4, 0.f)) == std::vector<double>{0.5, 0.5, 0, 0});
}

TEST_CASE("draws are a pure function of (seed, seq, step)") {
  std::vector<float> l(100);
  for (size_t i = 0; i < l.size(); ++i) l[i] = float(std::sin(double(i)));
  SamplingOptions o{.temperature = 1.f, .top_k = 50, .top_p = 0.95f, .seed = 11};
  Sampler a(o, 0), b(o, 0);
  // b draws in a different order and interleaves other sequences.
  std::vector<uint32_t> ta, tb(64);
  for (uint64_t step = 0; step < 64; ++step) ta.push_back(a.sample(l, 2, step));
  for (uint64_t step = 64; step-- > 0;) {
    b.sample(l, 9, step);
    tb[step] = b.sample(l, 2, step);
  }
  CHECK(ta == tb);
  o.seed = 12;
  Sampler c(o, 0);
  int differ = 0;
  for (uint64_t step = 0; step < 64; ++step) differ += c.sample(l, 2, step) != ta[step];
  CHECK(differ > 0);
  CHECK(sample_stream(1, 2) != sample_stream(2, 1));
}

TEST_CASE("invalid options and logits") {
  using ds::UsageError;
  CHECK_THROWS_AS(validate({.temperature = -1.f}), UsageError);
  CHECK_THROWS_AS(validate({.temperature = NAN}), UsageError);
  CHECK_THROWS_AS(validate({.temperature = 1.f, .top_k = -1}), UsageError);
  CHECK_THROWS_AS(validate({.temperature = 1.f, .top_k = 0, .top_p = 0.f}), UsageError);
  CHECK_THROWS_AS(validate({.temperature = 1.f, .top_k = 0, .top_p = 1.5f}), UsageError);
  Sampler s({.temperature = 1.f}, 0);
  const float inf = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(s.sample(std::vector<float>{0.f, NAN}, 0, 0), ds::NumericsError);
  CHECK_THROWS_AS(Sampler({}, 0).sample(std::vector<float>{NAN, 0.f}, 0, 0),
                  ds::NumericsError);
  CHECK_THROWS_AS(s.sample(std::vector<float>{-inf, -inf}, 0, 0), ds::NumericsError);
  CHECK(s.sample(std::vector<float>{-inf, 0.f, -inf}, 0, 0) == 1);
}
