// Optimised RMSNorm: rows in parallel, vectorised sums (double accumulators, fixed order);
// dg (C) accumulated per column block over rows in row order (deterministic). The residual
// add in front of the forward and behind the backward fused per row (model::Block).
#include <algorithm>
#include <cmath>

#include "opt.hpp"

namespace ds::ops::opt {

namespace {

// One row: rstd and y = (x * rstd) * g; returns rstd.
inline float norm_row(const float* xr, const float* g, float eps, float* yr, int64_t C) {
  double ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * double(xr[c]);
  const float r = float(1.0 / std::sqrt(ss / double(C) + double(eps)));
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] * r) * g[c];
  return r;
}

}  // namespace

void rmsnorm_forward(const float* x, const float* g, float eps, float* y, float* rstd, int64_t N,
                     int64_t C, int nt) {
#pragma omp parallel for num_threads(par_threads(N * C, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n) rstd[n] = norm_row(x + n * C, g, eps, y + n * C, C);
}

// The add and the norm per row, while the row is in cache: the same sums as add, then
// rmsnorm_forward over h.
void add_rmsnorm_forward(const float* x, const float* a, float* h, const float* g, float eps,
                         float* y, float* rstd, int64_t N, int64_t C, int nt) {
#pragma omp parallel for num_threads(par_threads(N * C, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float* ar = a + n * C;
    float* hr = h + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) hr[c] = xr[c] + ar[c];
    rstd[n] = norm_row(hr, g, eps, y + n * C, C);
  }
}

void rmsnorm_backward(const float* x, const float* g, const float* rstd, const float* dy,
                      float* dx, float* dg, int64_t N, int64_t C, int nt, const float* res) {
#pragma omp parallel num_threads(par_threads(N * C, nt))
  {
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* dyr = dy + n * C;
      double dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c) dot += double(xr[c]) * double(g[c]) * double(dyr[c]);
      const double r = rstd[n];
      const float fr = float(r), k = float(r * r * r * dot / double(C));
      float* dxr = dx + n * C;
      if (res) {   // dx = res + the norm's dx (the residual gradient, added per element)
        const float* rr = res + n * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dxr[c] = rr[c] + (fr * g[c] * dyr[c] - k * xr[c]);
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dxr[c] = fr * g[c] * dyr[c] - k * xr[c];
      }
    }
    constexpr int64_t kCols = 256;
#pragma omp for schedule(static)
    for (int64_t c0 = 0; c0 < C; c0 += kCols) {
      const int64_t c1 = std::min(C, c0 + kCols);
      for (int64_t n = 0; n < N; ++n) {
        const float r = rstd[n];
        const float* xr = x + n * C;
        const float* dyr = dy + n * C;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) dg[c] += dyr[c] * xr[c] * r;
      }
    }
  }
}

}  // namespace ds::ops::opt
