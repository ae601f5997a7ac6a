// Packed pre-training sequences from a token dataset (ds-tokenize shards): the token stream
// (documents already separated by EOS) is cut into sequences of T+1 tokens at stride T, with no
// cross-document masking as in spec §4.2, but at fixed boundaries that may split a document
// (the spec's best-fit packing of whole chunks is not implemented). The order is a pure
// function of (seed, epoch): a shuffled permutation per epoch; the state is two integers
// (epoch, position), saved in the training state so a resumed run reads exactly the batches it
// would have read. The last `val_sequences` sequences of the stream are held out for
// validation.
#pragma once
#include <cstdint>
#include <vector>

#include "ds/core/tensor.hpp"
#include "ds/data/shard.hpp"

namespace ds::train {

struct LoaderState {
  int64_t epoch = 0;
  int64_t position = 0;      // sequences consumed in this epoch
};

class PackedLoader {
 public:
  PackedLoader(const data::Dataset& dataset, int64_t seq_len, uint64_t seed,
               int64_t val_sequences);
  int64_t n_train() const { return n_train_; }
  int64_t n_val() const { return n_val_; }
  // Next `batch` training sequences into tokens (batch, T+1) i32; wraps into new epochs.
  void next(int64_t batch, Tensor& tokens);
  // Validation sequences [first, first + batch) (in stream order) into tokens (batch, T+1).
  void val_batch(int64_t first, int64_t batch, Tensor& tokens) const;
  LoaderState state() const { return state_; }
  void set_state(const LoaderState& s);

 private:
  void read_sequence(int64_t seq, int32_t* out) const;
  void build_order();
  const data::Dataset& ds_;
  int64_t T_;
  uint64_t seed_;
  int64_t n_train_ = 0, n_val_ = 0;
  LoaderState state_;
  std::vector<int64_t> order_;   // permutation of [0, n_train) for state_.epoch
  int64_t order_epoch_ = -1;
  mutable std::vector<uint32_t> buf_;
};

}  // namespace ds::train
