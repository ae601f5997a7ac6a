// Packed, shuffled, resumable sequence loader (see include/ds/train/data_loader.hpp).
#include "ds/train/data_loader.hpp"

#include <numeric>

#include "ds/core/error.hpp"
#include "ds/core/rng.hpp"

namespace ds::train {

PackedLoader::PackedLoader(const data::Dataset& dataset, int64_t seq_len, uint64_t seed,
                           int64_t val_sequences)
    : ds_(dataset), T_(seq_len), seed_(seed) {
  DS_CHECK_AS(UsageError, seq_len >= 2, "--seq-len must be at least 2 (got {})", seq_len);
  int64_t n_tokens = int64_t(ds_.n_tokens());
  int64_t n_seq = n_tokens > T_ ? (n_tokens - 1) / T_ : 0;
  if (val_sequences > 0 && val_sequences >= n_seq)
    DS_THROW(UsageError,
             "the dataset has {} sequences of {} tokens; not enough for {} validation sequences",
             n_seq, T_, val_sequences);
  n_val_ = std::max<int64_t>(0, val_sequences);
  n_train_ = n_seq - n_val_;
  DS_CHECK_AS(UsageError, n_train_ > 0,
              "the dataset ({} tokens) is too small for one sequence of {} tokens", n_tokens, T_);
  buf_.resize(size_t(T_ + 1));
}

void PackedLoader::build_order() {
  order_.resize(size_t(n_train_));
  std::iota(order_.begin(), order_.end(), int64_t(0));
  Rng rng(seed_, rng_stream("data-order", uint64_t(state_.epoch)));
  for (int64_t i = n_train_ - 1; i > 0; --i) {
    int64_t j = int64_t(rng.below(uint64_t(i + 1)));
    std::swap(order_[size_t(i)], order_[size_t(j)]);
  }
  order_epoch_ = state_.epoch;
}

void PackedLoader::read_sequence(int64_t seq, int32_t* out) const {
  ds_.read(uint64_t(seq * T_), std::span<uint32_t>(buf_.data(), buf_.size()));
  for (int64_t i = 0; i <= T_; ++i) out[i] = int32_t(buf_[size_t(i)]);
}

void PackedLoader::next(int64_t batch, Tensor& tokens) {
  DS_CHECK_SHAPE(tokens, {batch, T_ + 1});
  int32_t* out = tokens.i32();
  for (int64_t b = 0; b < batch; ++b) {
    if (state_.position >= n_train_) {
      state_.epoch++;
      state_.position = 0;
    }
    if (order_epoch_ != state_.epoch) build_order();
    read_sequence(order_[size_t(state_.position)], out + b * (T_ + 1));
    state_.position++;
  }
}

void PackedLoader::val_batch(int64_t first, int64_t batch, Tensor& tokens) const {
  DS_CHECK_SHAPE(tokens, {batch, T_ + 1});
  DS_CHECK(first >= 0 && first + batch <= n_val_, "validation batch out of range");
  int32_t* out = tokens.i32();
  for (int64_t b = 0; b < batch; ++b) read_sequence(n_train_ + first + b, out + b * (T_ + 1));
}

void PackedLoader::set_state(const LoaderState& s) {
  DS_CHECK_AS(FormatError, s.epoch >= 0 && s.position >= 0 && s.position <= n_train_,
              "training state: data position {} / epoch {} does not fit this dataset ({} "
              "training sequences)", s.position, s.epoch, n_train_);
  state_ = s;
}

}  // namespace ds::train
