// GPU vs CPU reference (gpu_harness.hpp) for the losses and routing ops of
// lib/ops/cuda/loss_route.cpp: cross-entropy (forward, backward, fused, in place), per-token
// log-probabilities with entropy and their backward, MoE routing (DeepSeek-V3's group-limited
// top-8 of 256 and smaller configurations, sigmoid and softmax, with and without bias, ties
// and NaN: idx must be identical to the reference), its backward, the balance loss and the
// expert counts; plus bad targets / expert indices, which the GPU path must skip without
// touching memory out of bounds. (Timings: bench/gpu/bench_losses.cpp.)
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_harness.hpp"
#include "moe_pairs_util.hpp"

namespace {

using namespace ds;
using namespace ds::gpu_test;

// Passes when the normalised error is small, or failing that when every element is within
// atol: with logits of +-80 the double reference itself is only accurate to ~1e-15 absolute
// (a loss of 1e-26 comes out 0), so tiny outputs are judged by absolute error.
void expect_near(const Tensor& got, const Tensor& want, double nmse_tol, double atol,
                 const std::string& what) {
  const Diff d = compare(got, want);
  INFO(what << ": nmse " << d.nmse << " max_abs " << d.max_abs << " nan/inf mismatches "
            << d.nan_mismatch << " of " << d.count);
  CHECK(d.nan_mismatch == 0);
  CHECK((d.nmse <= nmse_tol || d.max_abs <= atol));
}

// Targets in [0, V) with every third row from row 1 ignored (-1); row 0 always scored.
Tensor targets_for(int64_t N, int64_t V) {
  Tensor t = rand_i32({N}, 0, int(V - 1));
  for (int64_t n = 1; n < N; n += 3) t.i32()[n] = -1;
  return t;
}

std::string label(const char* op, int64_t N, int64_t V, float lo, float hi) {
  return std::string(op) + " N=" + std::to_string(N) + " V=" + std::to_string(V) + " logits [" +
         std::to_string(lo) + ", " + std::to_string(hi) + ")";
}

// ---- cross-entropy -------------------------------------------------------------------------

void check_cross_entropy(int64_t N, int64_t V, float lo, float hi) {
  const std::string L = label("cross_entropy", N, V, lo, hi);
  INFO(L);
  Arena arena;
  const Tensor x = rand_f32({N, V}, lo, hi);
  const Tensor t = targets_for(N, V);
  const float scale = 0.37f;
  Tensor loss_ref = Tensor::empty({N}), d_ref = Tensor::empty({N, V});
  ops::cross_entropy_forward(cpu_ref(), x, t, loss_ref);
  ops::cross_entropy_backward(cpu_ref(), x, t, scale, d_ref);

  const Tensor gx = arena.upload(x), gt = arena.upload(t);
  Tensor gl = arena.empty({N}), gd = arena.empty({N, V});
  ops::cross_entropy_forward(gpu(), gx, gt, gl);
  expect_near(gl, loss_ref, 1e-10, 1e-4, L + " forward losses");
  ops::cross_entropy_backward(gpu(), gx, gt, scale, gd);
  expect_near(gd, d_ref, 1e-9, 1e-6, L + " backward dlogits");

  Tensor fl = arena.empty({N}), fd = arena.empty({N, V});   // fused, separate output
  ops::cross_entropy_forward_backward(gpu(), gx, gt, scale, fl, fd);
  expect_near(fl, loss_ref, 1e-10, 1e-4, L + " fused losses");
  expect_near(fd, d_ref, 1e-9, 1e-6, L + " fused dlogits");

  Tensor none, nd = arena.empty({N, V});   // fused without losses
  ops::cross_entropy_forward_backward(gpu(), gx, gt, scale, none, nd);
  expect_near(nd, d_ref, 1e-9, 1e-6, L + " fused dlogits (no losses)");

  Tensor ip = arena.upload(x), il = arena.empty({N});   // fused in place
  ops::cross_entropy_forward_backward(gpu(), ip, gt, scale, il, ip);
  expect_near(il, loss_ref, 1e-10, 1e-4, L + " in-place losses");
  expect_near(ip, d_ref, 1e-9, 1e-6, L + " in-place dlogits");
  CHECK(arena.check());
}

TEST_CASE("gpu cross_entropy matches the reference") {
  for (int64_t V : {int64_t(1), int64_t(5), int64_t(1000), int64_t(4099), int64_t(129280)})
    for (int64_t N : {int64_t(1), int64_t(3), int64_t(64)}) {
      check_cross_entropy(N, V, -1.f, 1.f);
      check_cross_entropy(N, V, -80.f, 80.f);   // stability: exp would overflow unshifted
    }
  check_cross_entropy(7, 1000, 70.f, 90.f);     // large common offset, small differences
  check_cross_entropy(5, 33, -4.f, 4.f);        // odd V, scalar path with several loads
}

// Targets outside [-1, V) are not range-checked for GPU tensors: those rows must read as
// ignored (loss 0, zero gradient) and nothing may be touched out of the row.
TEST_CASE("gpu cross_entropy skips out-of-range targets") {
  const int64_t N = 4, V = 37;
  Arena arena;
  const Tensor x = rand_f32({N, V});
  Tensor t = rand_i32({N}, 0, int(V - 1));
  t.i32()[1] = int32_t(V);
  t.i32()[3] = -7;
  Tensor t_ok = t.clone();   // the reference sees the bad rows as ignored
  t_ok.i32()[1] = t_ok.i32()[3] = -1;
  Tensor loss_ref = Tensor::empty({N}), d_ref = Tensor::empty({N, V});
  ops::cross_entropy_forward(cpu_ref(), x, t_ok, loss_ref);
  ops::cross_entropy_backward(cpu_ref(), x, t_ok, 1.0f, d_ref);
  const Tensor gx = arena.upload(x), gt = arena.upload(t);
  Tensor gl = arena.empty({N}), gd = arena.empty({N, V});
  ops::cross_entropy_forward_backward(gpu(), gx, gt, 1.0f, gl, gd);
  expect_close(gl, loss_ref, 1e-10, "bad-target losses");
  expect_close(gd, d_ref, 1e-9, "bad-target dlogits");
  Tensor lp = arena.empty({N}), ls = arena.empty({N}), en = arena.empty({N});
  ops::token_logprob_forward(gpu(), gx, gt, lp, ls, en);
  const Tensor hl = download(lp);
  CHECK(hl.f32()[1] == 0.0f);
  CHECK(hl.f32()[3] == 0.0f);
  CHECK(arena.check());
}

// ---- per-token log-probabilities ------------------------------------------------------------

void check_token_logprob(int64_t N, int64_t V, float lo, float hi) {
  const std::string L = label("token_logprob", N, V, lo, hi);
  INFO(L);
  Arena arena;
  const Tensor x = rand_f32({N, V}, lo, hi);
  const Tensor t = targets_for(N, V);
  Tensor logp_ref = Tensor::empty({N}), lse_ref = Tensor::empty({N}),
         ent_ref = Tensor::empty({N});
  ops::token_logprob_forward(cpu_ref(), x, t, logp_ref, lse_ref, ent_ref);
  const Tensor dlogp = rand_f32({N}, -2.f, 2.f);
  Tensor d_ref = Tensor::empty({N, V});
  ops::token_logprob_backward(cpu_ref(), x, t, lse_ref, dlogp, d_ref);

  const Tensor gx = arena.upload(x), gt = arena.upload(t);
  Tensor lp = arena.empty({N}), ls = arena.empty({N}), en = arena.empty({N});
  ops::token_logprob_forward(gpu(), gx, gt, lp, ls, en);
  expect_near(lp, logp_ref, 1e-10, 1e-4, L + " logp");
  expect_near(ls, lse_ref, 1e-12, 1e-4, L + " lse");
  expect_near(en, ent_ref, 1e-9, 1e-5, L + " entropy");

  Tensor lp2 = arena.empty({N}), ls2 = arena.empty({N}), none;   // entropy skipped
  ops::token_logprob_forward(gpu(), gx, gt, lp2, ls2, none);
  expect_near(lp2, logp_ref, 1e-10, 1e-4, L + " logp (no entropy)");
  expect_near(ls2, lse_ref, 1e-12, 1e-4, L + " lse (no entropy)");

  // The backward reads lse as given: both sides get the reference's.
  const Tensor glse = arena.upload(lse_ref), gdlogp = arena.upload(dlogp);
  Tensor gd = arena.empty({N, V});
  ops::token_logprob_backward(gpu(), gx, gt, glse, gdlogp, gd);
  expect_near(gd, d_ref, 1e-9, 1e-6, L + " backward dlogits");
  Tensor ip = arena.upload(x);   // in place
  ops::token_logprob_backward(gpu(), ip, gt, glse, gdlogp, ip);
  expect_near(ip, d_ref, 1e-9, 1e-6, L + " in-place dlogits");
  CHECK(arena.check());
}

TEST_CASE("gpu token_logprob matches the reference") {
  for (int64_t V : {int64_t(1), int64_t(5), int64_t(1000), int64_t(4099), int64_t(129280)})
    for (int64_t N : {int64_t(1), int64_t(3), int64_t(64)}) {
      check_token_logprob(N, V, -1.f, 1.f);
      check_token_logprob(N, V, -80.f, 80.f);
    }
  check_token_logprob(7, 1000, 70.f, 90.f);
  check_token_logprob(5, 33, -4.f, 4.f);
}

// ---- MoE routing ----------------------------------------------------------------------------

struct RouteCase {
  int64_t E;
  int K, G, TG;
};

std::string route_label(const RouteCase& c, const ops::RouteParams& p, int64_t N, bool bias,
                        const char* data) {
  return "moe_route E=" + std::to_string(c.E) + " K=" + std::to_string(c.K) + " groups " +
         std::to_string(c.G) + "/" + std::to_string(c.TG) + (p.sigmoid ? " sigmoid" : " softmax") +
         (bias ? " bias" : " no-bias") + (p.norm_topk ? " norm" : " no-norm") +
         " N=" + std::to_string(N) + " " + data;
}

// idx must equal the reference's element for element; reports the first differing token.
void expect_same_idx(const Tensor& gidx, const Tensor& want, int K, const std::string& what) {
  const Tensor got = download(gidx);
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want.numel(); ++i)
    if (got.i32()[i] != want.i32()[i]) {
      if (first < 0) first = i;
      ++bad;
    }
  std::string row;
  if (first >= 0) {
    const int64_t n = first / K;
    row = "token " + std::to_string(n) + ": gpu";
    for (int k = 0; k < K; ++k) row.append(" ").append(std::to_string(got.i32()[n * K + k]));
    row += " ref";
    for (int k = 0; k < K; ++k) row.append(" ").append(std::to_string(want.i32()[n * K + k]));
  }
  INFO(what << ": " << bad << " idx mismatches of " << want.numel() << "; first " << row);
  CHECK(bad == 0);
}

