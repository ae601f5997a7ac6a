// MoE routing (docs/model.md §MoE): optimized == reference, selection against a brute-force
// sort, bias affects selection only, masked groups never win, ties to the lower index, K
// distinct experts per token, weights sum to route_scale; routing backward and balance loss
// vs finite differences; balance loss == alpha under perfect balance; expert counts.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "cpu/ref.hpp"
#include "ds/core/error.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {
RouteParams rp(int G, int kg, int K, bool sig = true, bool norm = true, float rs = 1.0f) {
  RouteParams p;
  p.n_groups = G; p.topk_groups = kg; p.topk = K; p.sigmoid = sig; p.norm_topk = norm;
  p.route_scale = rs;
  return p;
}

// Independent selection: stable sorts of (group score, then expert score), descending.
// The group score is the sum of the group's two best scores with a bias (V3), its best without
// (V2's group_limited_greedy).
std::vector<int32_t> brute_select(const std::vector<float>& sel, const RouteParams& p,
                                  bool with_bias) {
  const int E = int(sel.size()), gs = E / p.n_groups;
  std::vector<int> groups(size_t(p.n_groups));
  std::iota(groups.begin(), groups.end(), 0);
  std::vector<float> gscore(size_t(p.n_groups));
  for (int g = 0; g < p.n_groups; ++g) {
    std::vector<float> v(sel.begin() + g * gs, sel.begin() + (g + 1) * gs);
    std::stable_sort(v.begin(), v.end(), std::greater<float>());
    gscore[size_t(g)] = with_bias && gs >= 2 ? v[0] + v[1] : v[0];
  }
  std::stable_sort(groups.begin(), groups.end(),
                   [&](int a, int b) { return gscore[size_t(a)] > gscore[size_t(b)]; });
  std::vector<int32_t> cand;
  for (int e = 0; e < E; ++e)
    if (p.n_groups == 1 || std::find(groups.begin(), groups.begin() + p.topk_groups, e / gs) !=
                               groups.begin() + p.topk_groups)
      cand.push_back(e);
  std::stable_sort(cand.begin(), cand.end(),
                   [&](int a, int b) { return sel[size_t(a)] > sel[size_t(b)]; });
  cand.resize(size_t(p.topk));
  return cand;
}

struct Routed { Tensor scores, idx, w; };
Routed route(const Context& ctx, const Tensor& logits, const Tensor& bias, const RouteParams& p) {
  const int64_t N = logits.size(0), E = logits.size(1);
  Routed r{Tensor::empty({N, E}), Tensor::empty({N, p.topk}, DType::i32),
           Tensor::empty({N, p.topk})};
  moe_route(ctx, logits, bias, p, r.scores, r.idx, r.w);
  return r;
}
}  // namespace

TEST_CASE("moe_route: optimized == reference == brute force; K distinct; weights sum") {
  const RouteParams cases[] = {rp(1, 1, 2), rp(4, 2, 3, true, true, 2.5f), rp(12, 5, 4),
                               rp(4, 4, 8), rp(1, 1, 3, false, false, 16.0f),
                               rp(2, 1, 2, false, true), rp(8, 4, 8, true, true, 2.5f)};
  const int64_t Es[] = {8, 16, 12, 16, 10, 6, 64};
  for (size_t c = 0; c < std::size(cases); ++c) {
    const RouteParams& p = cases[c];
    const int64_t N = 37, E = Es[c];
    Tensor logits = rand_f32({N, E}, -3, 3), bias = rand_f32({E}, -0.3, 0.3);
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      Tensor b = with_bias ? bias : Tensor();
      Routed r = route(ref_ctx(), logits, b, p), o = route(opt_ctx(), logits, b, p);
      INFO("case ", c, " bias ", with_bias);
      CHECK(std::memcmp(r.idx.raw(), o.idx.raw(), r.idx.nbytes()) == 0);
      CHECK(max_abs_diff(r.w, o.w) == 0);
      CHECK(max_abs_diff(r.scores, o.scores) == 0);
      for (int64_t n = 0; n < N; ++n) {
        std::vector<float> sel(static_cast<size_t>(E));
        for (int64_t e = 0; e < E; ++e)
          sel[size_t(e)] = r.scores.f32()[n * E + e] + (with_bias ? bias.f32()[e] : 0.0f);
        std::vector<int32_t> want = brute_select(sel, p, with_bias);
        const int32_t* got = r.idx.i32() + n * p.topk;
        CHECK(std::equal(want.begin(), want.end(), got));
        std::vector<int32_t> u(got, got + p.topk);
        std::sort(u.begin(), u.end());
        CHECK(std::unique(u.begin(), u.end()) == u.end());   // K distinct experts
        double wsum = 0, ssum = 0;
        for (int k = 0; k < p.topk; ++k) {
          wsum += r.w.f32()[n * p.topk + k];
          ssum += r.scores.f32()[n * E + got[k]];
        }
        // weights come from the unbiased scores
        const double expect = p.norm_topk ? p.route_scale : p.route_scale * ssum;
        CHECK(wsum == doctest::Approx(expect).epsilon(1e-5));
        for (int k = 0; k < p.topk; ++k) {
          double s = r.scores.f32()[n * E + got[k]];
          double w = p.route_scale * (p.norm_topk ? s / ssum : s);
          CHECK(r.w.f32()[n * p.topk + k] == doctest::Approx(w).epsilon(1e-5));
        }
      }
    }
  }
}

