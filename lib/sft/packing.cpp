// SFT packing, batches with sample masking, the epoch row stream (see
// include/ds/sft/packing.hpp).
#include "ds/sft/packing.hpp"

#include <deque>
#include <numeric>

#include "ds/core/error.hpp"
#include "ds/core/rng.hpp"

namespace ds::sft {

std::vector<Row> pack_rows(std::span<const int64_t> lengths, std::span<const int64_t> order,
                           int64_t capacity, bool packing, int64_t open_rows) {
  DS_CHECK(capacity > 0 && open_rows > 0, "pack_rows: capacity {} open_rows {}", capacity,
           open_rows);
  std::vector<Row> out;
  std::deque<Row> open;
  for (int64_t s : order) {
    const int64_t len = lengths[size_t(s)];
    DS_CHECK_AS(UsageError, len > 0 && len <= capacity,
                "sample {} has {} tokens; a row holds {}", s, len, capacity);
    if (!packing) {
      out.push_back(Row{{s}, len});
      continue;
    }
    auto it = open.begin();
    while (it != open.end() && it->tokens + len > capacity) ++it;
    if (it == open.end()) {
      open.push_back(Row{});
      it = open.end() - 1;
    }
    it->samples.push_back(s);
    it->tokens += len;
    if (it->tokens == capacity) {   // full: emit now
      out.push_back(std::move(*it));
      open.erase(it);
    } else if (int64_t(open.size()) > open_rows) {
      out.push_back(std::move(open.front()));
      open.pop_front();
    }
  }
  for (Row& r : open) out.push_back(std::move(r));
  return out;
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t(0));
  Rng rng(seed, rng_stream("sft-order", uint64_t(epoch)));
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(order[size_t(i)], order[size_t(rng.below(uint64_t(i + 1)))]);
  return order;
}

model::Batch make_batch(const std::vector<Sample>& samples, std::span<const Row> rows,
                        int64_t seq_len, int32_t pad_id) {
  const int64_t B = int64_t(rows.size()), T = seq_len;
  model::Batch b;
  b.tokens = Tensor::empty({B, T + 1}, DType::i32);      // (B, T+1)
  b.segments = Tensor::empty({B, T}, DType::i32);        // (B, T)
  b.positions = Tensor::empty({B, T}, DType::i32);       // (B, T)
  b.loss_mask = Tensor::empty({B, T}, DType::f32);       // (B, T)
  std::vector<int32_t> seg(size_t(T + 1));               // per token of a row
  std::vector<uint8_t> tgt(size_t(T + 1));
  std::vector<int32_t> tpos(size_t(T + 1));
  for (int64_t r = 0; r < B; ++r) {
    const Row& row = rows[size_t(r)];
    DS_CHECK(row.tokens <= T + 1, "make_batch: a row of {} tokens for T+1 = {}", row.tokens, T + 1);
    int32_t* tok = b.tokens.i32() + r * (T + 1);
    int32_t* pos = b.positions.i32() + r * T;
    int64_t c = 0;
    int32_t k = 0;
    for (; k < int32_t(row.samples.size()); ++k) {
      const Sample& s = samples[size_t(row.samples[size_t(k)])];
      for (size_t i = 0; i < s.tokens.size(); ++i, ++c) {
        tok[c] = s.tokens[i];
        seg[size_t(c)] = k;
        tgt[size_t(c)] = s.target[i];
        tpos[size_t(c)] = int32_t(i);
      }
    }
    DS_CHECK(c == row.tokens, "make_batch: row length {} != {}", c, row.tokens);
    b.lengths.push_back(int32_t(c));   // the balance losses skip the padding
    for (int32_t i = 0; c <= T; ++c, ++i) {   // padding: its own segment, never a target
      tok[c] = pad_id;
      seg[size_t(c)] = k;
      tgt[size_t(c)] = 0;
      tpos[size_t(c)] = i;
    }
    float* mask = b.loss_mask.f32() + r * T;
    int32_t* sg = b.segments.i32() + r * T;
    for (int64_t j = 0; j < T; ++j) {
      sg[j] = seg[size_t(j)];
      pos[j] = tpos[size_t(j)];
      mask[j] = tgt[size_t(j + 1)] && seg[size_t(j + 1)] == seg[size_t(j)] ? 1.0f : 0.0f;
    }
  }
  return b;
}

int64_t count_targets(const std::vector<Sample>& samples, std::span<const Row> rows) {
  int64_t n = 0;
  for (const Row& r : rows)
    for (int64_t s : r.samples) n += samples[size_t(s)].n_targets;
  return n;
}

RowStream::RowStream(const std::vector<Sample>& samples, int64_t seq_len, uint64_t seed,
                     bool packing)
    : capacity_(seq_len + 1), seed_(seed), packing_(packing) {
  DS_CHECK_AS(UsageError, !samples.empty(), "no training samples");
  lengths_.reserve(samples.size());
  for (const Sample& s : samples) lengths_.push_back(int64_t(s.tokens.size()));
}

std::vector<Row> RowStream::pack_epoch(int64_t epoch) const {
  const auto order = epoch_order(int64_t(lengths_.size()), seed_, epoch);
  return pack_rows(lengths_, order, capacity_, packing_);
}

const std::vector<Row>& RowStream::rows(int64_t epoch) {
  if (cache_epoch_ != epoch) {
    cache_ = pack_epoch(epoch);
    cache_epoch_ = epoch;
  }
  return cache_;
}

int64_t RowStream::rows_in_epoch(int64_t epoch) {
  return epoch == cache_epoch_ ? int64_t(cache_.size()) : int64_t(pack_epoch(epoch).size());
}

std::vector<Row> RowStream::next(int64_t n) {
  std::vector<Row> out;
  out.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    if (state_.position >= int64_t(rows(state_.epoch).size())) {
      state_.epoch++;
      state_.position = 0;
    }
    out.push_back(rows(state_.epoch)[size_t(state_.position)]);
    state_.position++;
  }
  return out;
}

void RowStream::set_state(const train::LoaderState& s) {
  DS_CHECK_AS(FormatError, s.epoch >= 0 && s.position >= 0 &&
                               s.position <= int64_t(rows(s.epoch).size()),
              "training state: data position {} / epoch {} does not fit this data ({} rows in "
              "that epoch)", s.position, s.epoch, rows(s.epoch).size());
  state_ = s;
}

}  // namespace ds::sft