// data: "random", "ties" (logits and bias from a few values: many exact ties), "nan" (a few
// NaN logits).
void check_route(const RouteCase& c, bool sigmoid, bool with_bias, bool norm, int64_t N,
                 const char* data) {
  ops::RouteParams p;
  p.n_groups = c.G;
  p.topk_groups = c.TG;
  p.topk = c.K;
  p.sigmoid = sigmoid;
  p.norm_topk = norm;
  p.route_scale = norm ? 2.5f : 1.0f;
  const std::string L = route_label(c, p, N, with_bias, data);
  INFO(L);
  const int64_t E = c.E;
  Arena arena;
  Tensor x = rand_f32({N, E}, -3.f, 3.f);
  Tensor b = with_bias ? rand_f32({E}, -0.1f, 0.1f) : Tensor();
  const std::string d = data;
  if (d == "ties") {
    const Tensor q = rand_i32({N, E}, 0, 3);
    for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = 0.5f * float(q.i32()[i]) - 0.5f;
    if (with_bias) {
      const Tensor qb = rand_i32({E}, 0, 1);
      for (int64_t e = 0; e < E; ++e) b.f32()[e] = 0.125f * float(qb.i32()[e]);
    }
    if (N > 2)   // one token with every logit equal
      for (int64_t e = 0; e < E; ++e) x.f32()[2 * E + e] = 0.25f;
  } else if (d == "nan") {
    for (int64_t n = 0; n < N; n += 2) x.f32()[n * E + (n * 7) % E] = NAN;
  }
  Tensor s_ref = Tensor::empty({N, E}), i_ref = Tensor::empty({N, int64_t(c.K)}, DType::i32),
         w_ref = Tensor::empty({N, int64_t(c.K)});
  ops::moe_route(cpu_ref(), x, b, p, s_ref, i_ref, w_ref);

  const Tensor gx = arena.upload(x);
  const Tensor gb = with_bias ? arena.upload(b) : Tensor();
  Tensor gs = arena.empty({N, E}), gi = arena.empty({N, int64_t(c.K)}, DType::i32),
         gw = arena.empty({N, int64_t(c.K)});
  ops::moe_route(gpu(), gx, gb, p, gs, gi, gw);
  expect_close(gs, s_ref, 1e-12, (L + " scores").c_str());
  expect_same_idx(gi, i_ref, c.K, L + " idx");
  expect_close(gw, w_ref, 1e-12, (L + " weights").c_str());
  CHECK(arena.check());
}

