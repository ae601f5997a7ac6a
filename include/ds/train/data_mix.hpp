// A weighted mixture of token datasets for pre-training (ds-pretrain --data A --data B
// --data-weights 3,1): DeepSeek-V3's corpus is a mixture (more mathematics, code and
// multilingual text than V2's; spec §4.2), made of separately tokenized parts. Each source is
// a PackedLoader of its own (its rows, held-out windows, shuffled epochs and position); the
// rows of a batch are dealt to the sources by weight, deterministically: the next row comes
// from the source i maximising w_i (R + 1) - n_i (ties to the first), where w are the weights
// normalised to sum 1, n_i the rows source i has given over all its epochs and R their sum,
// so no source gets a row ahead of its share w_i R, two sources stay within one row of their
// shares at every row, and more lag by little more (at most 1.27 rows measured over random
// weights for up to ten sources). Since n_i follows from the
// source's (epoch, position), the sources' states are the whole state: a resumed run deals the
// same rows. One source is exactly a PackedLoader (same rows, same order, same state).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ds/data/shard.hpp"
#include "ds/train/data_loader.hpp"

namespace ds::train {

// --data-weights "3,1" -> {3, 1}: n positive finite numbers (n = the number of --data); ""
// -> n equal weights. UsageError naming the flag otherwise.
std::vector<double> parse_data_weights(const std::string& text, size_t n);

// The sources of the next `rows` rows of a mixture: w the normalised weights, n the rows each
// source has given so far (advanced here). The rule above.
std::vector<size_t> deal_rows(const std::vector<double>& w, std::vector<int64_t>& n,
                              int64_t rows);

class MixedLoader {
 public:
  // datasets (outliving the loader) with their weights (positive, normalised here) and held-out
  // window counts; source 0 shuffles with `seed`, source i > 0 with a seed derived from it.
  MixedLoader(const std::vector<const data::Dataset*>& datasets, std::vector<double> weights,
              int64_t seq_len, uint64_t seed, const std::vector<int64_t>& val_sequences,
              Packing packing);
  size_t size() const { return sources_.size(); }
  const PackedLoader& source(size_t i) const { return *sources_[i]; }
  const std::vector<double>& weights() const { return w_; }   // normalised
  Packing packing() const { return sources_[0]->packing(); }
  // Rows source i has given, over all its epochs.
  int64_t rows_given(size_t i) const;
  // The next `batch` rows, dealt by weight (the tensors of PackedLoader::next; best-fit rows
  // with their lengths and loss mask). rows_per_source(): how many came from each source.
  model::Batch next(int64_t batch);
  const std::vector<int64_t>& rows_per_source() const { return last_rows_; }
  std::vector<LoaderState> state() const;
  void set_state(const std::vector<LoaderState>& s);   // one per source

 private:
  std::vector<std::unique_ptr<PackedLoader>> sources_;
  std::vector<double> w_;
  std::vector<int64_t> last_rows_;
};

}  // namespace ds::train
