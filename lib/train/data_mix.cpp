// The weighted mixture of pre-training datasets (see include/ds/train/data_mix.hpp).
#include "ds/train/data_mix.hpp"

#include <cctype>
#include <cmath>
#include <cstring>
#include <sstream>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"

namespace ds::train {

std::vector<double> parse_data_weights(const std::string& text, size_t n) {
  if (text.empty()) return std::vector<double>(n, 1.0);
  std::vector<double> w;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    double v = NAN;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || std::isspace(uint8_t(item[0])) ||
        !std::isfinite(v) || v <= 0)
      DS_THROW(UsageError, "--data-weights '{}': '{}' is not a positive number", text, item);
    w.push_back(v);
  }
  double sum = 0;
  for (double v : w) sum += v;
  if (!std::isfinite(sum))
    DS_THROW(UsageError, "--data-weights '{}': the weights' sum overflows", text);
  if (!text.empty() && text.back() == ',')
    DS_THROW(UsageError, "--data-weights '{}': empty weight after the last comma", text);
  if (w.size() != n)
    DS_THROW(UsageError, "--data-weights '{}': {} weight(s) for {} --data source(s)", text,
             w.size(), n);
  return w;
}

std::vector<size_t> deal_rows(const std::vector<double>& w, std::vector<int64_t>& n,
                              int64_t rows) {
  DS_CHECK(w.size() == n.size() && !w.empty(), "deal_rows: {} weights, {} counts", w.size(),
           n.size());
  int64_t R = 0;
  for (int64_t c : n) R += c;
  std::vector<size_t> who(static_cast<size_t>(rows));
  for (size_t& s : who) {
    s = 0;
    double best = -INFINITY;
    for (size_t i = 0; i < w.size(); ++i) {
      const double deficit = w[i] * double(R + 1) - double(n[i]);
      if (deficit > best) {
        s = i;
        best = deficit;
      }
    }
    n[s]++;
    R++;
  }
  return who;
}

MixedLoader::MixedLoader(const std::vector<const data::Dataset*>& datasets,
                         std::vector<double> weights, int64_t seq_len, uint64_t seed,
                         const std::vector<int64_t>& val_sequences, Packing packing)
    : w_(std::move(weights)) {
  DS_CHECK(!datasets.empty() && datasets.size() == w_.size() &&
               datasets.size() == val_sequences.size(),
           "MixedLoader: {} datasets, {} weights, {} held-out counts", datasets.size(), w_.size(),
           val_sequences.size());
  double sum = 0;
  for (double v : w_) {
    DS_CHECK_AS(UsageError, std::isfinite(v) && v > 0, "data weight {} is not positive", v);
    sum += v;
  }
  for (double& v : w_) v /= sum;
  for (size_t i = 0; i < datasets.size(); ++i) {
    // source 0 is the single-dataset loader itself; the others shuffle independently
    const uint64_t s = i == 0 ? seed : xxh64(fmt::format("data-source|{}|{}", seed, i));
    sources_.push_back(std::make_unique<PackedLoader>(*datasets[i], seq_len, s,
                                                      val_sequences[i], packing));
  }
  last_rows_.assign(sources_.size(), 0);
}

int64_t MixedLoader::rows_given(size_t i) const {
  const LoaderState st = sources_[i]->state();
  return st.epoch * sources_[i]->n_train() + st.position;
}

model::Batch MixedLoader::next(int64_t batch) {
  const size_t S = sources_.size();
  last_rows_.assign(S, 0);
  if (S == 1) {
    last_rows_[0] = batch;
    return sources_[0]->next(batch);
  }
  std::vector<int64_t> n(S);
  for (size_t i = 0; i < S; ++i) n[i] = rows_given(i);
  const std::vector<size_t> who = deal_rows(w_, n, batch);
  for (const size_t s : who) last_rows_[s]++;
  std::vector<model::Batch> parts(S);
  for (size_t i = 0; i < S; ++i)
    if (last_rows_[i] > 0) parts[i] = sources_[i]->next(last_rows_[i]);
  // the rows in dealing order
  const size_t first = who.empty() ? 0 : who[0];
  const int64_t W = parts[first].tokens.size(1);   // T + 1
  const bool masked = packing() == Packing::best_fit;
  model::Batch b;
  b.tokens = Tensor::empty({batch, W}, DType::i32);   // (B, T+1)
  if (masked) b.loss_mask = Tensor::empty({batch, W - 1}, DType::f32);   // (B, T)
  std::vector<int64_t> taken(S, 0);
  for (int64_t r = 0; r < batch; ++r) {
    const size_t s = who[size_t(r)];
    const int64_t k = taken[s]++;
    std::memcpy(b.tokens.i32() + r * W, parts[s].tokens.i32() + k * W, size_t(W) * 4);
    if (masked) {
      std::memcpy(b.loss_mask.f32() + r * (W - 1), parts[s].loss_mask.f32() + k * (W - 1),
                  size_t(W - 1) * 4);
      b.lengths.push_back(parts[s].lengths[size_t(k)]);
    }
  }
  return b;
}

std::vector<LoaderState> MixedLoader::state() const {
  std::vector<LoaderState> s;
  for (const auto& l : sources_) s.push_back(l->state());
  return s;
}

void MixedLoader::set_state(const std::vector<LoaderState>& s) {
  DS_CHECK_AS(FormatError, s.size() == sources_.size(),
              "training state: {} data source position(s) for {} --data source(s)", s.size(),
              sources_.size());
  for (size_t i = 0; i < s.size(); ++i) sources_[i]->set_state(s[i]);
}

}  // namespace ds::train
