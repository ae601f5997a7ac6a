// Reference kernels of the absorbed-MLA inference ops: plain loops, dot products and softmax
// accumulated in double, one (row, head) at a time. Instantiated for float and double, and the
// attention also for a BF16 cache (uint16_t codes, each element widened exactly to F32 and then
// to double: the same arithmetic as an F32 cache holding the widened values).
// reference: spec §2.1 (score = (q_hat . c_j + q_pe . k_pe_j) * scale; out = sum_j p_j c_j).
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "ds/core/dtype.hpp"
#include "mla_kernels.hpp"

namespace ds::ops::ref {

namespace {
// One cache element as double: BF16 codes widened exactly, F32 / double as they are.
template <class C>
inline double cache_val(const C* p, int64_t i) {
  if constexpr (std::is_same_v<C, uint16_t>)
    return double(bf16_to_f32(p[i]));
  else
    return double(p[i]);
}
}  // namespace

template <class T>
void head_matmul(const T* x, const T* w, bool trans_w, T* y, int64_t N, int64_t H, int64_t I,
                 int64_t O) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const T* xr = x + (n * H + h) * I;                 // (I)
      const T* wh = w + h * I * O;                       // (I, O) or (O, I)
      for (int64_t o = 0; o < O; ++o) {
        double acc = 0;
        for (int64_t i = 0; i < I; ++i)
          acc += double(xr[i]) * double(trans_w ? wh[o * I + i] : wh[i * O + o]);
        y[(n * H + h) * O + o] = T(acc);
      }
    }
}

template <class T, class C>
void mla_latent_attention(const T* q_lat, const T* q_pe, const C* ckv, const C* kpe,
                          const int32_t* slot, const int32_t* len, double scale, T* out,
                          const MlaDims& d) {
  std::vector<double> s;
  for (int64_t n = 0; n < d.N; ++n) {
    const int64_t nk = len[n];
    const C* Cs = ckv + int64_t(slot[n]) * d.L * d.R;    // (L, R) this slot's latents
    const C* K = kpe + int64_t(slot[n]) * d.L * d.Dr;    // (L, Dr) this slot's rope keys
    for (int64_t h = 0; h < d.H; ++h) {
      const T* ql = q_lat + (n * d.H + h) * d.R;
      const T* qp = q_pe + (n * d.H + h) * d.Dr;
      s.assign(size_t(nk), 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < nk; ++j) {
        double a = 0;
        for (int64_t r = 0; r < d.R; ++r) a += double(ql[r]) * cache_val(Cs, j * d.R + r);
        for (int64_t r = 0; r < d.Dr; ++r) a += double(qp[r]) * cache_val(K, j * d.Dr + r);
        s[size_t(j)] = a * scale;
        mx = std::max(mx, s[size_t(j)]);
      }
      double z = 0;
      for (double& v : s) z += (v = std::exp(v - mx));
      T* o = out + (n * d.H + h) * d.R;
      for (int64_t r = 0; r < d.R; ++r) {
        double acc = 0;
        for (int64_t j = 0; j < nk; ++j) acc += s[size_t(j)] * cache_val(Cs, j * d.R + r);
        o[r] = T(acc / z);
      }
    }
  }
}

template void head_matmul<float>(const float*, const float*, bool, float*, int64_t, int64_t,
                                 int64_t, int64_t);
template void head_matmul<double>(const double*, const double*, bool, double*, int64_t, int64_t,
                                  int64_t, int64_t);
template void mla_latent_attention<float, float>(const float*, const float*, const float*,
                                                 const float*, const int32_t*, const int32_t*,
                                                 double, float*, const MlaDims&);
template void mla_latent_attention<double, double>(const double*, const double*, const double*,
                                                   const double*, const int32_t*,
                                                   const int32_t*, double, double*,
                                                   const MlaDims&);
template void mla_latent_attention<float, uint16_t>(const float*, const float*, const uint16_t*,
                                                    const uint16_t*, const int32_t*,
                                                    const int32_t*, double, float*,
                                                    const MlaDims&);

}  // namespace ds::ops::ref
