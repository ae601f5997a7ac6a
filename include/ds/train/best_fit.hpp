// Best-fit-decreasing bin packing (Ding et al. 2024, "Fewer Truncations Improve Language
// Modeling", the document packing of DeepSeek-V3 pre-training, spec §4.2): items taken
// longest first, each into the open bin whose free space is the smallest that still holds it,
// or a new bin. O(n log n) for the sort plus O(n log capacity) for the placement.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace ds::train {

// Bins in compressed rows: bin b holds items[first[b] .. first[b+1]), in the order they were
// placed (longest first). first has n_bins + 1 entries.
struct BinPacking {
  std::vector<int64_t> items;
  std::vector<int64_t> first;
  int64_t n_bins() const { return int64_t(first.size()) - 1; }
};

// Packs items of the given sizes (each in [1, capacity]; UsageError otherwise) into bins of
// `capacity`. Deterministic: equal sizes are placed in index order, and among bins with equal
// free space the most recently filled one is chosen; bins are numbered in opening order.
BinPacking best_fit_decreasing(std::span<const int64_t> sizes, int64_t capacity);

}  // namespace ds::train