const RouteCase kRouteCases[] = {
    {256, 8, 8, 4},   // DeepSeek-V3
    {16, 2, 1, 1},    // no groups
    {64, 6, 8, 3},
    {40, 4, 4, 2},    // groups of 10: not a warp multiple
    {8, 3, 8, 5},     // one-expert groups: group score = top-1
    {100, 5, 1, 1},   // E not a multiple of 32
};

TEST_CASE("gpu moe_route matches the reference exactly") {
  for (const RouteCase& c : kRouteCases)
    for (bool sigmoid : {true, false})
      for (bool bias : {false, true})
        for (int64_t N : {int64_t(1), int64_t(37), int64_t(515)}) {
          check_route(c, sigmoid, bias, true, N, "random");
          check_route(c, sigmoid, bias, N != 37, N, "ties");
        }
  for (const RouteCase& c : kRouteCases)
    for (bool sigmoid : {true, false}) check_route(c, sigmoid, true, true, 9, "nan");
}

void check_route_backward(const RouteCase& c, bool sigmoid, bool norm, bool extra, int64_t N) {
  ops::RouteParams p;
  p.n_groups = c.G;
  p.topk_groups = c.TG;
  p.topk = c.K;
  p.sigmoid = sigmoid;
  p.norm_topk = norm;
  p.route_scale = 1.7f;
  const std::string L = route_label(c, p, N, false, extra ? "backward +extra" : "backward");
  INFO(L);
  const int64_t E = c.E;
  Arena arena;
  const Tensor x = rand_f32({N, E}, -3.f, 3.f);
  Tensor s = Tensor::empty({N, E}), idx = Tensor::empty({N, int64_t(c.K)}, DType::i32),
         w = Tensor::empty({N, int64_t(c.K)});
  ops::moe_route(cpu_ref(), x, Tensor(), p, s, idx, w);
  const Tensor dw = rand_f32({N, int64_t(c.K)});
  const Tensor dx = extra ? rand_f32({N, E}, -0.5f, 0.5f) : Tensor();
  Tensor d_ref = Tensor::empty({N, E});
  ops::moe_route_backward(cpu_ref(), s, idx, dw, dx, p, d_ref);

  const Tensor gs = arena.upload(s), gi = arena.upload(idx), gdw = arena.upload(dw);
  const Tensor gdx = extra ? arena.upload(dx) : Tensor();
  Tensor gd = arena.empty({N, E});
  ops::moe_route_backward(gpu(), gs, gi, gdw, gdx, p, gd);
  expect_close(gd, d_ref, 1e-12, (L + " dlogits").c_str());
  CHECK(arena.check());
}