TEST_CASE("moe_route: bias changes selection only; masked groups never win; ties") {
  // sigmoid scores of logits {2, 1, 0, -1}: unbiased top-1 is expert 0; bias lifts expert 3
  Tensor logits = f32_from({2, 1, 0, -1}, {1, 4}), bias = f32_from({0, 0, 0, 1}, {4});
  Routed r = route(opt_ctx(), logits, bias, rp(1, 1, 2, true, false, 1.0f));
  CHECK(r.idx.i32()[0] == 3);
  CHECK(r.idx.i32()[1] == 0);
  CHECK(r.w.f32()[0] == doctest::Approx(1.0 / (1.0 + std::exp(1.0))));   // unbiased s_3
  // groups of 2: group 0 = {0.9, 0.9}; group 3 holds the single best biased expert (6) but its
  // partner's bias sinks the group sum: with one kept group, 6 must never be chosen.
  Tensor l2 = Tensor::zeros({1, 8}), b2 = Tensor::zeros({8});
  for (int e = 0; e < 8; ++e) l2.f32()[e] = -4.0f;
  l2.f32()[0] = l2.f32()[1] = 2.2f;   // sigmoid ~ 0.9
  b2.f32()[6] = 100.0f;
  b2.f32()[7] = -1000.0f;
  Routed r2 = route(opt_ctx(), l2, b2, rp(4, 1, 2));
  CHECK(r2.idx.i32()[0] == 0);
  CHECK(r2.idx.i32()[1] == 1);
  // the group rule follows the bias (R's Gate.forward): softmax scores, groups {0.30, 0.00} and
  // {0.20, 0.20} (+ two empty groups), one kept. Without a bias the group score is the max
  // (0.30 > 0.20: expert 0); with a (zero) bias the top-2 sum (0.30 < 0.40: expert 2).
  Tensor l4 = Tensor::zeros({1, 8});
  const float l4v[8] = {std::log(0.3f), -30.f, std::log(0.2f), std::log(0.2f),
                        std::log(0.15f), std::log(0.15f), std::log(0.1f), std::log(0.05f)};
  std::copy(l4v, l4v + 8, l4.f32());
  for (const Context& c : {ref_ctx(), opt_ctx()}) {
    CHECK(route(c, l4, Tensor(), rp(4, 1, 1, false)).idx.i32()[0] == 0);
    CHECK(route(c, l4, Tensor::zeros({8}), rp(4, 1, 1, false)).idx.i32()[0] == 2);
  }
  // all equal: ties go to the lower index, in order
  Tensor l3 = Tensor::zeros({2, 6});
  Routed r3 = route(ref_ctx(), l3, Tensor(), rp(3, 2, 3));
  for (int k = 0; k < 3; ++k) CHECK(r3.idx.i32()[k] == k);
  // NaN logits still give K distinct experts
  for (int e = 0; e < 6; ++e) l3.f32()[6 + e] = NAN;
  Routed r4 = route(opt_ctx(), l3, Tensor(), rp(1, 1, 3));
  std::vector<int32_t> u(r4.idx.i32() + 3, r4.idx.i32() + 6);
  std::sort(u.begin(), u.end());
  CHECK(std::unique(u.begin(), u.end()) == u.end());
}

