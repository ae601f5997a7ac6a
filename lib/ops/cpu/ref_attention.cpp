// Reference causal attention with an optional block-diagonal segment mask (SFT packing):
// query t attends to keys j <= t with seg[j] == seg[t]. Scores, softmax and sums in double;
// lse (B,H,T) is saved for backward, which rebuilds p = exp(scale*q.k - lse) (FlashAttention-2
// recurrences: dv += p*do, dp = do.v, ds = p*(dp - do.o), dq += scale*ds*k, dk += scale*ds*q).
#include <cmath>
#include <limits>
#include <vector>

#include "ref.hpp"

namespace ds::ops::ref {

namespace {
inline bool visible(const int32_t* seg, int64_t b, int64_t T, int64_t t, int64_t j) {
  return j <= t && (!seg || seg[b * T + j] == seg[b * T + t]);
}
template <class T>
double dot(const T* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}
}  // namespace

template <class T>
void attention_forward(const T* q, const T* k, const T* v, const int32_t* seg, double scale,
                       T* out, T* lse, const AttnDims& d) {
  const int64_t Tn = d.T, H = d.H, Dk = d.Dk, Dv = d.Dv;
  std::vector<double> s(static_cast<size_t>(Tn)), acc(static_cast<size_t>(Dv));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < Tn; ++t) {
        const T* qt = q + ((b * Tn + t) * H + h) * Dk;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= t; ++j) {
          if (!visible(seg, b, Tn, t, j)) continue;
          s[size_t(j)] = scale * dot(qt, k + ((b * Tn + j) * H + h) * Dk, Dk);
          mx = std::max(mx, s[size_t(j)]);
        }
        double z = 0;
        for (double& a : acc) a = 0;
        for (int64_t j = 0; j <= t; ++j) {
          if (!visible(seg, b, Tn, t, j)) continue;
          double p = std::exp(s[size_t(j)] - mx);
          z += p;
          const T* vj = v + ((b * Tn + j) * H + h) * Dv;
          for (int64_t e = 0; e < Dv; ++e) acc[size_t(e)] += p * double(vj[e]);
        }
        T* ot = out + ((b * Tn + t) * H + h) * Dv;
        for (int64_t e = 0; e < Dv; ++e) ot[e] = T(acc[size_t(e)] / z);
        lse[(b * H + h) * Tn + t] = T(mx + std::log(z));
      }
}

template <class T>
void attention_backward(const T* q, const T* k, const T* v, const int32_t* seg, double scale,
                        const T* out, const T* lse, const T* dout, T* dq, T* dk, T* dv,
                        const AttnDims& d) {
  const int64_t Tn = d.T, H = d.H, Dk = d.Dk, Dv = d.Dv;
  const int64_t nq = d.B * Tn * H * Dk, nv = d.B * Tn * H * Dv;
  std::vector<double> gq(static_cast<size_t>(nq), 0.0), gk(static_cast<size_t>(nq), 0.0),
      gv(static_cast<size_t>(nv), 0.0);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < Tn; ++t) {
        const int64_t qo = ((b * Tn + t) * H + h) * Dk, oo = ((b * Tn + t) * H + h) * Dv;
        const double l = double(lse[(b * H + h) * Tn + t]);
        const double D = dot(dout + oo, out + oo, Dv);
        for (int64_t j = 0; j <= t; ++j) {
          if (!visible(seg, b, Tn, t, j)) continue;
          const int64_t ko = ((b * Tn + j) * H + h) * Dk, vo = ((b * Tn + j) * H + h) * Dv;
          const double p = std::exp(scale * dot(q + qo, k + ko, Dk) - l);
          const double dp = dot(dout + oo, v + vo, Dv);
          const double ds = p * (dp - D);
          for (int64_t e = 0; e < Dv; ++e) gv[size_t(vo + e)] += p * double(dout[oo + e]);
          for (int64_t e = 0; e < Dk; ++e) {
            gq[size_t(qo + e)] += scale * ds * double(k[ko + e]);
            gk[size_t(ko + e)] += scale * ds * double(q[qo + e]);
          }
        }
      }
  for (int64_t i = 0; i < nq; ++i) { dq[i] = T(gq[size_t(i)]); dk[i] = T(gk[size_t(i)]); }
  for (int64_t i = 0; i < nv; ++i) dv[i] = T(gv[size_t(i)]);
}

#define DS_INST(T)                                                                              \
  template void attention_forward<T>(const T*, const T*, const T*, const int32_t*, double, T*,  \
                                     T*, const AttnDims&);                                      \
  template void attention_backward<T>(const T*, const T*, const T*, const int32_t*, double,     \
                                      const T*, const T*, const T*, T*, T*, T*, const AttnDims&);
DS_INST(float)
DS_INST(double)
#undef DS_INST

}  // namespace ds::ops::ref
