// Reference RMSNorm (spec §1.5): y = x * rstd * g, rstd = 1/sqrt(mean(x^2) + eps), statistics
// in double. Backward: dx = rstd * (g*dy - x * rstd^2 * mean(x * g * dy)), dg += dy * x * rstd.
#include <cmath>

#include "ref.hpp"

namespace ds::ops::ref {

template <class T>
void rmsnorm_forward(const T* x, const T* g, double eps, T* y, T* rstd, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * double(xr[c]);
    double r = 1.0 / std::sqrt(ss / double(C) + eps);
    rstd[n] = T(r);
    for (int64_t c = 0; c < C; ++c) y[n * C + c] = T(double(xr[c]) * r * double(g[c]));
  }
}

template <class T>
void rmsnorm_backward(const T* x, const T* g, const T* rstd, const T* dy, T* dx, T* dg, int64_t N,
                      int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    const T* dyr = dy + n * C;
    double r = double(rstd[n]);
    double dot = 0;   // sum_c x * g * dy
    for (int64_t c = 0; c < C; ++c) dot += double(xr[c]) * double(g[c]) * double(dyr[c]);
    double k = r * r * r * dot / double(C);
    for (int64_t c = 0; c < C; ++c) {
      dx[n * C + c] = T(r * double(g[c]) * double(dyr[c]) - k * double(xr[c]));
      dg[c] += T(double(dyr[c]) * double(xr[c]) * r);
    }
  }
}

#define DS_INST(T)                                                                           \
  template void rmsnorm_forward<T>(const T*, const T*, double, T*, T*, int64_t, int64_t);    \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t, \
                                    int64_t);
DS_INST(float)
DS_INST(double)
#undef DS_INST

}  // namespace ds::ops::ref