TEST_CASE("moe_route_backward: optimized == reference; vs finite differences (double)") {
  const RouteParams cases[] = {rp(1, 1, 2), rp(2, 1, 2, true, true, 2.5f),
                               rp(1, 1, 3, true, false, 2.0f), rp(1, 1, 2, false, true, 1.5f),
                               rp(1, 1, 3, false, false, 16.0f)};
  for (const RouteParams& p : cases) {
    const int64_t N = 3, E = 8, K = p.topk;
    std::vector<double> z = rand_vec(N * E, -3, 3), dw = rand_vec(N * K), extra = rand_vec(N * E);
    std::vector<float> bias(E);
    for (float& b : bias) b = float(urand(-0.2, 0.2));
    std::vector<double> s(N * E), w(N * K);
    std::vector<int32_t> idx(N * K), idx2(N * K);
    ref::moe_route<double>(z.data(), bias.data(), p, N, E, s.data(), idx.data(), w.data());
    auto loss = [&] {
      std::vector<double> s2(N * E), w2(N * K);
      ref::moe_route<double>(z.data(), bias.data(), p, N, E, s2.data(), idx2.data(), w2.data());
      REQUIRE(idx2 == idx);   // perturbations must not change the selection
      return dot(w2, dw) + dot(s2, extra);
    };
    std::vector<double> dz(N * E);
    ref::moe_route_backward<double>(s.data(), idx.data(), dw.data(), extra.data(), p, N, E,
                                    dz.data());
    grad_check(z, loss, dz, "route dlogits");
    // float paths agree
    Tensor zt = f32_from(z, {N, E}), bt = Tensor::empty({E});
    std::copy(bias.begin(), bias.end(), bt.f32());
    Routed r = route(opt_ctx(), zt, bt, p);
    Tensor dwt = f32_from(dw, {N, K}), ext = f32_from(extra, {N, E});
    Guarded dr({N, E}), dop({N, E});
    moe_route_backward(ref_ctx(), r.scores, r.idx, dwt, ext, p, dr.t);
    moe_route_backward(opt_ctx(), r.scores, r.idx, dwt, ext, p, dop.t);
    CHECK(max_abs_diff(dr.t, dop.t) == 0);
    CHECK(nmse(dr.t, f32_from(dz, {N, E})) < 1e-10);
    CHECK((dr.intact() && dop.intact()));
  }
}

TEST_CASE("moe_balance_loss: alpha under perfect balance; hand example; gradient") {
  const int64_t E = 4, K = 2, T = 4, S = 2;
  Tensor scores = Tensor::empty({S * T, E}), idx = Tensor::empty({S * T, K}, DType::i32);
  for (int64_t i = 0; i < S * T * E; ++i) scores.f32()[i] = 0.5f;
  for (int64_t t = 0; t < S * T; ++t) {   // experts (0,1), (2,3), (0,1), (2,3), ...
    idx.i32()[t * K] = int32_t((t % 2) * 2);
    idx.i32()[t * K + 1] = int32_t((t % 2) * 2 + 1);
  }
  const float alpha = 1e-4f;
  Tensor none;
  CHECK(moe_balance_loss(opt_ctx(), scores, idx, int(S), int(T), alpha, none) == double(alpha));
  // E=2, K=1, T=2: idx = [0, 0], s = (0.2, 0.6), (0.5, 0.5) -> f = (2, 0), P0 = 0.375
  Tensor s2 = f32_from({0.2, 0.6, 0.5, 0.5}, {2, 2}), i2 = i32_from({0, 0}, {2, 1});
  CHECK(moe_balance_loss(ref_ctx(), s2, i2, 1, 2, 1.0f, none) == doctest::Approx(0.75));
  // gradient through P only, vs finite differences in double
  const int64_t E3 = 5, K3 = 2, T3 = 3, S3 = 2;
  std::vector<double> sc = rand_vec(S3 * T3 * E3, 0.05, 0.95);
  std::vector<int32_t> id(S3 * T3 * K3);
  for (size_t i = 0; i < id.size(); ++i) id[i] = int32_t((i * 3 + i / 2) % E3);
  for (size_t t = 0; t < id.size(); t += 2)
    if (id[t] == id[t + 1]) id[t + 1] = (id[t + 1] + 1) % int32_t(E3);
  auto loss = [&] {
    return ref::moe_balance_loss<double>(sc.data(), id.data(), S3, T3, E3, K3, 0.3, nullptr);
  };
  std::vector<double> ds(sc.size());
  ref::moe_balance_loss<double>(sc.data(), id.data(), S3, T3, E3, K3, 0.3, ds.data());
  grad_check(sc, loss, ds, "balance dscores");
  Tensor st = f32_from(sc, {S3 * T3, E3}), dst = Tensor::empty({S3 * T3, E3});
  double l =
      moe_balance_loss(opt_ctx(), st, i32_from(id, {S3 * T3, K3}), int(S3), int(T3), 0.3f, dst);
  CHECK(l == doctest::Approx(loss()).epsilon(1e-6));
  CHECK(nmse(dst, f32_from(ds, {S3 * T3, E3})) < 1e-10);
}

