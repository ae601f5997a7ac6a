// Metrics: mean/stderr and binomial accuracy by hand, pass@k against subset enumeration, token
// NLL against a direct softmax, perplexity and bits per byte (spec §6.1 formula), and the
// sliding-window plan: every target scored exactly once with at least W − S tokens of context.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/eval/metrics.hpp"

using namespace ds::eval;

TEST_CASE("mean with standard error, accuracy") {
  const std::vector<double> xs = {1, 2, 3, 4};
  const Estimate e = mean_stderr(xs);
  CHECK(e.value == doctest::Approx(2.5));
  CHECK(e.stderr_ == doctest::Approx(std::sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3 / 4)));
  CHECK(e.n == 4);
  CHECK(mean_stderr(std::vector<double>{7}).stderr_ == 0);
  CHECK(mean_stderr(std::vector<double>{}).n == 0);
  const Estimate a = accuracy(30, 40);
  CHECK(a.value == doctest::Approx(0.75));
  CHECK(a.stderr_ == doctest::Approx(std::sqrt(0.75 * 0.25 / 40)));
  CHECK(accuracy(0, 0).value == 0);
  CHECK_THROWS_AS(accuracy(3, 2), ds::InternalError);
}

// pass@k by enumeration: the share of the C(n, k) k-subsets of n samples (c of them
// correct) that hold a correct one.
double pass_at_k_by_subsets(size_t n, size_t c, size_t k) {
  size_t subsets = 0, hit = 0;
  for (uint32_t m = 0; m < (1u << n); ++m) {
    if (size_t(__builtin_popcount(m)) != k) continue;
    ++subsets;
    hit += (m & ((1u << c) - 1)) != 0;   // samples 0..c-1 are the correct ones
  }
  return double(hit) / double(subsets);
}

TEST_CASE("pass@k: the unbiased estimator equals the share of k-subsets with a correct sample") {
  for (size_t n = 1; n <= 12; ++n)
    for (size_t c = 0; c <= n; ++c)
      for (size_t k = 1; k <= n; ++k) {
        CAPTURE(n);
        CAPTURE(c);
        CAPTURE(k);
        CHECK(pass_at_k(n, c, k) == doctest::Approx(pass_at_k_by_subsets(n, c, k)).epsilon(1e-12));
      }
  CHECK(pass_at_k(16, 4, 1) == doctest::Approx(0.25));   // pass@1 = c / n
  CHECK(pass_at_k(200, 0, 100) == 0);
  CHECK(pass_at_k(200, 101, 100) == 1);   // fewer than k wrong: always a hit
  // large n without overflow: 1 − C(900, 100) / C(1000, 100)
  double lg = std::lgamma(901.0) - std::lgamma(801.0) - std::lgamma(1001.0) + std::lgamma(901.0);
  CHECK(pass_at_k(1000, 100, 100) == doctest::Approx(1 - std::exp(lg)).epsilon(1e-9));
  CHECK_THROWS_AS(pass_at_k(4, 1, 0), ds::InternalError);
  CHECK_THROWS_AS(pass_at_k(4, 1, 5), ds::InternalError);
  CHECK_THROWS_AS(pass_at_k(4, 5, 1), ds::InternalError);
}

TEST_CASE("token NLL, perplexity and bits per byte") {
  const std::vector<float> l = {2.0f, -1.0f, 0.5f, 1000.0f - 998.0f};
  double z = 0;
  for (float x : l) z += std::exp(double(x));
  CHECK(token_nll(l, 2) == doctest::Approx(-(0.5 - std::log(z))).epsilon(1e-12));
  const std::vector<float> big = {1000.f, 999.f};   // no overflow with the max subtracted
  CHECK(token_nll(big, 1) == doctest::Approx(1 + std::log1p(std::exp(-1.0))));
  CHECK_THROWS_AS(token_nll(std::vector<float>{0.f, NAN}, 0), ds::NumericsError);
  CHECK_THROWS_AS(token_nll(std::vector<float>{-INFINITY, 0.f}, 0), ds::NumericsError);

  LossTotals t;
  t.add({.sum_nll = 6.0, .tokens = 3, .bytes = 10});
  t.add({.sum_nll = 2.0, .tokens = 1, .bytes = 2});
  CHECK(t.mean_nll() == doctest::Approx(2.0));
  CHECK(t.perplexity() == doctest::Approx(std::exp(2.0)));
  CHECK(t.bits_per_byte() == doctest::Approx(8.0 / (std::numbers::ln2 * 12)));
  CHECK(std::isnan(LossTotals{}.bits_per_byte()));
}