TEST_CASE("gpu moe_route_backward matches the reference") {
  for (const RouteCase& c : kRouteCases)
    for (bool sigmoid : {true, false})
      for (bool norm : {true, false})
        for (bool extra : {false, true})
          for (int64_t N : {int64_t(1), int64_t(77)})
            check_route_backward(c, sigmoid, norm, extra, N);
}

TEST_CASE("gpu moe_route_backward skips out-of-range expert indices") {
  const int64_t N = 3, E = 16;
  const int K = 2;
  ops::RouteParams p;
  p.topk = K;
  Arena arena;
  const Tensor s = rand_f32({N, E}, 0.1f, 0.9f);
  Tensor idx = rand_i32({N, int64_t(K)}, 0, int(E - 1));
  idx.i32()[1] = int32_t(E);
  idx.i32()[4] = -3;
  const Tensor dw = rand_f32({N, int64_t(K)});
  Tensor gd = arena.empty({N, E});
  ops::moe_route_backward(gpu(), arena.upload(s), arena.upload(idx), arena.upload(dw), Tensor(),
                          p, gd);
  const Tensor h = download(gd);
  bool finite = true;
  for (int64_t i = 0; i < h.numel(); ++i) finite = finite && std::isfinite(h.f32()[i]);
  CHECK(finite);
  CHECK(arena.check());
}

