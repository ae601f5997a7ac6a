// Next-token sampling (see include/ds/infer/sampler.hpp). The categorical draw is an
// inverse-CDF walk over the candidate weights with one uniform from the (seq, step) stream;
// generate.py's exponential race draws from the same distribution with different noise.
// reference: spec §2.4; top-k (Fan et al. 2018) and nucleus sampling (Holtzman et al. 2019).
#include "ds/infer/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/core/rng.hpp"

namespace ds::infer {

namespace {

// Candidate ids with unnormalised weights exp((l - max) / T), in draw order.
struct Candidates {
  std::vector<uint32_t> ids;
  std::vector<double> weights;
  double total = 0;
};

void check_finite_rows(std::span<const float> logits, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (std::isnan(logits[i])) DS_THROW(NumericsError, "sampler: logit {} is NaN", i);
}

Candidates candidates(std::span<const float> logits, size_t n, const SamplingOptions& o) {
  Candidates c;
  const bool truncate = (o.top_k > 0 && size_t(o.top_k) < n) || o.top_p < 1;
  c.ids.resize(n);
  std::iota(c.ids.begin(), c.ids.end(), 0u);
  if (truncate) {
    auto better = [&](uint32_t a, uint32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    size_t k = o.top_k > 0 ? std::min(n, size_t(o.top_k)) : n;
    if (k < n) {
      std::partial_sort(c.ids.begin(), c.ids.begin() + ptrdiff_t(k), c.ids.end(), better);
      c.ids.resize(k);
    } else {
      std::sort(c.ids.begin(), c.ids.end(), better);
    }
  }
  float mx = -std::numeric_limits<float>::infinity();
  for (uint32_t id : c.ids) mx = std::max(mx, logits[id]);
  if (!std::isfinite(mx))
    DS_THROW(NumericsError, "sampler: no finite logit among {} candidates (max {})",
             c.ids.size(), mx);
  const double inv_t = 1.0 / double(o.temperature);
  c.weights.resize(c.ids.size());
  for (size_t i = 0; i < c.ids.size(); ++i) {
    c.weights[i] = std::exp((double(logits[c.ids[i]]) - double(mx)) * inv_t);
    c.total += c.weights[i];
  }
  if (o.top_p < 1) {   // ids are sorted by probability: keep the shortest prefix >= p
    const double need = double(o.top_p) * c.total;
    double cum = 0;
    size_t keep = 0;
    while (keep < c.ids.size()) {
      cum += c.weights[keep++];
      if (cum >= need) break;
    }
    c.ids.resize(keep);
    c.weights.resize(keep);
    c.total = cum;
  }
  return c;
}

}  // namespace

void validate(const SamplingOptions& o) {
  if (!std::isfinite(o.temperature) || o.temperature < 0)
    DS_THROW(UsageError, "--temperature {} must be a finite value >= 0", o.temperature);
  if (o.top_k < 0) DS_THROW(UsageError, "--top-k {} must be >= 0 (0 = off)", o.top_k);
  if (!(o.top_p > 0 && o.top_p <= 1))
    DS_THROW(UsageError, "--top-p {} must be in (0, 1] (1 = off)", o.top_p);
}

uint64_t sample_stream(uint64_t seq, uint64_t step) {
  const uint64_t idx[2] = {seq, step};
  return xxh64(idx, sizeof(idx), rng_stream("sample"));
}

size_t argmax(std::span<const float> logits, size_t n) {
  DS_CHECK(n > 0 && n <= logits.size(), "argmax over {} of {} logits", n, logits.size());
  size_t best = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(logits[i])) DS_THROW(NumericsError, "sampler: logit {} is NaN", i);
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

Sampler::Sampler(SamplingOptions opts, size_t valid_vocab, std::vector<uint32_t> never)
    : opts_(opts), valid_vocab_(valid_vocab), never_(std::move(never)) {
  validate(opts_);
}

std::span<const float> Sampler::masked(std::span<const float> logits,
                                       std::vector<float>& scratch) const {
  if (never_.empty()) return logits;
  const size_t n = valid_size(logits);
  scratch.assign(logits.begin(), logits.begin() + ptrdiff_t(n));
  for (uint32_t id : never_)
    if (id < n) scratch[id] = -std::numeric_limits<float>::infinity();
  return scratch;
}

size_t Sampler::valid_size(std::span<const float> logits) const {
  DS_CHECK(!logits.empty(), "sampler: empty logits row");
  if (valid_vocab_ == 0) return logits.size();
  DS_CHECK(logits.size() >= valid_vocab_, "sampler: {} logits for a vocabulary of {}",
           logits.size(), valid_vocab_);
  return valid_vocab_;
}

tok::TokenId Sampler::sample(std::span<const float> row, uint64_t seq, uint64_t step) const {
  std::vector<float> scratch;
  const std::span<const float> logits = masked(row, scratch);
  const size_t n = valid_size(logits);
  if (greedy()) return tok::TokenId(argmax(logits, n));
  check_finite_rows(logits, n);
  const Candidates c = candidates(logits, n, opts_);
  Rng rng(opts_.seed, sample_stream(seq, step));
  const double u = rng.uniform() * c.total;
  double cum = 0;
  size_t last_positive = 0;
  for (size_t i = 0; i < c.ids.size(); ++i) {
    if (c.weights[i] <= 0) continue;
    last_positive = i;
    cum += c.weights[i];
    if (u < cum) return c.ids[i];
  }
  return c.ids[last_positive];   // u within rounding of the total
}

std::vector<double> Sampler::distribution(std::span<const float> row) const {
  std::vector<float> scratch;
  const std::span<const float> logits = masked(row, scratch);
  const size_t n = valid_size(logits);
  std::vector<double> p(n, 0.0);
  if (greedy()) {
    p[argmax(logits, n)] = 1;
    return p;
  }
  check_finite_rows(logits, n);
  const Candidates c = candidates(logits, n, opts_);
  for (size_t i = 0; i < c.ids.size(); ++i) p[c.ids[i]] = c.weights[i] / c.total;
  return p;
}

}  // namespace ds::infer