TEST_CASE("moe_balance_loss with lengths: each sequence is its leading tokens, padding inert") {
  // 3 sequences of T = 6 with 6, 2 and 0 real tokens: the loss is the mean over the 3 of
  // each real prefix's loss computed alone (an empty one adds 0), whatever the padding holds;
  // dscores on padding are 0 and equal the prefix's own gradient elsewhere.
  const int64_t E = 5, K = 2, T = 6, S = 3;
  const std::vector<int32_t> lengths = {6, 2, 0};
  std::vector<double> sc = rand_vec(S * T * E, 0.05, 0.95);
  std::vector<int32_t> id(size_t(S * T * K));
  for (size_t i = 0; i < id.size(); i += 2) {
    id[i] = int32_t((i * 7 + 3) % E);
    id[i + 1] = int32_t((id[i] + 1 + int32_t(i % 3)) % E);
  }
  const double alpha = 0.3;
  std::vector<double> ds(sc.size(), 7.0);
  const double l = ref::moe_balance_loss<double>(sc.data(), id.data(), S, T, E, K, alpha,
                                                 ds.data(), lengths.data());
  double want = 0;
  for (int64_t q = 0; q < S; ++q) {
    const int64_t L = lengths[size_t(q)];
    if (L == 0) continue;
    std::vector<double> d1(size_t(L * E));
    want += ref::moe_balance_loss<double>(sc.data() + q * T * E, id.data() + q * T * K, 1, L, E,
                                          K, alpha / double(S), d1.data());
    for (int64_t i = 0; i < L * E; ++i)
      CHECK(ds[size_t(q * T * E + i)] == doctest::Approx(d1[size_t(i)]).epsilon(1e-12));
  }
  CHECK(l == doctest::Approx(want).epsilon(1e-12));
  for (int64_t q = 0; q < S; ++q)
    for (int64_t t = lengths[size_t(q)]; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) CHECK(ds[size_t((q * T + t) * E + e)] == 0.0);
  // the op (float) agrees, padding rows changed or not; a length out of range is refused
  Tensor st = f32_from(sc, {S * T, E}), it = i32_from(id, {S * T, K});
  Tensor d1 = Tensor::empty({S * T, E}), d2 = Tensor::empty({S * T, E});
  const double l1 = moe_balance_loss(opt_ctx(), st, it, int(S), int(T), float(alpha), d1, lengths);
  for (int64_t t = 2; t < T; ++t) {   // sequence 1's padding
    st.f32()[(T + t) * E] = 0.9f;
    it.i32()[(T + t) * K] = 4;
    it.i32()[(T + t) * K + 1] = 0;
  }
  const double l2 = moe_balance_loss(opt_ctx(), st, it, int(S), int(T), float(alpha), d2, lengths);
  CHECK(l1 == doctest::Approx(want).epsilon(1e-6));
  CHECK(l2 == l1);
  CHECK(max_abs_diff(d1, d2) == 0);
  CHECK(nmse(d1, f32_from(ds, {S * T, E})) < 1e-10);
  const std::vector<int32_t> too_long = {6, 7, 0}, too_few = {6, 2};
  CHECK_THROWS_AS(moe_balance_loss(opt_ctx(), st, it, int(S), int(T), 0.1f, d1, too_long),
                  InternalError);
  CHECK_THROWS_AS(moe_balance_loss(opt_ctx(), st, it, int(S), int(T), 0.1f, d1, too_few),
                  InternalError);
}