// ---- balance loss and counts ------------------------------------------------------------------

void check_balance(const RouteCase& c, int n_seq, int seq_len,
                   const std::vector<int32_t>& lengths = {}) {
  INFO("moe_balance_loss E=" << c.E << " K=" << c.K << " n_seq=" << n_seq
                             << " seq_len=" << seq_len << " lengths=" << lengths.size());
  const int64_t N = int64_t(n_seq) * seq_len, E = c.E;
  ops::RouteParams p;
  p.n_groups = c.G;
  p.topk_groups = c.TG;
  p.topk = c.K;
  Arena arena;
  const Tensor x = rand_f32({N, E}, -3.f, 3.f);
  Tensor s = Tensor::empty({N, E}), idx = Tensor::empty({N, int64_t(c.K)}, DType::i32),
         w = Tensor::empty({N, int64_t(c.K)});
  ops::moe_route(cpu_ref(), x, Tensor(), p, s, idx, w);
  const float alpha = 0.013f;
  Tensor ds_ref = Tensor::empty({N, E}), none;
  const double l_ref =
      ops::moe_balance_loss(cpu_ref(), s, idx, n_seq, seq_len, alpha, ds_ref, lengths);

  const Tensor gs = arena.upload(s), gi = arena.upload(idx);
  Tensor gds = arena.empty({N, E});
  const double l = ops::moe_balance_loss(gpu(), gs, gi, n_seq, seq_len, alpha, gds, lengths);
  INFO("loss gpu " << l << " ref " << l_ref);
  CHECK(std::fabs(l - l_ref) <= 1e-9 * std::fabs(l_ref) + 1e-15);
  expect_close(gds, ds_ref, 1e-10, "balance dscores");
  const double l2 = ops::moe_balance_loss(gpu(), gs, gi, n_seq, seq_len, alpha, none, lengths);
  CHECK(l2 == l);   // deterministic, and the same without the gradient
  CHECK(arena.check());
}

TEST_CASE("gpu moe_balance_loss matches the reference") {
  for (const RouteCase& c : {kRouteCases[0], kRouteCases[2], kRouteCases[5]})
    for (int n_seq : {1, 3})
      for (int seq_len : {1, 37, 130}) check_balance(c, n_seq, seq_len);
  check_balance(kRouteCases[0], 4, 130, {130, 0, 65, 7});   // padded sequences
  check_balance(kRouteCases[5], 3, 37, {1, 36, 0});
}

TEST_CASE("gpu moe_count accumulates") {
  for (int64_t E : {int64_t(16), int64_t(256), int64_t(10000)}) {
    INFO("moe_count E=" << E);
    Arena arena;
    const Tensor idx = rand_i32({517, 8}, 0, int(E - 1));
    const Tensor c0 = rand_i32({E}, 0, 5);
    Tensor want = c0.clone();
    ops::moe_count(cpu_ref(), idx, want);
    Tensor gc = arena.upload(c0);
    ops::moe_count(gpu(), arena.upload(idx), gc);
    ops::moe_count(gpu(), arena.upload(idx), gc);   // twice: counts add up
    ops::moe_count(cpu_ref(), idx, want);
    const Tensor got = download(gc);
    int64_t bad = 0;
    for (int64_t e = 0; e < E; ++e) bad += got.i32()[e] != want.i32()[e];
    CHECK(bad == 0);
    CHECK(arena.check());
  }
  // Entries outside [0, E) are skipped.
  Arena arena;
  const int64_t E = 12;
  Tensor idx = rand_i32({40}, 0, int(E - 1));
  idx.i32()[3] = int32_t(E);
  idx.i32()[17] = -1;
  Tensor want = Tensor::zeros({E}, DType::i32);
  for (int64_t i = 0; i < idx.numel(); ++i)
    if (idx.i32()[i] >= 0 && idx.i32()[i] < E) want.i32()[idx.i32()[i]] += 1;
  Tensor gc = arena.zeros({E}, DType::i32);
  ops::moe_count(gpu(), arena.upload(idx), gc);
  const Tensor got = download(gc);
  int64_t bad = 0;
  for (int64_t e = 0; e < E; ++e) bad += got.i32()[e] != want.i32()[e];
  CHECK(bad == 0);
  CHECK(arena.check());
}

