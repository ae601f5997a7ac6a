// Optimised cross-entropy: rows in parallel; max-subtracted exponentials in FP32, their sum
// in double (vectorised, fixed order); loss = max + log(sum) - logit[target].
#include <algorithm>
#include <cmath>

#include "opt.hpp"

namespace ds::ops::opt {

namespace {
float row_lse(const float* r, int64_t V) {
  float mx = r[0];
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < V; ++j) mx = std::max(mx, r[j]);
  double z = 0;
#pragma omp simd reduction(+ : z)
  for (int64_t j = 0; j < V; ++j) z += double(std::exp(r[j] - mx));
  return mx + float(std::log(z));
}
}  // namespace

void cross_entropy_forward(const float* logits, const int32_t* targets, float* losses, int64_t N,
                           int64_t V, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* r = logits + n * V;
    losses[n] = targets[n] < 0 ? 0.0f : row_lse(r, V) - r[targets[n]];
  }
}

void cross_entropy_backward(const float* logits, const int32_t* targets, float scale,
                            float* dlogits, int64_t N, int64_t V, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float* d = dlogits + n * V;
    if (targets[n] < 0) { std::fill(d, d + V, 0.0f); continue; }
    const float* r = logits + n * V;
    const float l = row_lse(r, V);
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) d[j] = std::exp(r[j] - l) * scale;
    d[targets[n]] -= scale;
  }
}

}  // namespace ds::ops::opt
