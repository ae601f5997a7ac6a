// Packed, shuffled, resumable sequence loader (see include/ds/train/data_loader.hpp).
#include "ds/train/data_loader.hpp"

#include <algorithm>
#include <numeric>

#include "ds/core/error.hpp"
#include "ds/core/rng.hpp"
#include "ds/train/best_fit.hpp"

namespace ds::train {

Packing parse_packing(const std::string& name) {
  if (name == "stride") return Packing::stride;
  if (name == "best-fit") return Packing::best_fit;
  DS_THROW(UsageError, "--packing: '{}' is not one of stride, best-fit", name);
}

const char* packing_name(Packing p) { return p == Packing::best_fit ? "best-fit" : "stride"; }

namespace {

// Calls f(start, end, cut) for every non-empty document of the dataset that begins before
// `end` (global token offsets; the last one clipped at `end`, and then cut is true).
template <class F>
void for_each_document(const data::Dataset& ds, uint64_t end, F&& f) {
  uint64_t base = 0;
  for (size_t i = 0; i < ds.n_shards() && base < end; ++i) {
    const data::ShardReader& sh = ds.shard(i);
    const std::vector<uint64_t>& off = sh.document_offsets();   // (n_documents + 1)
    for (size_t d = 0; d + 1 < off.size(); ++d) {
      const uint64_t s = base + off[d], e = std::min(base + off[d + 1], end);
      if (s >= end) break;
      if (e > s) f(s, e, base + off[d + 1] > end);
    }
    base += sh.info().n_tokens;
  }
}

}  // namespace

PackedLoader::PackedLoader(const data::Dataset& dataset, int64_t seq_len, uint64_t seed,
                           int64_t val_sequences, Packing packing)
    : ds_(dataset), T_(seq_len), seed_(seed), packing_(packing) {
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
  if (packing_ == Packing::best_fit) {
    // the documents before the first validation window (all of them without one)
    pack_best_fit(n_val_ > 0 ? uint64_t(n_train_ * T_) : uint64_t(n_tokens));
  } else {
    count_stride_splits(uint64_t(n_train_ * T_ + 1));
  }
}

void PackedLoader::count_stride_splits(uint64_t train_end) {
  const uint64_t T = uint64_t(T_);
  for_each_document(ds_, train_end, [&](uint64_t s, uint64_t e, bool) {
    stats_.documents++;
    const uint64_t k = s / T;   // the window that starts at or before s
    if (e > k * T + T + 1) stats_.split_documents++;
  });
  stats_.rows = n_train_;
  stats_.tokens = n_train_ * (T_ + 1);
}

void PackedLoader::pack_best_fit(uint64_t train_end) {
  const int64_t cap = T_ + 1;
  std::vector<Chunk> chunks;
  for_each_document(ds_, train_end, [&](uint64_t s, uint64_t e, bool cut) {
    stats_.documents++;
    const int64_t len = int64_t(e - s);
    if (len < 2) {   // no target inside it
      stats_.dropped++;
      return;
    }
    if (len > cap) stats_.split_documents++;
    // windows of T+1 at stride T: the last one has at least 2 tokens; `e` is the document's
    // end unless the held-out region cut it
    for (uint64_t p = s;; p += uint64_t(T_)) {
      const int64_t c = std::min<int64_t>(cap, int64_t(e - p));
      const bool last = p + uint64_t(c) >= e;
      chunks.push_back(Chunk{p, int32_t(c), p == s, last && !cut});
      if (last) break;
    }
  });
  DS_CHECK_AS(UsageError, !chunks.empty(),
              "--packing best-fit: no document of the training data has 2 tokens or more");
  std::vector<int64_t> sizes(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) sizes[i] = chunks[i].len;
  const BinPacking bins = best_fit_decreasing(sizes, cap);
  chunks_.reserve(chunks.size());
  for (const int64_t i : bins.items) chunks_.push_back(chunks[size_t(i)]);
  row_first_ = bins.first;
  n_train_ = bins.n_bins();
  int64_t real = 0;
  for (const Chunk& c : chunks_) real += c.len;
  stats_.rows = n_train_;
  stats_.tokens = real;
  stats_.padding = n_train_ * cap - real;
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

void PackedLoader::read_window(int64_t seq, int32_t* out) const {
  ds_.read(uint64_t(seq * T_), std::span<uint32_t>(buf_.data(), buf_.size()));
  for (int64_t i = 0; i <= T_; ++i) out[i] = int32_t(buf_[size_t(i)]);
}

int64_t PackedLoader::read_row(int64_t row, int32_t* out, float* mask) const {
  if (packing_ == Packing::stride) {
    read_window(row, out);
    return T_ + 1;
  }
  int64_t n = 0;
  const Chunk* prev = nullptr;
  for (int64_t c = row_first_[size_t(row)]; c < row_first_[size_t(row + 1)]; ++c) {
    const Chunk& ch = chunks_[size_t(c)];
    ds_.read(ch.start, std::span<uint32_t>(buf_.data() + n, size_t(ch.len)));
    // position n-1 predicts this chunk's first token: a document start after an ended one
    // (EOS -> document, as stride rows train it), or else nothing
    if (prev) mask[n - 1] = prev->ends && ch.starts ? 1.0f : 0.0f;
    for (int64_t j = n; j < n + ch.len - 1; ++j) mask[j] = 1.0f;
    n += ch.len;
    prev = &ch;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = int32_t(buf_[size_t(i)]);
  // padding: any valid id (here 0); it follows every real token, so causal attention keeps it
  // out of their context, and its targets and routes are masked
  std::fill(out + n, out + T_ + 1, 0);
  std::fill(mask + n - 1, mask + T_, 0.0f);
  return n;
}

int64_t PackedLoader::advance() {
  if (state_.position >= n_train_) {
    state_.epoch++;
    state_.position = 0;
  }
  if (order_epoch_ != state_.epoch) build_order();
  return order_[size_t(state_.position++)];
}

model::Batch PackedLoader::next(int64_t batch) {
  model::Batch b;
  b.tokens = Tensor::empty({batch, T_ + 1}, DType::i32);   // (B, T+1)
  int32_t* out = b.tokens.i32();
  if (packing_ == Packing::stride) {
    for (int64_t r = 0; r < batch; ++r) read_row(advance(), out + r * (T_ + 1), nullptr);
    return b;
  }
  b.loss_mask = Tensor::empty({batch, T_}, DType::f32);    // (B, T)
  float* mask = b.loss_mask.f32();
  for (int64_t r = 0; r < batch; ++r)
    b.lengths.push_back(int32_t(read_row(advance(), out + r * (T_ + 1), mask + r * T_)));
  return b;
}

void PackedLoader::val_batch(int64_t first, int64_t batch, Tensor& tokens) const {
  DS_CHECK_SHAPE(tokens, {batch, T_ + 1});
  DS_CHECK(first >= 0 && first + batch <= n_val_, "validation batch out of range");
  // the windows after the training region: n_seq - n_val stride windows precede them
  const int64_t n_seq = (int64_t(ds_.n_tokens()) - 1) / T_;
  int32_t* out = tokens.i32();
  for (int64_t b = 0; b < batch; ++b) read_window(n_seq - n_val_ + first + b, out + b * (T_ + 1));
}

void PackedLoader::set_state(const LoaderState& s) {
  DS_CHECK_AS(FormatError, s.epoch >= 0 && s.position >= 0 && s.position <= n_train_,
              "training state: data position {} / epoch {} does not fit this dataset ({} "
              "training sequences)", s.position, s.epoch, n_train_);
  state_ = s;
}

}  // namespace ds::train
