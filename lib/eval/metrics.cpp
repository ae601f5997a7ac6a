// Evaluation metrics and the sliding-window plan (see include/ds/eval/metrics.hpp).
// reference: spec §6.1.
#include "ds/eval/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "ds/core/error.hpp"

namespace ds::eval {

Estimate mean_stderr(std::span<const double> xs) {
  Estimate e;
  e.n = xs.size();
  if (xs.empty()) return e;
  double sum = 0;
  for (double x : xs) sum += x;
  e.value = sum / double(xs.size());
  if (xs.size() < 2) return e;
  double ss = 0;
  for (double x : xs) ss += (x - e.value) * (x - e.value);
  const double var = ss / double(xs.size() - 1);
  e.stderr_ = std::sqrt(var / double(xs.size()));
  return e;
}

Estimate accuracy(size_t correct, size_t n) {
  DS_CHECK(correct <= n, "accuracy: {} correct of {}", correct, n);
  Estimate e;
  e.n = n;
  if (n == 0) return e;
  e.value = double(correct) / double(n);
  e.stderr_ = std::sqrt(e.value * (1 - e.value) / double(n));
  return e;
}

double pass_at_k(size_t n, size_t c, size_t k) {
  DS_CHECK(k >= 1 && k <= n && c <= n, "pass_at_k: n {}, c {}, k {}", n, c, k);
  if (n - c < k) return 1.0;
  double miss = 1.0;   // C(n − c, k) / C(n, k)
  for (size_t i = n - c + 1; i <= n; ++i) miss *= 1.0 - double(k) / double(i);
  return 1.0 - miss;
}

double token_nll(std::span<const float> logits, uint32_t target) {
  DS_CHECK(target < logits.size(), "token_nll: target {} outside {} logits", target,
           logits.size());
  double mx = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) DS_THROW(NumericsError, "token_nll: logit {} is NaN", i);
    mx = std::max(mx, double(logits[i]));
  }
  if (!std::isfinite(logits[target]) || !std::isfinite(mx))
    DS_THROW(NumericsError, "token_nll: target logit {} / max logit {} not finite",
             logits[target], mx);
  double sum = 0;
  for (float l : logits) sum += std::exp(double(l) - mx);
  return std::log(sum) - (double(logits[target]) - mx);
}

double LossTotals::mean_nll() const {
  return tokens ? sum_nll / double(tokens) : std::numeric_limits<double>::quiet_NaN();
}

double LossTotals::perplexity() const { return std::exp(mean_nll()); }

double LossTotals::bits_per_byte() const {
  return bytes ? sum_nll / (std::numbers::ln2 * double(bytes))
               : std::numeric_limits<double>::quiet_NaN();
}

LossStderrs loss_stderrs(std::span<const LossTotals> docs) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  LossTotals all;
  for (const LossTotals& d : docs) all.add(d);
  const double D = double(docs.size());
  // se of the ratio sum(s) / sum(x) over the documents (x = tokens or bytes)
  auto ratio_se = [&](auto x_of, double sum_x) {
    if (docs.size() < 2 || !(sum_x > 0)) return nan;
    const double r = all.sum_nll / sum_x;
    double ss = 0;
    for (const LossTotals& d : docs) {
      const double e = d.sum_nll - r * double(x_of(d));
      ss += e * e;
    }
    return std::sqrt(D / (D - 1) * ss) / sum_x;
  };
  LossStderrs s;
  s.nll = ratio_se([](const LossTotals& d) { return d.tokens; }, double(all.tokens));
  s.perplexity = all.perplexity() * s.nll;
  s.bpb = ratio_se([](const LossTotals& d) { return d.bytes; }, double(all.bytes)) /
          std::numbers::ln2;
  return s;
}

std::vector<Window> sliding_windows(size_t n, size_t w, size_t s) {
  if (w == 0 || s == 0 || s > w)
    DS_THROW(UsageError, "sliding window: need 1 <= stride ({}) <= window ({})", s, w);
  std::vector<Window> out;
  if (n < 2) return out;   // nothing to predict
  size_t next = 1;         // first target not yet scored
  for (size_t b = 0;; b += s) {
    const size_t end = std::min(b + w, n - 1);   // inputs [.., end) predict up to t[end]
    Window win;
    win.end = end;
    win.begin = end > w ? end - w : 0;
    win.score_begin = next;
    win.score_end = end + 1;
    out.push_back(win);
    next = end + 1;
    if (end == n - 1) break;
  }
  return out;
}

}  // namespace ds::eval
