// Best-fit-decreasing bin packing (see include/ds/train/best_fit.hpp).
#include "ds/train/best_fit.hpp"

#include <algorithm>
#include <numeric>
#include <set>

#include "ds/core/error.hpp"

namespace ds::train {

BinPacking best_fit_decreasing(std::span<const int64_t> sizes, int64_t capacity) {
  DS_CHECK_AS(UsageError, capacity >= 1, "bin packing: capacity {} < 1", capacity);
  const int64_t n = int64_t(sizes.size());
  for (int64_t i = 0; i < n; ++i)
    DS_CHECK_AS(UsageError, sizes[size_t(i)] >= 1 && sizes[size_t(i)] <= capacity,
                "bin packing: item {} has size {}, outside [1, {}]", i, sizes[size_t(i)],
                capacity);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return sizes[size_t(a)] > sizes[size_t(b)]; });

  // Open bins by free space: by_space[s] lists the bins with s free (a stack), and `spaces`
  // holds the s whose list is not empty, so the best fit for size L is spaces.lower_bound(L).
  // Full bins leave the structure.
  std::vector<std::vector<int64_t>> by_space(size_t(capacity + 1));
  std::set<int64_t> spaces;
  std::vector<int64_t> bin_of(static_cast<size_t>(n));
  int64_t n_bins = 0;
  for (const int64_t i : order) {
    const int64_t L = sizes[size_t(i)];
    int64_t bin, left;
    const auto it = spaces.lower_bound(L);
    if (it == spaces.end()) {
      bin = n_bins++;
      left = capacity - L;
    } else {
      const int64_t s = *it;
      std::vector<int64_t>& stack = by_space[size_t(s)];
      bin = stack.back();
      stack.pop_back();
      if (stack.empty()) spaces.erase(it);
      left = s - L;
    }
    bin_of[size_t(i)] = bin;
    if (left > 0) {
      by_space[size_t(left)].push_back(bin);
      spaces.insert(left);
    }
  }

  // Counting sort by bin, in placement order.
  BinPacking out;
  out.first.assign(size_t(n_bins + 1), 0);
  for (int64_t i = 0; i < n; ++i) out.first[size_t(bin_of[size_t(i)] + 1)]++;
  for (int64_t b = 0; b < n_bins; ++b) out.first[size_t(b + 1)] += out.first[size_t(b)];
  std::vector<int64_t> fill(out.first.begin(), out.first.end() - 1);
  out.items.resize(size_t(n));
  for (const int64_t i : order) out.items[size_t(fill[size_t(bin_of[size_t(i)])]++)] = i;
  return out;
}

}  // namespace ds::train
