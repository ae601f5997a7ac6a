// Reference MoE routing (docs/model.md §MoE, spec §1.9-1.10): sigmoid/softmax scores, biased
// selection scores with group limiting (group score = sum of the top-2 biased scores, top-1 for
// one-expert groups; without a bias, V2's group_limited_greedy, the group's max score), top-K
// with ties to the lower index, weights from the unbiased scores; its backward; the
// sequence-wise balance loss (gradient through P only); expert counts.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ref.hpp"

namespace ds::ops::ref {

namespace {
// Indices of the k largest vals[i] among allowed[i] (all when allowed is null), descending,
// ties to the lower index; always k distinct entries (NaN never blocks a pick).
template <class V>
void topk_desc(const V* vals, const uint8_t* allowed, int64_t n, int k, int32_t* out) {
  std::vector<uint8_t> taken(static_cast<size_t>(n), 0);
  for (int r = 0; r < k; ++r) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (taken[size_t(i)] || (allowed && !allowed[i])) continue;
      if (best < 0 || vals[i] > vals[best]) best = i;
    }
    taken[size_t(best)] = 1;
    out[r] = int32_t(best);
  }
}
}  // namespace

template <class T>
void moe_route_token(const T* logits, const float* bias, const RouteParams& p, int64_t E,
                     T* scores, int32_t* idx, T* weights) {
  if (p.sigmoid) {
    for (int64_t e = 0; e < E; ++e) scores[e] = T(1.0 / (1.0 + std::exp(-double(logits[e]))));
  } else {
    double mx = double(logits[0]), z = 0;
    for (int64_t e = 1; e < E; ++e) mx = std::max(mx, double(logits[e]));
    for (int64_t e = 0; e < E; ++e) z += std::exp(double(logits[e]) - mx);
    for (int64_t e = 0; e < E; ++e) scores[e] = T(std::exp(double(logits[e]) - mx) / z);
  }
  // selection scores in T precision (as R does in FP32)
  std::vector<T> sel(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) sel[size_t(e)] = scores[e] + (bias ? T(bias[e]) : T(0));
  std::vector<uint8_t> allowed(static_cast<size_t>(E), 1);
  const int64_t G = p.n_groups, gs = E / G;
  if (G > 1) {
    std::vector<T> gscore(static_cast<size_t>(G));
    int32_t top2[2];
    const int m = bias && gs >= 2 ? 2 : 1;   // no bias (V2's group_limited_greedy): the max
    for (int64_t g = 0; g < G; ++g) {
      topk_desc(sel.data() + g * gs, nullptr, gs, m, top2);
      T s = 0;
      for (int r = 0; r < m; ++r) s += sel[size_t(g * gs + top2[r])];
      gscore[size_t(g)] = s;
    }
    std::vector<int32_t> keep(static_cast<size_t>(p.topk_groups));
    topk_desc(gscore.data(), nullptr, G, p.topk_groups, keep.data());
    std::fill(allowed.begin(), allowed.end(), 0);
    for (int32_t g : keep)
      for (int64_t e = 0; e < gs; ++e) allowed[size_t(g * gs + e)] = 1;
  }
  topk_desc(sel.data(), allowed.data(), E, p.topk, idx);
  double tot = 0;
  for (int k = 0; k < p.topk; ++k) tot += double(scores[idx[k]]);
  for (int k = 0; k < p.topk; ++k) {
    double w = double(scores[idx[k]]);
    if (p.norm_topk) w /= tot;
    weights[k] = T(w * double(p.route_scale));
  }
}

template <class T>
void moe_route(const T* logits, const float* bias, const RouteParams& p, int64_t N, int64_t E,
               T* scores, int32_t* idx, T* weights) {
  for (int64_t n = 0; n < N; ++n)
    moe_route_token(logits + n * E, bias, p, E, scores + n * E, idx + n * p.topk,
                    weights + n * p.topk);
}

template <class T>
void moe_route_backward_token(const T* scores, const int32_t* idx, const T* dweights,
                              const T* dscores_extra, const RouteParams& p, int64_t E,
                              T* dlogits) {
  std::vector<double> ds(static_cast<size_t>(E), 0.0);
  if (dscores_extra)
    for (int64_t e = 0; e < E; ++e) ds[size_t(e)] = double(dscores_extra[e]);
  const double rs = double(p.route_scale);
  if (p.norm_topk) {   // w_k = rs * s_k / S, S = sum_k s_k
    double S = 0, wsum = 0;
    for (int k = 0; k < p.topk; ++k) S += double(scores[idx[k]]);
    for (int k = 0; k < p.topk; ++k) wsum += double(dweights[k]) * double(scores[idx[k]]);
    for (int k = 0; k < p.topk; ++k)
      ds[size_t(idx[k])] += rs * (double(dweights[k]) / S - wsum / (S * S));
  } else {
    for (int k = 0; k < p.topk; ++k) ds[size_t(idx[k])] += rs * double(dweights[k]);
  }
  if (p.sigmoid) {
    for (int64_t e = 0; e < E; ++e) {
      double s = double(scores[e]);
      dlogits[e] = T(ds[size_t(e)] * s * (1.0 - s));
    }
  } else {
    double dot = 0;
    for (int64_t e = 0; e < E; ++e) dot += ds[size_t(e)] * double(scores[e]);
    for (int64_t e = 0; e < E; ++e) dlogits[e] = T(double(scores[e]) * (ds[size_t(e)] - dot));
  }
}

template <class T>
void moe_route_backward(const T* scores, const int32_t* idx, const T* dweights,
                        const T* dscores_extra, const RouteParams& p, int64_t N, int64_t E,
                        T* dlogits) {
  for (int64_t n = 0; n < N; ++n)
    moe_route_backward_token(scores + n * E, idx + n * p.topk, dweights + n * p.topk,
                             dscores_extra ? dscores_extra + n * E : nullptr, p, E,
                             dlogits + n * E);
}