TEST_CASE("moe_count adds per-expert counts") {
  Tensor idx = i32_from({0, 2, 2, 1, 2, 0}, {3, 2}), counts = i32_from({5, 0, 1}, {3});
  moe_count(opt_ctx(), idx, counts);
  CHECK(counts.i32()[0] == 7);
  CHECK(counts.i32()[1] == 1);
  CHECK(counts.i32()[2] == 4);
  Tensor bad = i32_from({3}, {1, 1});
  CHECK_THROWS_AS(moe_count(opt_ctx(), bad, counts), InternalError);
}

TEST_CASE("moe_sort_pairs: a stable sort of the (token, k) pairs by expert") {
  // N = 4 tokens, K = 2: pairs p = 0..7 route to experts 2 0 | 1 2 | 2 0 | 3 1 (E = 5, 4 empty)
  const Tensor idx = i32_from({2, 0, 1, 2, 2, 0, 3, 1}, {4, 2});
  Tensor counts = i32_from({9, 9, 9, 9, 9}, {5});   // written, not added to
  Tensor src = Tensor::empty({8}, DType::i32), tok = Tensor::empty({8}, DType::i32);
  Tensor slot = Tensor::empty({8}, DType::i32), none;
  std::vector<int32_t> host;   // the counts on the host too
  moe_sort_pairs(opt_ctx(), idx, counts, src, tok, slot, &host);
  const std::vector<int32_t> want_counts{2, 2, 3, 1, 0}, want_src{1, 5, 2, 7, 0, 3, 4, 6};
  for (int e = 0; e < 5; ++e) CHECK(counts.i32()[e] == want_counts[size_t(e)]);
  CHECK(host == want_counts);
  for (int j = 0; j < 8; ++j) {
    CHECK(src.i32()[j] == want_src[size_t(j)]);
    CHECK(tok.i32()[j] == want_src[size_t(j)] / 2);
    CHECK(slot.i32()[want_src[size_t(j)]] == j);
  }
  // Random routing: every pair once, experts ascending, pairs ascending within an expert.
  const int64_t N = 300, K = 6, E = 64;
  std::vector<int32_t> r(static_cast<size_t>(N * K));
  for (size_t i = 0; i < r.size(); ++i) r[i] = int32_t((i * 2654435761u >> 7) % E);
  Tensor ri = i32_from(r, {N, K}), rc = Tensor::empty({E}, DType::i32);
  Tensor rs = Tensor::empty({N * K}, DType::i32), rt = Tensor::empty({N * K}, DType::i32);
  moe_sort_pairs(opt_ctx(), ri, rc, rs, rt, none);
  std::vector<int> seen(r.size(), 0);
  int64_t j = 0;
  for (int64_t e = 0; e < E; ++e)
    for (int32_t c = 0; c < rc.i32()[e]; ++c, ++j) {
      const int32_t p = rs.i32()[j];
      CHECK(r[size_t(p)] == e);
      CHECK(rt.i32()[j] == p / K);
      if (c > 0) CHECK(rs.i32()[j - 1] < p);
      seen[size_t(p)] += 1;
    }
  CHECK(j == N * K);
  CHECK(std::count(seen.begin(), seen.end(), 1) == N * K);
  Tensor bad = i32_from({0, 5}, {1, 2});   // expert 5 of 5
  Tensor src2 = src.slice0(0, 2), tok2 = tok.slice0(0, 2), src7 = src.slice0(0, 7);
  CHECK_THROWS_AS(moe_sort_pairs(opt_ctx(), bad, counts, src2, tok2, none), InternalError);
  CHECK_THROWS_AS(moe_sort_pairs(opt_ctx(), idx, counts, src7, tok, none), InternalError);
}