// (N, K) expert ids in [0, E); skewed: all but every fifth on expert E / 2.
Tensor routing(int64_t N, int64_t K, int64_t E, bool skew) {
  Tensor idx = rand_i32({N, K}, 0, int(E - 1));
  if (skew)
    for (int64_t i = 0; i < idx.numel(); ++i)
      if (i % 5 != 0) idx.i32()[i] = int32_t(E / 2);
  return idx;
}

// The MoE layer's grouping on the device (kernels/moe_sort.cuh sort_pairs_kernel) against the
// CPU op, element for element: counts, and the stable expert order of pair_src / pair_tok.
// Sizes around the kernel's 2048-pair tile and 8-pair thread runs; skewed routing (most pairs
// on one expert) and empty experts; guard bytes around the outputs.
TEST_CASE("gpu moe_sort_pairs equals the CPU's stable sort") {
  struct Case { int64_t N, K, E; bool skew; };
  for (const Case& c : {Case{1, 1, 1, false}, Case{3, 2, 8, false}, Case{341, 6, 64, false},
                        Case{1024, 2, 16, true}, Case{16384, 6, 64, false},
                        Case{2049, 8, 256, true}}) {
    CAPTURE(c.N);
    CAPTURE(c.E);
    const Tensor idx = routing(c.N, c.K, c.E, c.skew);
    const int64_t NK = c.N * c.K;
    Tensor counts = Tensor::empty({c.E}, DType::i32), src = Tensor::empty({NK}, DType::i32),
           tok = Tensor::empty({NK}, DType::i32), slot = Tensor::empty({NK}, DType::i32);
    ops::moe_sort_pairs(cpu_ref(), idx, counts, src, tok, slot);
    Arena arena;
    Tensor gc = arena.empty({c.E}, DType::i32), gs = arena.empty({NK}, DType::i32),
           gt = arena.empty({NK}, DType::i32), gp = arena.empty({NK}, DType::i32);
    std::vector<int32_t> host(size_t(c.E), -7);   // the counts copied before the sort ran
    ops::moe_sort_pairs(gpu(), arena.upload(idx), gc, gs, gt, gp, &host);
    const Tensor hc = download(gc), hs = download(gs), ht = download(gt), hp = download(gp);
    int64_t bad = 0;
    for (int64_t e = 0; e < c.E; ++e)
      bad += (hc.i32()[e] != counts.i32()[e]) + (host[size_t(e)] != counts.i32()[e]);
    for (int64_t j = 0; j < NK; ++j)
      bad += (hs.i32()[j] != src.i32()[j]) + (ht.i32()[j] != tok.i32()[j]) +
             (hp.i32()[j] != slot.i32()[j]);
    CHECK(bad == 0);
    CHECK(arena.check());
  }
}

// The FP8 experts' padded layout on the device (kernels/moe_pad.cuh, also run by the host
// emulator in test_emu_moe_pad.cpp) against the CPU op, element for element: every padded
// row's token and weight (pads: r mod N, +0), every pair's padded row both ways; empty
// experts, an expert of more than 128 pairs, one expert; guard bytes around the outputs.
TEST_CASE("gpu moe_pad_pairs equals the CPU's layout") {
  struct Case { int64_t N, K, E; bool skew; };
  for (const Case& c : {Case{1, 1, 1, false}, Case{3, 2, 8, false}, Case{341, 6, 64, false},
                        Case{1024, 2, 16, true}, Case{4096, 8, 256, false}}) {
    CAPTURE(c.N);
    CAPTURE(c.E);
    const Tensor idx = routing(c.N, c.K, c.E, c.skew);
    const int64_t NK = c.N * c.K;
    Tensor counts = Tensor::empty({c.E}, DType::i32), src = Tensor::empty({NK}, DType::i32),
           tok = Tensor::empty({NK}, DType::i32), slot = Tensor::empty({NK}, DType::i32);
    std::vector<int32_t> host;
    ops::moe_sort_pairs(cpu_ref(), idx, counts, src, tok, slot, &host);
    const auto [off, poff] = ds::test::pad_offsets(host);
    const int64_t NKp = poff.back();
    const Tensor pw = rand_f32({NK}, -1, 1);
    Tensor ptok = Tensor::empty({NKp}, DType::i32), ppw = Tensor::empty({NKp}),
           prow = Tensor::empty({NK}, DType::i32), ppair = Tensor::empty({NK}, DType::i32);
    ops::moe_pad_pairs(cpu_ref(), src, pw, c.K, off, poff, ptok, ppw, prow, ppair);
    Arena arena;
    Tensor gt = arena.empty({NKp}, DType::i32), gw = arena.empty({NKp}, DType::f32),
           gr = arena.empty({NK}, DType::i32), gp = arena.empty({NK}, DType::i32);
    ops::moe_pad_pairs(gpu(), arena.upload(src), arena.upload(pw), c.K, off, poff, gt, gw, gr,
                       gp);
    const Tensor ht = download(gt), hw = download(gw), hr = download(gr), hp = download(gp);
    CHECK(ds::test::pad_mismatches(ht.i32(), hw.f32(), hr.i32(), hp.i32(), ptok, ppw, prow,
                                   ppair) == 0);
    CHECK(arena.check());
  }
}