template <class T>
double moe_balance_loss(const T* scores, const int32_t* idx, int64_t n_seq, int64_t seq_len,
                        int64_t E, int64_t K, double alpha, T* dscores, const int32_t* lengths) {
  double loss = 0;
  std::vector<double> f(static_cast<size_t>(E)), P(static_cast<size_t>(E));
  for (int64_t sq = 0; sq < n_seq; ++sq) {
    const int64_t t0 = sq * seq_len, L = lengths ? int64_t(lengths[sq]) : seq_len;
    if (dscores)   // padding (t >= t0 + L) has no gradient
      std::fill(dscores + (t0 + L) * E, dscores + (t0 + seq_len) * E, T(0));
    if (L == 0) continue;
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(P.begin(), P.end(), 0.0);
    for (int64_t t = t0; t < t0 + L; ++t) {
      for (int64_t k = 0; k < K; ++k) f[size_t(idx[t * K + k])] += 1.0;
      double S = 0;
      for (int64_t e = 0; e < E; ++e) S += double(scores[t * E + e]);
      for (int64_t e = 0; e < E; ++e) P[size_t(e)] += double(scores[t * E + e]) / S;
    }
    double l = 0;
    for (int64_t e = 0; e < E; ++e) {
      f[size_t(e)] *= double(E) / double(K * L);
      P[size_t(e)] /= double(L);
      l += f[size_t(e)] * P[size_t(e)];
    }
    loss += alpha * l / double(n_seq);
    if (!dscores) continue;
    for (int64_t t = t0; t < t0 + L; ++t) {   // g_e = dL/ds'_e; ds_j = (g_j - g.s')/S
      double S = 0, gdot = 0;
      for (int64_t e = 0; e < E; ++e) S += double(scores[t * E + e]);
      const double c = alpha / double(n_seq * L);
      for (int64_t e = 0; e < E; ++e) gdot += c * f[size_t(e)] * double(scores[t * E + e]) / S;
      for (int64_t e = 0; e < E; ++e) dscores[t * E + e] = T((c * f[size_t(e)] - gdot) / S);
    }
  }
  return loss;
}

void moe_count(const int32_t* idx, int64_t n, int32_t* counts) {
  for (int64_t i = 0; i < n; ++i) counts[idx[i]] += 1;
}

void moe_sort_pairs(const int32_t* idx, int64_t NK, int64_t K, int64_t E, int32_t* counts,
                    int32_t* pair_src, int32_t* pair_tok, int32_t* pair_slot) {
  std::fill(counts, counts + E, 0);
  moe_count(idx, NK, counts);
  std::vector<int64_t> next(static_cast<size_t>(E), 0);   // the next free slot of each expert
  for (int64_t e = 1; e < E; ++e) next[size_t(e)] = next[size_t(e - 1)] + counts[e - 1];
  for (int64_t p = 0; p < NK; ++p) {
    const int64_t j = next[size_t(idx[p])]++;
    pair_src[j] = int32_t(p);
    pair_tok[j] = int32_t(p / K);
    if (pair_slot) pair_slot[p] = int32_t(j);
  }
}

void moe_pad_pairs(const int32_t* pair_src, const float* pair_w, const int64_t* off,
                   const int64_t* poff, int64_t E, int64_t K, int32_t* p_tok, float* p_w,
                   int32_t* p_row, int32_t* p_pair) {
  const int64_t NKp = poff[E], N = std::max<int64_t>(off[E] / K, 1);
  for (int64_t r = 0; r < NKp; ++r) {   // pads: token r mod N, weight 0
    p_tok[r] = int32_t(r % N);
    p_w[r] = 0.0f;
  }
  for (int64_t e = 0; e < E; ++e)
    for (int64_t i = off[e]; i < off[e + 1]; ++i) {
      const int64_t r = poff[e] + (i - off[e]);
      p_tok[r] = int32_t(pair_src[i] / K);
      p_w[r] = pair_w[i];
      p_row[i] = int32_t(r);
      p_pair[pair_src[i]] = int32_t(r);
    }
}

void combine_pairs(const float* src, const int32_t* slot, const float* w, float* dst, int64_t N,
                   int64_t K, int64_t C) {
  std::vector<int64_t> order(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    const int32_t* s = slot + n * K;
    for (int64_t k = 0; k < K; ++k) order[size_t(k)] = k;
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s[a] < s[b]; });
    for (const int64_t k : order) {
      const float wk = w ? w[n * K + k] : 1.0f;
      for (int64_t c = 0; c < C; ++c) dst[n * C + c] += wk * src[int64_t(s[k]) * C + c];
    }
  }
}

#define DS_INST(T)                                                                              \
  template void moe_route_token<T>(const T*, const float*, const RouteParams&, int64_t, T*,     \
                                   int32_t*, T*);                                               \
  template void moe_route<T>(const T*, const float*, const RouteParams&, int64_t, int64_t, T*,  \
                             int32_t*, T*);                                                     \
  template void moe_route_backward_token<T>(const T*, const int32_t*, const T*, const T*,       \
                                            const RouteParams&, int64_t, T*);                   \
  template void moe_route_backward<T>(const T*, const int32_t*, const T*, const T*,             \
                                      const RouteParams&, int64_t, int64_t, T*);                \
  template double moe_balance_loss<T>(const T*, const int32_t*, int64_t, int64_t, int64_t,      \
                                      int64_t, double, T*, const int32_t*);
DS_INST(float)
DS_INST(double)
#undef DS_INST

}  // namespace ds::ops::ref
