// Argument checks and count arithmetic shared by the communicator implementations (single, MPI,
// NCCL), so that every backend rejects the same misuse with the same message.
// Private to lib/dist.
#pragma once
#include <climits>
#include <cstdint>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/core/dtype.hpp"

namespace ds::dist::detail {

// Reductions are defined for f32, i32 and i64 only (the sums the training code needs); a bf16
// sum would round at every hop and differ between backends.
inline void check_reduce_dtype(const char* op, DType dt) {
  if (dt != DType::f32 && dt != DType::i32 && dt != DType::i64)
    DS_THROW(InternalError, "{}: reductions support F32, I32 and I64, not {}", op, dtype_name(dt));
}

inline void check_count(const char* op, int64_t n) {
  if (n < 0) DS_THROW(InternalError, "{}: negative element count {}", op, n);
}

// One count per rank, none negative; returns their sum.
inline int64_t check_counts(const char* op, const std::vector<int64_t>& counts, int size,
                            const char* what = "counts") {
  if (int64_t(counts.size()) != size)
    DS_THROW(InternalError, "{}: {} has {} entries for {} ranks", op, what, counts.size(), size);
  int64_t total = 0;
  for (int64_t c : counts) {
    check_count(op, c);
    total += c;
  }
  return total;
}

inline void check_peer(const char* op, int peer, int size) {
  if (peer < 0 || peer >= size)
    DS_THROW(InternalError, "{}: peer {} outside [0, {})", op, peer, size);
}

// MPI counts and displacements are C ints: larger element counts are refused by name rather
// than silently truncated (2^31 elements is 8 GB of f32 per call; split the buffer if needed).
inline int to_int(const char* op, int64_t v) {
  if (v < 0 || v > int64_t(INT_MAX))
    DS_THROW(InternalError, "{}: element count {} exceeds the MPI limit of {} per call", op, v,
             INT_MAX);
  return int(v);
}

inline const char* bytes_of(const void* p, int64_t elems, DType dt) {
  return static_cast<const char*>(p) + elems * int64_t(dtype_size(dt));
}
inline char* bytes_of(void* p, int64_t elems, DType dt) {
  return static_cast<char*>(p) + elems * int64_t(dtype_size(dt));
}

}  // namespace ds::dist::detail
