// Reference cross-entropy over rows of logits: loss = logsumexp(row) - row[target], computed
// max-subtracted in double; target -1 = ignored row (loss 0, gradient 0).
#include <algorithm>
#include <cmath>

#include "ref.hpp"

namespace ds::ops::ref {

namespace {
template <class T>
double row_lse(const T* r, int64_t V) {
  double mx = double(r[0]);
  for (int64_t j = 1; j < V; ++j) mx = std::max(mx, double(r[j]));
  double z = 0;
  for (int64_t j = 0; j < V; ++j) z += std::exp(double(r[j]) - mx);
  return mx + std::log(z);
}
}  // namespace

template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, T* losses, int64_t N,
                           int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) { losses[n] = T(0); continue; }
    const T* r = logits + n * V;
    losses[n] = T(row_lse(r, V) - double(r[targets[n]]));
  }
}

template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, double scale, T* dlogits,
                            int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    T* d = dlogits + n * V;
    if (targets[n] < 0) { std::fill(d, d + V, T(0)); continue; }
    const T* r = logits + n * V;
    double l = row_lse(r, V);
    for (int64_t j = 0; j < V; ++j) {
      double p = std::exp(double(r[j]) - l);
      d[j] = T((p - (j == targets[n] ? 1.0 : 0.0)) * scale);
    }
  }
}

#define DS_INST(T)                                                                          \
  template void cross_entropy_forward<T>(const T*, const int32_t*, T*, int64_t, int64_t);   \
  template void cross_entropy_backward<T>(const T*, const int32_t*, double, T*, int64_t, int64_t);
DS_INST(float)
DS_INST(double)
#undef DS_INST

}  // namespace ds::ops::ref