TEST_CASE("standard errors of NLL, perplexity and bits per byte over documents") {
  // three documents (sum_nll, tokens, bytes); values from the cluster (ratio) formula in
  // Python: R = 11/6, D/(D-1) sum (s - R n)^2 = 633/36
  const std::vector<LossTotals> docs = {{.sum_nll = 2, .tokens = 1, .bytes = 4},
                                        {.sum_nll = 6, .tokens = 2, .bytes = 8},
                                        {.sum_nll = 3, .tokens = 3, .bytes = 6}};
  const LossStderrs s = loss_stderrs(docs);
  CHECK(s.nll == doctest::Approx(0.6988747569671737).epsilon(1e-12));
  CHECK(s.perplexity == doctest::Approx(4.371252607686852).epsilon(1e-12));
  CHECK(s.bpb == doctest::Approx(0.13447047776910911).epsilon(1e-12));
  // documents with the same per-token loss: no spread
  const std::vector<LossTotals> even = {{.sum_nll = 2, .tokens = 1, .bytes = 3},
                                        {.sum_nll = 6, .tokens = 3, .bytes = 9}};
  CHECK(loss_stderrs(even).nll == doctest::Approx(0.0));
  CHECK(loss_stderrs(even).bpb == doctest::Approx(0.0));
  // one document: nothing to estimate a spread from
  CHECK(std::isnan(loss_stderrs(std::span(docs).first(1)).nll));
  CHECK(std::isnan(loss_stderrs(std::span(docs).first(1)).bpb));
}

TEST_CASE("sliding windows score every target exactly once") {
  for (size_t n : {0u, 1u, 2u, 3u, 10u, 17u, 64u, 65u, 100u, 1000u}) {
    for (size_t w : {1u, 2u, 8u, 16u, 64u}) {
      for (size_t s : {1u, 3u, 8u, 16u, 64u}) {
        if (s > w) continue;
        CAPTURE(n);
        CAPTURE(w);
        CAPTURE(s);
        const auto wins = sliding_windows(n, w, s);
        std::vector<int> scored(n, 0);
        for (const Window& win : wins) {
          REQUIRE(win.end - win.begin <= w);
          REQUIRE(win.end <= n - 1);
          REQUIRE(win.begin < win.score_begin);
          REQUIRE(win.score_begin < win.score_end);
          REQUIRE(win.score_end <= win.end + 1);
          CHECK(win.first_row() == win.score_begin - win.begin - 1);
          for (size_t i = win.score_begin; i < win.score_end; ++i) {
            ++scored[i];
            // context of target i = tokens begin..i-1
            if (i >= w) {
              CHECK(i - win.begin >= w - s);
            } else {
              CHECK(win.begin == 0);
            }
          }
        }
        if (n >= 1) CHECK(scored[0] == 0);
        for (size_t i = 1; i < n; ++i) REQUIRE_MESSAGE(scored[i] == 1, "target " << i);
      }
    }
  }
  // Non-overlapping windows when S = W; the last window is shifted left to full length.
  const auto wins = sliding_windows(10, 4, 4);
  REQUIRE(wins.size() == 3);
  CHECK(wins[0].begin == 0);
  CHECK(wins[0].end == 4);
  CHECK(wins[1].score_begin == 5);
  CHECK(wins[2].end == 9);
  CHECK(wins[2].begin == 5);
  CHECK_THROWS_AS(sliding_windows(10, 4, 5), ds::UsageError);
  CHECK_THROWS_AS(sliding_windows(10, 4, 0), ds::UsageError);
}
