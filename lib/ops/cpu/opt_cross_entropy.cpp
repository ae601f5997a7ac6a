// Optimised cross-entropy: rows in parallel (static schedule). Per row: a max pass, then one
// pass that exponentiates each logit once (exp_f, vec_math.hpp) into dlogits while summing
// (float lanes, fixed order for a given binary and ISA clone), then a scaling pass:
// loss = max + log(sum) - logit[target], dlogits = e * (scale / sum) - scale * onehot.
// The hot loops are compiled for AVX-512/AVX2/baseline (target_clones, picked at load time).
#include <algorithm>
#include <cmath>
#include <limits>

#include "opt.hpp"
#include "vec_math.hpp"

namespace ds::ops::opt {

namespace {

DS_CLONES float row_max(const float* r, int64_t V) {
  float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < V; ++j) mx = r[j] > mx ? r[j] : mx;
  return mx;
}

// sum_j exp(r[j] - mx); stores the exponentials in e unless e is null.
DS_CLONES float row_sum_exp(const float* r, float mx, float* e, int64_t V) {
  float z = 0;
  if (e) {
#pragma omp simd reduction(+ : z)
    for (int64_t j = 0; j < V; ++j) {
      const float v = exp_f(r[j] - mx);
      e[j] = v;
      z += v;
    }
  } else {
#pragma omp simd reduction(+ : z)
    for (int64_t j = 0; j < V; ++j) z += exp_f(r[j] - mx);
  }
  return z;
}

DS_CLONES void row_scale(float* d, float s, int64_t V) {
#pragma omp simd
  for (int64_t j = 0; j < V; ++j) d[j] *= s;
}

// A NaN in the row (or an infinite max: inf - inf) makes the sum, hence the loss, NaN.
float row_lse(const float* r, float* e, int64_t V, float* sum_out) {
  const float mx = row_max(r, V);
  const float z = row_sum_exp(r, mx, e, V);
  *sum_out = z;
  return mx + std::log(z);
}

int row_threads(int64_t N, int64_t V, int nt) { return N * V >= (1 << 15) ? nt : 1; }

}  // namespace

void cross_entropy_forward(const float* logits, const int32_t* targets, float* losses, int64_t N,
                           int64_t V, int nt) {
#pragma omp parallel for num_threads(row_threads(N, V, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* r = logits + n * V;
    float z;
    losses[n] = targets[n] < 0 ? 0.0f : row_lse(r, nullptr, V, &z) - r[targets[n]];
  }
}

void cross_entropy_fused(const float* logits, const int32_t* targets, float scale, float* losses,
                         float* dlogits, int64_t N, int64_t V, int nt) {
#pragma omp parallel for num_threads(row_threads(N, V, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* r = logits + n * V;
    float* d = dlogits + n * V;
    const int32_t tg = targets[n];
    if (tg < 0) {
      if (losses) losses[n] = 0.0f;
      std::fill(d, d + V, 0.0f);
      continue;
    }
    const float rt = r[tg];                // read before d (maybe r itself) is overwritten
    float z;
    const float lse = row_lse(r, d, V, &z);
    if (losses) losses[n] = lse - rt;
    row_scale(d, scale / z, V);
    d[tg] -= scale;
  }
}

void cross_entropy_backward(const float* logits, const int32_t* targets, float scale,
                            float* dlogits, int64_t N, int64_t V, int nt) {
  cross_entropy_fused(logits, targets, scale, nullptr, dlogits, N, V, nt);
}

}  // namespace ds::ops::opt
