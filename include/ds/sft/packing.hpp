// SFT packing: samples are placed into rows of T+1 tokens (T = --seq-len) by a greedy,
// deterministic first-fit over a seeded per-epoch shuffle, and a row becomes a model batch
// row with sample masking: segments (block-diagonal causal attention, a sample never sees
// another), positions restarting at 0 per sample, and a loss mask that is 1 exactly where
// the target token is a training target of the same sample. Without packing every row holds
// one sample. Format and rules: docs/formats.md "SFT data".
// Shapes: B rows per batch, T = seq_len input positions, T+1 tokens per row.
// reference: spec §5.1 (sample masking); docs/model.md "Losses" (masked normalisation).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "ds/model/transformer.hpp"
#include "ds/sft/data.hpp"
#include "ds/train/data_loader.hpp"

namespace ds::sft {

// One row: samples (indices into the sample list) laid out back to back from token 0.
struct Row {
  std::vector<int64_t> samples;
  int64_t tokens = 0;            // sum of their lengths (<= T+1); the rest is padding
};

// Greedy first-fit: each sample of `order` goes into the first of the (at most `open_rows`)
// open rows with room for it; if none has room, a new row opens, and when that makes more
// than open_rows open, the oldest open row is emitted. Full rows are emitted at once, the
// open ones at the end in opening order. packing = false: one row per sample, in order.
// UsageError if a length exceeds capacity (the loader checks this earlier, naming the line).
std::vector<Row> pack_rows(std::span<const int64_t> lengths /*(N)*/,
                           std::span<const int64_t> order, int64_t capacity, bool packing,
                           int64_t open_rows = 8);

// The permutation of [0, n) for `epoch`: Fisher-Yates with Rng(seed, "sft-order", epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

// A batch of rows: tokens (B, T+1) i32, the samples followed by pad_id; segments (B, T) i32:
// the sample's index within its row (padding: one past the last sample); positions (B, T)
// i32: 0, 1, ... restarting at each sample (and at the padding); loss_mask (B, T) f32:
// mask[j] = 1 iff token j+1 is a target of the same sample as token j.
model::Batch make_batch(const std::vector<Sample>& samples, std::span<const Row> rows,
                        int64_t seq_len, int32_t pad_id);

// Sum of the loss mask of rows (the step's target weight W before it is run).
int64_t count_targets(const std::vector<Sample>& samples, std::span<const Row> rows);

// The training rows as an endless stream: epoch e is pack_rows(epoch_order(e)); the state is
// (epoch, rows consumed in it), as for pre-training, so a resume reads exactly the rows an
// uninterrupted run would have read. The current epoch's rows are cached.
class RowStream {
 public:
  RowStream(const std::vector<Sample>& samples, int64_t seq_len, uint64_t seed, bool packing);
  int64_t rows_in_epoch(int64_t epoch);
  std::vector<Row> next(int64_t n);             // crosses into the next epoch when needed
  train::LoaderState state() const { return state_; }
  void set_state(const train::LoaderState& s);  // FormatError if it does not fit the data

 private:
  const std::vector<Row>& rows(int64_t epoch);
  std::vector<Row> pack_epoch(int64_t epoch) const;
  std::vector<int64_t> lengths_;
  int64_t capacity_;
  uint64_t seed_;
  bool packing_;
  train::LoaderState state_;
  std::vector<Row> cache_;
  int64_t cache_epoch_ = -1;
};

}  // namespace ds::sft