TEST_CASE("combine_pairs: scatter_add_rows' sums per token, bit for bit") {
  // Random routing of N tokens to K of E experts; the expert-sorted rows added back into the
  // tokens by the scatter (pair order) and by combine_pairs (per token, slots ascending).
  const int64_t N = 97, K = 6, E = 16, C = 37;
  std::vector<int32_t> r(static_cast<size_t>(N * K));
  for (int64_t n = 0; n < N; ++n)   // K distinct experts a token, in no particular order
    for (int64_t k = 0; k < K; ++k) r[size_t(n * K + k)] = int32_t((n * 7 + k * 5 + (n % 3)) % E);
  const Tensor idx = i32_from(r, {N, K});
  Tensor counts = Tensor::empty({E}, DType::i32), src = Tensor::empty({N * K}, DType::i32);
  Tensor tok = Tensor::empty({N * K}, DType::i32), slot = Tensor::empty({N * K}, DType::i32);
  moe_sort_pairs(opt_ctx(), idx, counts, src, tok, slot);
  const Tensor rows = rand_f32({N * K, C}, -2, 2), gw = rand_f32({N, K}, 0, 1);
  Tensor pw = Tensor::empty({N * K});   // the pairs' weights in slot order
  for (int64_t j = 0; j < N * K; ++j) pw.f32()[j] = gw.f32()[src.i32()[j]];
  const Tensor base = rand_f32({N, C}, -1, 1);
  for (const bool weighted : {true, false})
    for (const Context& c : {opt_ctx(), ref_ctx()}) {
      CAPTURE(weighted);
      Tensor want = base.clone(), got = base.clone();
      scatter_add_rows(c, rows, tok, weighted ? pw : Tensor(), want);
      combine_pairs(c, rows, slot.view({N, K}), weighted ? gw : Tensor(), got);
      CHECK(max_abs_diff(got, want) == 0);
      CHECK(max_abs_diff(got, base) > 0);
    }
  // more rows than pairs (the FP8 experts' padded layout): a NaN pad row after every fifth
  // row, the slots moved to the rows' new places; the pads are never read
  const int64_t R = N * K + (N * K) / 5;
  Tensor padded = Tensor::empty({R, C}), pslot = Tensor::empty({N, K}, DType::i32);
  auto moved = [](int64_t i) { return i + i / 5; };
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) padded.f32()[r * C + c] = NAN;
  for (int64_t i = 0; i < N * K; ++i)
    std::memcpy(padded.f32() + moved(i) * C, rows.f32() + i * C, size_t(C) * sizeof(float));
  for (int64_t p = 0; p < N * K; ++p) pslot.i32()[p] = int32_t(moved(slot.i32()[p]));
  for (const bool weighted : {true, false})
    for (const Context& c : {opt_ctx(), ref_ctx()}) {
      CAPTURE(weighted);
      Tensor want = base.clone(), got = base.clone();
      combine_pairs(c, rows, slot.view({N, K}), weighted ? gw : Tensor(), want);
      combine_pairs(c, padded, pslot, weighted ? gw : Tensor(), got);
      bool finite = true;   // a NaN pad read would show here (max_abs_diff skips NaNs)
      for (int64_t i = 0; i < got.numel(); ++i) finite = finite && std::isfinite(got.f32()[i]);
      CHECK(finite);
      CHECK(max_abs_diff(got, want) == 0);
    }
  Tensor short_dst = base.clone();   // fewer rows than pairs
  CHECK_THROWS_AS(combine_pairs(opt_ctx(), rows.slice0(0, N * K - 1), slot.view({N, K}),
                                Tensor(), short_dst), InternalError);
  Tensor dst = base.clone(), bad = slot.clone().view({N, K});
  bad.i32()[3] = int32_t(N * K);
  CHECK_THROWS_AS(combine_pairs(opt_ctx(), rows, bad, Tensor(), dst), InternalError);
  bad.i32()[3] = int32_t(R);   // one past the padded rows
  CHECK_THROWS_AS(combine_pairs(opt_ctx(), padded, bad, Tensor(), dst), InternalError);
}

