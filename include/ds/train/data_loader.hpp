// Packed pre-training sequences from a token dataset (ds-tokenize shards, documents already
// ended by EOS), with no cross-document masking (spec §4.2). Two ways to cut the stream into
// rows of T+1 tokens (inputs T, targets shifted by one):
//   stride    fixed windows at stride T over the whole stream; a document may straddle two
//             rows (every row full, nothing padded).
//   best-fit  DeepSeek-V3's document packing (Ding et al. 2024): each document is cut into
//             chunks of at most T+1 tokens (consecutive chunks overlap by one token), and the
//             chunks are packed into rows by best-fit-decreasing (best_fit.hpp). A document no
//             longer than a row is never split; the row's tail is padding (masked out of the
//             loss and the balance losses, after every real token so causal attention keeps it
//             out of their context). Between two chunks of a row the target is the usual
//             EOS -> next document one, masked where it would repeat a chunk's first token
//             (a continuation chunk) or follow a cut one: every token but a document's first
//             is a target exactly once, as with stride.
// The held-out split is the same in both: the last `val_sequences` stride windows of the stream;
// best-fit packs only the documents (and the part of a document) before them. The order of
// the training rows is a pure function of (seed, epoch): a shuffled permutation per epoch; the
// state is two integers (epoch, position), saved in the training state so a resumed run reads
// exactly the batches it would have read.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ds/core/tensor.hpp"
#include "ds/data/shard.hpp"
#include "ds/model/transformer.hpp"

namespace ds::train {

struct LoaderState {
  int64_t epoch = 0;
  int64_t position = 0;      // sequences consumed in this epoch
};

enum class Packing { stride, best_fit };
Packing parse_packing(const std::string& name);   // "stride" | "best-fit"; UsageError otherwise
const char* packing_name(Packing p);

// How the training region was cut (logged by ds-pretrain; docs/results.md compares the two).
struct PackingStats {
  int64_t documents = 0;        // documents with a token in the training region
  int64_t split_documents = 0;  // of those, documents not held whole by one row
  int64_t rows = 0;             // training rows
  int64_t tokens = 0;           // real tokens over all rows (stride: rows x (T+1))
  int64_t padding = 0;          // padded slots over all rows (stride: 0)
  int64_t dropped = 0;          // best-fit: single-token documents (no target), left out
};

class PackedLoader {
 public:
  PackedLoader(const data::Dataset& dataset, int64_t seq_len, uint64_t seed,
               int64_t val_sequences, Packing packing = Packing::stride);
  int64_t n_train() const { return n_train_; }
  int64_t n_val() const { return n_val_; }
  Packing packing() const { return packing_; }
  const PackingStats& stats() const { return stats_; }
  // Next `batch` training rows; wraps into new epochs. tokens (batch, T+1) i32; best-fit also
  // sets lengths (real tokens per row) and loss_mask (batch, T) f32 (0 where the target is
  // padding or a masked chunk transition); stride leaves them unset (every row full).
  model::Batch next(int64_t batch);
  // Validation windows [first, first + batch) (in stream order) into tokens (batch, T+1).
  void val_batch(int64_t first, int64_t batch, Tensor& tokens) const;
  LoaderState state() const { return state_; }
  void set_state(const LoaderState& s);

 private:
  struct Chunk {
    uint64_t start;   // global token offset
    int32_t len;      // tokens, 2..T+1
    bool starts;      // the chunk begins its document
    bool ends;        // the chunk ends its document (not cut by the next chunk or the region)
  };
  void pack_best_fit(uint64_t train_end);
  void count_stride_splits(uint64_t train_end);
  // Writes row `row` (T+1 tokens) to out; with `mask` (T), the best-fit target weights.
  // Returns the real tokens written.
  int64_t read_row(int64_t row, int32_t* out, float* mask) const;
  void read_window(int64_t seq, int32_t* out) const;
  int64_t advance();                                   // the next row index, state moved
  void build_order();
  const data::Dataset& ds_;
  int64_t T_;
  uint64_t seed_;
  Packing packing_;
  int64_t n_train_ = 0, n_val_ = 0;
  PackingStats stats_;
  std::vector<Chunk> chunks_;          // best-fit: chunks in row order
  std::vector<int64_t> row_first_;     // best-fit: row r holds chunks_[row_first_[r], [r+1])
  LoaderState state_;
  std::vector<int64_t> order_;         // permutation of [0, n_train) for state_.epoch
  int64_t order_epoch_ = -1;
  mutable std::vector<uint32_t> buf_;
};

}  // namespace ds::train