// The experts' rows added back into their tokens per token (kernels/moe_combine.cuh
// combine_pairs_kernel) against the CPU op, bit for bit: weighted and not, C with the 4-wide
// path (1024, 12) and without (37), K = 1, 6 and 16 (the kernel's limit), guard bytes.
TEST_CASE("gpu combine_pairs equals the CPU bit for bit") {
  struct Case { int64_t N, K, E, C; };
  for (const Case& c : {Case{5, 1, 4, 37}, Case{333, 6, 64, 1024}, Case{64, 16, 32, 12},
                        Case{1000, 8, 256, 37}})
    for (const bool weighted : {true, false}) {
      CAPTURE(c.K);
      CAPTURE(c.C);
      CAPTURE(weighted);
      const int64_t NK = c.N * c.K;
      Tensor idx = Tensor::empty({c.N, c.K}, DType::i32);   // K distinct experts a token
      for (int64_t n = 0; n < c.N; ++n)
        for (int64_t k = 0; k < c.K; ++k)
          idx.i32()[n * c.K + k] = int32_t((n * 13 + k * (c.E / c.K) + k) % c.E);
      Tensor counts = Tensor::empty({c.E}, DType::i32), src = Tensor::empty({NK}, DType::i32),
             tok = Tensor::empty({NK}, DType::i32), slot = Tensor::empty({NK}, DType::i32);
      ops::moe_sort_pairs(cpu_ref(), idx, counts, src, tok, slot);
      const Tensor rows = rand_f32({NK, c.C}, -3, 3), w = rand_f32({c.N, c.K}, -1, 1);
      const Tensor base = rand_f32({c.N, c.C}, -1, 1);
      Tensor want = base.clone();
      ops::combine_pairs(cpu_ref(), rows, slot.view({c.N, c.K}), weighted ? w : Tensor(), want);
      Arena arena;
      Tensor got = arena.upload(base);
      ops::combine_pairs(gpu(), arena.upload(rows), arena.upload(slot).view({c.N, c.K}),
                         weighted ? arena.upload(w) : Tensor(), got);
      expect_close(got, want, 0.0, "combine_pairs", 0.0);
      // more rows than pairs (the FP8 experts' padded layout): NaN pad rows after every
      // fifth row, never read
      const int64_t R = NK + NK / 5;
      Tensor padded = Tensor::empty({R, c.C}), pslot = Tensor::empty({c.N, c.K}, DType::i32);
      for (int64_t i = 0; i < padded.numel(); ++i) padded.f32()[i] = NAN;
      for (int64_t i = 0; i < NK; ++i)
        std::memcpy(padded.f32() + (i + i / 5) * c.C, rows.f32() + i * c.C,
                    size_t(c.C) * sizeof(float));
      for (int64_t p = 0; p < NK; ++p) pslot.i32()[p] = slot.i32()[p] + slot.i32()[p] / 5;
      Tensor got_p = arena.upload(base);
      ops::combine_pairs(gpu(), arena.upload(padded), arena.upload(pslot),
                         weighted ? arena.upload(w) : Tensor(), got_p);
      expect_close(got_p, want, 0.0, "combine_pairs, padded rows", 0.0);
      CHECK(arena.check());
    }
}

}  // namespace
