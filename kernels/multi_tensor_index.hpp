// Index arithmetic of the many-tensor and grouped launchers (multi_tensor.cu, adamw.cu), in
// plain C++ that nvcc compiles for the device and g++ for the host tests
// (tests/ops/test_multi_tensor.cpp checks that every element is visited exactly once).
// A table of `count` entries, entry i holding n_i elements split into chunks of `chunk`:
// first_i = chunks before entry i (a prefix sum; first_count = the total). Chunk c belongs to
// the last entry i with first_i <= c, and covers [lo, lo + len) of it.
#pragma once
#include <cstdint>

#ifndef DS_HD
#if defined(__CUDACC__)
#define DS_HD __host__ __device__ __forceinline__
#else
#define DS_HD inline
#endif
#endif

namespace ds::cuda {

// min of two ints for code shared by the host and the device (the device's min() there, so a
// kernel compiles as with min written inline).
DS_HD int imin(int a, int b) {
#if defined(__CUDA_ARCH__)
  return min(a, b);
#else
  return a < b ? a : b;
#endif
}

// first[0..count] from the sizes; returns the total number of chunks.
inline int64_t chunk_prefix(const int64_t* ns, int count, int64_t chunk, int64_t* first) {
  int64_t total = 0;
  for (int i = 0; i < count; ++i) {
    first[i] = total;
    total += ns[i] > 0 ? (ns[i] + chunk - 1) / chunk : 0;
  }
  first[count] = total;
  return total;
}

// The last i < count with key(i) <= c, for keys sorted ascending with key(0) <= c (binary
// search; the tables' prefix sums: chunk -> entry here, tile -> group in the grouped GEMM).
template <class Key>
DS_HD int last_at_or_below(int count, int64_t c, Key key) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (key(mid) <= c) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The entry owning chunk c, over any table whose entries have a `first` member (sorted). An
// empty entry shares its first with the next one, and the last of equal firsts wins, so an
// empty entry never owns a chunk.
template <class E>
DS_HD int entry_of(const E* tab, int count, int64_t c) {
  return last_at_or_below(count, c, [tab](int i) { return tab[i].first; });
}

// The element range of chunk c in an entry of n elements whose first chunk is `first`.
struct ChunkRange {
  int64_t lo, len;
};
DS_HD ChunkRange chunk_range(int64_t c, int64_t first, int64_t n, int64_t chunk) {
  const int64_t lo = (c - first) * chunk;
  return {lo, n - lo < chunk ? n - lo : chunk};
}

}  // namespace ds::cuda
