// Reference per-token log-probabilities (see token_logprob.hpp): per row, the max-subtracted
// log-sum-exp in double, logp = x[t] - lse, entropy = lse - sum_v p_v x_v, and the backward
// dlogits = dlogp * (onehot(t) - p). Readable loops; the optimised path is checked against it.
#include <algorithm>
#include <cmath>

#include "token_logprob.hpp"

namespace ds::ops::ref {

template <class T>
void token_logprob_forward(const T* logits, const int32_t* targets, T* logp, T* lse, T* entropy,
                           int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    const T* x = logits + n * V;
    if (targets[n] < 0) {
      logp[n] = lse[n] = T(0);
      if (entropy) entropy[n] = T(0);
      continue;
    }
    double mx = double(x[0]);
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(x[v]));
    double z = 0, s = 0;   // sum e_v, sum e_v (x_v - mx), e_v = exp(x_v - mx)
    for (int64_t v = 0; v < V; ++v) {
      const double e = std::exp(double(x[v]) - mx);
      z += e;
      s += e * (double(x[v]) - mx);
    }
    const double l = mx + std::log(z);
    lse[n] = T(l);
    logp[n] = T(double(x[targets[n]]) - l);
    if (entropy) entropy[n] = T(std::log(z) - s / z);
  }
}

template <class T>
void token_logprob_backward(const T* logits, const int32_t* targets, const T* lse, const T* dlogp,
                            T* dlogits, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    T* d = dlogits + n * V;
    if (targets[n] < 0) {
      std::fill(d, d + V, T(0));
      continue;
    }
    const T* x = logits + n * V;
    const double c = double(dlogp[n]);
    for (int64_t v = 0; v < V; ++v) {
      const double p = std::exp(double(x[v]) - double(lse[n]));
      d[v] = T(c * ((v == targets[n] ? 1.0 : 0.0) - p));
    }
  }
}

#define DS_INST(T)                                                                            \
  template void token_logprob_forward<T>(const T*, const int32_t*, T*, T*, T*, int64_t,       \
                                         int64_t);                                            \
  template void token_logprob_backward<T>(const T*, const int32_t*, const T*, const T*, T*,   \
                                          int64_t, int64_t);
DS_INST(float)
DS_INST(double)
#undef DS_INST

}  // namespace ds::ops::ref
