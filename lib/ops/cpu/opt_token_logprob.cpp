// Optimised per-token log-probabilities (see token_logprob.hpp): rows in parallel (static
// schedule). Forward per row: a max pass, then one pass that exponentiates each logit once
// (exp_f) accumulating z = sum e and s = sum e (x - max) in float lanes (fixed order for a
// given binary and ISA clone); lse = max + log z, logp = x[t] - lse, entropy = log z - s / z.
// Backward per row: d = -dlogp * exp(x - lse), then d[t] += dlogp (in place allowed).
#include <algorithm>
#include <cmath>
#include <limits>

#include "token_logprob.hpp"
#include "vec_math.hpp"

namespace ds::ops::opt {

namespace {

DS_CLONES float row_max(const float* x, int64_t V) {
  float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t v = 0; v < V; ++v) mx = x[v] > mx ? x[v] : mx;
  return mx;
}

DS_CLONES void row_sums(const float* x, float mx, int64_t V, float* z_out, float* s_out) {
  float z = 0, s = 0;
#pragma omp simd reduction(+ : z, s)
  for (int64_t v = 0; v < V; ++v) {
    const float u = x[v] - mx;
    const float e = exp_f(u);
    z += e;
    s += e * u;
  }
  *z_out = z;
  *s_out = s;
}

DS_CLONES void row_grad(const float* x, float l, float c, float* d, int64_t V) {
#pragma omp simd
  for (int64_t v = 0; v < V; ++v) d[v] = -c * exp_f(x[v] - l);
}

int row_threads(int64_t N, int64_t V, int nt) { return N * V >= (1 << 15) ? nt : 1; }

}  // namespace

void token_logprob_forward(const float* logits, const int32_t* targets, float* logp, float* lse,
                           float* entropy, int64_t N, int64_t V, int nt) {
#pragma omp parallel for num_threads(row_threads(N, V, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[n];
    if (t < 0) {
      logp[n] = lse[n] = 0.0f;
      if (entropy) entropy[n] = 0.0f;
      continue;
    }
    const float* x = logits + n * V;
    const float mx = row_max(x, V);
    float z, s;
    row_sums(x, mx, V, &z, &s);
    const float lz = std::log(z);
    lse[n] = mx + lz;
    logp[n] = x[t] - lse[n];
    if (entropy) entropy[n] = lz - s / z;
  }
}

void token_logprob_backward(const float* logits, const int32_t* targets, const float* lse,
                            const float* dlogp, float* dlogits, int64_t N, int64_t V, int nt) {
#pragma omp parallel for num_threads(row_threads(N, V, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float* d = dlogits + n * V;
    const int32_t t = targets[n];
    if (t < 0) {
      std::fill(d, d + V, 0.0f);
      continue;
    }
    row_grad(logits + n * V, lse[n], dlogp[n], d, V);
    d[t] += dlogp[n];
  }
}

}  // namespace ds::ops::opt
