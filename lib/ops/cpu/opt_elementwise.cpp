// Optimised element-wise ops, reductions and AdamW. Reductions split x into fixed chunks of
// kChunk elements (independent of the thread count), reduce each chunk in double with a
// vectorised loop, then add the partials in chunk order: deterministic across runs and
// thread counts. AdamW runs the reference arithmetic (ref_elementwise.cpp) per element.
#include <cmath>
#include <vector>

#include "ds/core/dtype.hpp"
#include "opt.hpp"

namespace ds::ops::opt {

namespace {
constexpr int64_t kChunk = 1 << 15;

template <class Acc, class F>
Acc chunked(int64_t n, int nt, F&& chunk_fn) {
  const int64_t nc = (n + kChunk - 1) / kChunk;
  std::vector<Acc> part(static_cast<size_t>(nc), Acc(0));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t c = 0; c < nc; ++c) part[size_t(c)] = chunk_fn(c * kChunk, std::min(n, (c + 1) * kChunk));
  Acc s = 0;
  for (Acc p : part) s += p;
  return s;
}
}  // namespace

void add(const float* a, const float* b, float* out, int64_t n, int nt) {
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void add_(float* dst, const float* src, int64_t n, int nt) {
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

void scale_(float* x, float s, int64_t n, int nt) {
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

double sum_squares(const float* x, int64_t n, int nt) {
  return chunked<double>(n, nt, [x](int64_t i0, int64_t i1) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; ++i) s += double(x[i]) * double(x[i]);
    return s;
  });
}

int64_t count_nonfinite(const float* x, int64_t n, int nt) {
  return chunked<int64_t>(n, nt, [x](int64_t i0, int64_t i1) {
    int64_t c = 0;
    for (int64_t i = i0; i < i1; ++i) c += std::isfinite(x[i]) ? 0 : 1;
    return c;
  });
}

double sum(const float* x, int64_t n, int nt) {
  return chunked<double>(n, nt, [x](int64_t i0, int64_t i1) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; ++i) s += double(x[i]);
    return s;
  });
}

void adamw_step(float* param, const float* grad, float* m32, float* v32, uint16_t* m16,
                uint16_t* v16, int64_t n, const AdamWParams& p, int nt) {
  const int64_t nc = (n + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t c = 0; c < nc; ++c) {
    const int64_t i0 = c * kChunk, len = std::min(n, i0 + kChunk) - i0;
    ref::adamw_step(param + i0, grad + i0, m32 ? m32 + i0 : nullptr, v32 ? v32 + i0 : nullptr,
                    m16 ? m16 + i0 : nullptr, v16 ? v16 + i0 : nullptr, len, p);
  }
}

}  // namespace ds::ops::opt