TEST_CASE("moe_pad_pairs: the FP8 experts' 128-row padded layout of the sorted pairs") {
  // Random routing of N tokens to K of E experts (some experts empty), sorted by expert, each
  // expert's rows padded to a multiple of 128; checked against the layout's definition.
  const int64_t N = 150, K = 4, E = 12, NK = N * K;
  std::vector<int32_t> r(static_cast<size_t>(NK));
  for (size_t i = 0; i < r.size(); ++i)   // experts 9..11 get no pairs
    r[i] = int32_t((i * 2654435761u >> 9) % 9);
  const Tensor idx = i32_from(r, {N, K}), gw = rand_f32({N, K}, 0, 1);
  Tensor counts = Tensor::empty({E}, DType::i32), src = Tensor::empty({NK}, DType::i32);
  Tensor tok = Tensor::empty({NK}, DType::i32), slot = Tensor::empty({NK}, DType::i32), pw;
  std::vector<int32_t> host;
  moe_sort_pairs(opt_ctx(), idx, counts, src, tok, slot, &host);
  pw = Tensor::empty({NK});
  for (int64_t j = 0; j < NK; ++j) pw.f32()[j] = gw.f32()[src.i32()[j]];
  std::vector<int64_t> off(size_t(E + 1), 0), poff(size_t(E + 1), 0);
  for (int64_t e = 0; e < E; ++e) {
    off[size_t(e + 1)] = off[size_t(e)] + host[size_t(e)];
    poff[size_t(e + 1)] = poff[size_t(e)] + (host[size_t(e)] + 127) / 128 * 128;
  }
  const int64_t NKp = poff.back();
  REQUIRE(NKp > NK);
  Tensor ptok = Tensor::empty({NKp}, DType::i32), ppw = Tensor::empty({NKp});
  Tensor prow = Tensor::empty({NK}, DType::i32), ppair = Tensor::empty({NK}, DType::i32);
  moe_pad_pairs(opt_ctx(), src, pw, K, off, poff, ptok, ppw, prow, ppair);
  std::vector<int> real(static_cast<size_t>(NKp), 0);
  for (int64_t p = 0; p < NK; ++p) {   // pair p = n*K + k lies in its expert's padded range
    const int32_t row = ppair.i32()[p], e = r[size_t(p)];
    CHECK(row >= poff[size_t(e)]);
    CHECK(row < poff[size_t(e)] + host[size_t(e)]);
    CHECK(ptok.i32()[row] == p / K);
    CHECK(ppw.f32()[row] == gw.f32()[p]);
    CHECK(prow.i32()[slot.i32()[p]] == row);   // sorted slot -> padded row
    CHECK(row - poff[size_t(e)] == slot.i32()[p] - off[size_t(e)]);   // order kept
    real[size_t(row)] += 1;
  }
  for (int64_t row = 0; row < NKp; ++row) {
    CHECK(real[size_t(row)] <= 1);
    if (real[size_t(row)] == 0) {   // a pad: token row mod N, weight +0
      CHECK(ptok.i32()[row] == row % N);
      CHECK(std::signbit(ppw.f32()[row]) == false);
      CHECK(ppw.f32()[row] == 0.0f);
    }
  }
  CHECK(std::count(real.begin(), real.end(), 1) == NK);
  // bad input: a repeated pair, a padded range shorter than its pairs, a wrong output shape
  Tensor dup = src.clone();
  dup.i32()[1] = dup.i32()[0];
  CHECK_THROWS_AS(moe_pad_pairs(opt_ctx(), dup, pw, K, off, poff, ptok, ppw, prow, ppair),
                  InternalError);
  REQUIRE(host[0] > 0);
  std::vector<int64_t> tight = poff;
  tight[1] = 0;   // expert 0's pairs in no rows, expert 1 given them: the same padded total
  CHECK_THROWS_AS(moe_pad_pairs(opt_ctx(), src, pw, K, off, tight, ptok, ppw, prow, ppair),
                  InternalError);
  Tensor short_tok = ptok.slice0(0, NKp - 1);
  CHECK_THROWS_AS(moe_pad_pairs(opt_ctx(), src, pw, K, off, poff, short_tok, ppw, prow, ppair),
                  InternalError);
}
