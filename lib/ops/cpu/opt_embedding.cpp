// Optimised embedding: rows copied in parallel; the backward groups tokens by id with a
// stable counting sort and sums each table row in token order (bitwise equal to the
// reference, independent of the thread count).
#include <cstring>
#include <vector>

#include "opt.hpp"

namespace ds::ops::opt {

void embedding_forward(const float* table, const int32_t* ids, float* out, int64_t N, int64_t C,
                       int nt) {
#pragma omp parallel for num_threads(par_threads(N * C, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(out + n * C, table + int64_t(ids[n]) * C, size_t(C) * sizeof(float));
}

void embedding_backward(const int32_t* ids, const float* dout, float* dtable, int64_t N,
                        int64_t V, int64_t C, int nt) {
  std::vector<int64_t> start(static_cast<size_t>(V) + 1, 0), order(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) start[size_t(ids[n]) + 1] += 1;
  for (int64_t v = 0; v < V; ++v) start[size_t(v) + 1] += start[size_t(v)];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t n = 0; n < N; ++n) order[size_t(fill[size_t(ids[n])]++)] = n;
#pragma omp parallel for num_threads(par_threads(N * C, nt)) schedule(static)
  for (int64_t v = 0; v < V; ++v) {
    float* row = dtable + v * C;
    for (int64_t i = start[size_t(v)]; i < start[size_t(v) + 1]; ++i) {
      const float* src = dout + order[size_t(i)] * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) row[c] += src[c];
    }
  }
}

}  // namespace ds::ops::opt
