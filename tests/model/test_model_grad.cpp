// Whole-model gradient check: the manual backward of Transformer::forward_backward against
// central finite differences of forward_loss, for every parameter tensor (sampled coordinates
// plus each tensor's largest gradient, and one random direction over all parameters at once),
// in two micro configurations that together take every branch: q_lora / q_proj, grouped /
// ungrouped routing, renormalised / raw weights, 1 / 2 shared experts, YaRN on / off, MTP depth
// 1 / 2, pretraining batch / SFT batch (segments, restarted positions, fractional loss mask).
// The balance loss weight is raised to 0.1 so that its gradient into the router is visible.
// Coordinates whose perturbation changes any expert selection are skipped (and counted).
// reference: docs/model.md; llm.c test_gpt2 (gradient comparison with a stated tolerance).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "ds/core/rng.hpp"
#include "ds/ops/ops.hpp"
#include "model_test_util.hpp"

using namespace ds;
using namespace ds::model;
using namespace ds::model::testing;

namespace {

constexpr float kEps = 2e-3f;        // perturbation (F32 model; small so routing rarely flips)
constexpr double kAtol = 2e-4;       // |fd - analytic| <= kAtol + kRtol * max(|fd|, |analytic|)
constexpr double kRtol = 2e-2;

ops::Context ref_ctx() {
  ops::Context c;
  c.impl = ops::Impl::reference;
  return c;
}

Batch pretrain_batch(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Batch b;
  b.tokens = random_tokens(B, T, V, seed);
  return b;
}

// Two packed samples per row, positions restarting per sample, weights in {0, 0.5, 1, 2}; row 1
// ends in 2 padding tokens (lengths 7, 5: its own segment, no target), as ds-sft packs.
Batch sft_batch(int64_t V, uint64_t seed) {
  const int64_t B = 2, T = 6;
  Batch b = pretrain_batch(B, T, V, seed);
  b.segments = Tensor::empty({B, T}, DType::i32);
  b.positions = Tensor::empty({B, T}, DType::i32);
  b.loss_mask = Tensor::empty({B, T});
  const int32_t seg[12] = {0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1};
  const int32_t pos[12] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4, 0};
  const float mask[12] = {0, 1, 0.5f, 0, 2, 1, 1, 1, 0.5f, 1, 0, 0};
  std::copy(seg, seg + 12, b.segments.i32());
  std::copy(pos, pos + 12, b.positions.i32());
  std::copy(mask, mask + 12, b.loss_mask.f32());
  b.lengths = {7, 5};
  return b;
}

struct Stats { int checked = 0, skipped = 0, failed = 0, zero_tensors = 0; double worst = 0; };

// Central difference of the total loss for p[c] (in double from the F32 values actually set).
// Returns false when the routing changes on either side.
bool central_diff(Transformer& model, const ops::Context& ctx, const Batch& batch,
                  const LossWeights& lw, float* p, int64_t c,
                  const std::vector<std::vector<int32_t>>& route0, double& fd) {
  const float orig = p[c];
  p[c] = orig + kEps;
  const double up = double(p[c]);
  const StepResult rp = model.forward_loss(ctx, batch, lw);
  p[c] = orig - kEps;
  const double dn = double(p[c]);
  const StepResult rm = model.forward_loss(ctx, batch, lw);
  p[c] = orig;
  fd = (rp.loss - rm.loss) / (up - dn);
  return routes(rp) == route0 && routes(rm) == route0;
}

// Tokens routed to the expert a parameter belongs to (-1: not a routed expert's parameter).
int64_t expert_tokens(const Transformer& model, const StepResult& r, const ParamInfo& info) {
  if (info.expert < 0) return -1;
  const auto names = model.moe_layer_names();
  for (size_t l = 0; l < names.size(); ++l)
    if (names[l] == "model.layers." + std::to_string(info.layer) + ".mlp")
      return r.expert_counts[l][size_t(info.expert)];
  return -1;
}

void check_param(Transformer& model, const ops::Context& ctx, const Batch& batch,
                 const LossWeights& lw, Param& prm, const StepResult& r0, Rng& rng, Stats& st) {
  float* v = prm.value.f32();
  const float* g = prm.grad.f32();
  const int64_t n = prm.value.numel();
  CAPTURE(prm.info.name);
  // Every tensor receives a gradient, except routed experts: zero when idle (no token), and
  // possibly zero when all their tokens carry zero loss weight (SFT mask).
  const int64_t tokens = expert_tokens(model, r0, prm.info);
  const bool nonzero = ops::sum_squares(ctx, prm.grad) > 0;
  if (tokens < 0) CHECK_MESSAGE(nonzero, "no gradient reached the tensor");
  if (tokens == 0) CHECK_MESSAGE(!nonzero, "gradient into an idle expert");
  st.zero_tensors += !nonzero;
  const auto route0 = routes(r0);
  std::vector<int64_t> coords{int64_t(std::max_element(g, g + n, [](float a, float b) {
                                return std::fabs(a) < std::fabs(b);
                              }) - g)};
  for (int i = 0; i < 5; ++i) coords.push_back(int64_t(rng.below(uint64_t(n))));
  for (int64_t c : coords) {
    double fd = 0;
    if (!central_diff(model, ctx, batch, lw, v, c, route0, fd)) {
      ++st.skipped;
      continue;
    }
    const double an = g[c], err = std::fabs(fd - an);
    const double tol = kAtol + kRtol * std::max(std::fabs(fd), std::fabs(an));
    ++st.checked;
    st.worst = std::max(st.worst, err / tol);
    if (err > tol) {
      ++st.failed;
      CHECK_MESSAGE(err <= tol, "coordinate ", c, ": analytic ", an, " finite-difference ", fd);
    }
  }
}

// Directional derivative along a random direction over every parameter at once.
void check_direction(Transformer& model, ParamStore& store, const ops::Context& ctx,
                     const Batch& batch, const LossWeights& lw,
                     const std::vector<std::vector<int32_t>>& route0) {
  Rng rng(5, 5);
  std::vector<std::vector<float>> dir, orig;
  double analytic = 0;
  for (Param& p : store.params()) {
    dir.emplace_back(size_t(p.value.numel()));
    orig.emplace_back(p.value.f32(), p.value.f32() + p.value.numel());
    for (int64_t i = 0; i < p.value.numel(); ++i) {
      dir.back()[size_t(i)] = float(rng.normal());
      analytic += double(dir.back()[size_t(i)]) * double(p.grad.f32()[i]);
    }
  }
  auto shift = [&](float s) {
    size_t k = 0;
    for (Param& p : store.params()) {
      for (int64_t i = 0; i < p.value.numel(); ++i)
        p.value.f32()[i] = orig[k][size_t(i)] + s * dir[k][size_t(i)];
      ++k;
    }
  };
  // The step has norm ~h * sqrt(#params): shrink it until no expert selection changes.
  for (float h : {2e-4f, 1e-4f, 5e-5f, 2e-5f}) {
    shift(h);
    const StepResult rp = model.forward_loss(ctx, batch, lw);
    shift(-h);
    const StepResult rm = model.forward_loss(ctx, batch, lw);
    shift(0);
    if (routes(rp) != route0 || routes(rm) != route0) continue;
    const double fd = (rp.loss - rm.loss) / (2.0 * double(h));
    MESSAGE("direction (h ", h, "): analytic ", analytic, " finite-difference ", fd);
    CHECK(std::fabs(fd - analytic) <= 2e-3 + 1e-2 * std::fabs(analytic));
    return;
  }
  FAIL("routing changed for every step size of the directional check");
}

void grad_check(const ModelArgs& a, const Batch& batch, const LossWeights& lw, uint64_t seed) {
  ParamStore store;
  Transformer model(a, store);
  store.init(seed);
  randomize_biases(store, 0.05, seed);
  const ops::Context ctx = ref_ctx();
  const StepResult r0 = model.forward_backward(ctx, batch, lw, 1.0f);
  const StepResult rl = model.forward_loss(ctx, batch, lw);
  CHECK(rl.loss == r0.loss);
  CHECK(r0.loss_mtp > 0);
  CHECK(r0.loss_balance > 0);
  CHECK(r0.loss == doctest::Approx(r0.loss_main + r0.loss_mtp + r0.loss_balance).epsilon(1e-12));
  const auto route0 = routes(r0);
  Rng rng(seed, 3);
  Stats st;
  for (Param& p : store.params()) check_param(model, ctx, batch, lw, p, r0, rng, st);
  CHECK(st.zero_tensors <= 3);   // at most one expert without gradient: experts really checked
  MESSAGE("gradient check: ", st.checked, " coordinates checked, ", st.skipped,
          " skipped (routing changed), ", st.failed, " failed; worst err/tol ", st.worst);
  CHECK(st.skipped * 10 < st.checked);   // the check must actually check
  check_direction(model, store, ctx, batch, lw, route0);
}

// ||g2 - g1|| / ||g1|| of two stores' gradients of the same tensor.
double rel_diff(const Param& p1, const Param& p2) {
  const ops::Context ctx = ref_ctx();
  Tensor d = p1.grad.clone();
  ops::scale_(ctx, d, -1.0f);
  ops::add_(ctx, d, p2.grad);
  const double n1 = std::sqrt(ops::sum_squares(ctx, p1.grad));
  return std::sqrt(ops::sum_squares(ctx, d)) / std::max(n1, 1e-30);
}

}  // namespace

TEST_CASE("gradient check: micro config, pretraining batch") {
  const ModelArgs a = micro_args();
  grad_check(a, pretrain_batch(2, 6, a.vocab_size, 1), LossWeights{0.3f, 0.1f}, 1);
}

TEST_CASE("gradient check: q_proj, ungrouped raw weights, 2 shared, MTP 2, SFT batch") {
  ModelArgs a = micro_args();
  a.q_lora_rank = 0;
  a.n_expert_groups = 1;
  a.n_limited_groups = 1;
  a.norm_topk_prob = false;
  a.route_scale = 1.5;
  a.n_shared_experts = 2;
  a.n_dense_layers = 0;
  a.n_mtp_layers = 2;
  a.yarn = false;
  grad_check(a, sft_batch(a.vocab_size, 2), LossWeights{0.5f, 0.1f}, 2);
}

TEST_CASE("padding after lengths is inert: other pad tokens, the same loss and gradients") {
  // Rows padded as ds-rl and ds-sft pad them (no target in or predicting the padding): with
  // lengths the padding's tokens change nothing (the balance losses skip them, main and MTP);
  // without lengths they enter the balance losses, which the last check shows.
  const ModelArgs a = micro_args();
  const ops::Context ctx = ref_ctx();
  auto run = [&](const Batch& b, std::vector<Tensor>& grads) {
    ParamStore s;
    Transformer m(a, s);
    s.init(6);
    s.alloc_grads();
    s.zero_grads();
    const StepResult r = m.forward_backward(ctx, b, LossWeights{0.3f, 0.1f}, 1.0f);
    for (const auto& p : s.params()) grads.push_back(p.grad.clone());
    return r;
  };
  const int64_t B = 3, T = 9;
  Batch b = pretrain_batch(B, T, a.vocab_size, 8);
  b.loss_mask = Tensor::zeros({B, T});
  b.lengths = {10, 6, 3};
  for (int64_t r = 0; r < B; ++r)
    for (int64_t j = 0; j + 1 < b.lengths[size_t(r)]; ++j) b.loss_mask.f32()[r * T + j] = 1;
  Batch c = b;
  c.tokens = b.tokens.clone();
  for (int64_t r = 0; r < B; ++r)
    for (int64_t j = b.lengths[size_t(r)]; j <= T; ++j)
      c.tokens.i32()[r * (T + 1) + j] = int32_t((j * 5 + r) % a.vocab_size);
  std::vector<Tensor> gb, gc;
  const StepResult rb = run(b, gb), rc = run(c, gc);
  CHECK(rb.loss_balance > 0);
  CHECK(rc.loss_balance == doctest::Approx(rb.loss_balance).epsilon(1e-6));
  CHECK(rc.loss == doctest::Approx(rb.loss).epsilon(1e-6));
  // the expert counts are those of the real positions: K (len_b - 1 - k) per row at depth k
  CHECK(rc.expert_counts == rb.expert_counts);
  REQUIRE(rb.expert_counts.size() == 2);   // the main MoE layer, then MTP depth 1
  for (int64_t k = 0; k < 2; ++k) {
    int64_t routed = 0, want = 0;
    for (const int32_t c : rb.expert_counts[size_t(k)]) routed += c;
    for (const int32_t L : b.lengths) want += a.n_activated_experts * (L - 1 - k);
    CHECK(routed == want);
  }
  for (size_t i = 0; i < gb.size(); ++i) {
    double d = 0, n = 0;
    for (int64_t k = 0; k < gb[i].numel(); ++k) {
      d = std::max(d, double(std::fabs(gb[i].f32()[k] - gc[i].f32()[k])));
      n = std::max(n, double(std::fabs(gb[i].f32()[k])));
    }
    CHECK(d <= 1e-5 * n + 1e-9);
  }
  b.lengths.clear();
  c.lengths.clear();
  std::vector<Tensor> g0, g1;
  CHECK(run(b, g0).loss_balance != doctest::Approx(run(c, g1).loss_balance).epsilon(1e-4));
}

TEST_CASE("grad_scale and accumulation: two half-scaled micro-batches equal one full") {
  const ModelArgs a = micro_args();
  ParamStore s1, s2;
  Transformer m1(a, s1), m2(a, s2);
  s1.init(4);
  s2.init(4);
  const Batch b = pretrain_batch(2, 6, a.vocab_size, 4);
  const ops::Context ctx = ref_ctx();
  m1.forward_backward(ctx, b, LossWeights{}, 1.0f);
  m2.forward_backward(ctx, b, LossWeights{}, 0.5f);
  m2.forward_backward(ctx, b, LossWeights{}, 0.5f);
  for (size_t i = 0; i < s1.params().size(); ++i) {
    CAPTURE(s1.params()[i].info.name);
    CHECK(rel_diff(s1.params()[i], s2.params()[i]) <= 1e-5);
  }
}

TEST_CASE("forward_logits agrees with the main loss; optimised ops agree with reference") {
  const ModelArgs a = micro_args();
  ParamStore store;
  Transformer model(a, store);
  store.init(6);
  const int64_t B = 2, T = 6, V = a.vocab_size;
  const Batch b = pretrain_batch(B, T, V, 6);
  const StepResult r = model.forward_loss(ref_ctx(), b, LossWeights{});
  Tensor x = Tensor::empty({B, T}, DType::i32), logits;
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < T; ++t) x.i32()[i * T + t] = b.tokens.i32()[i * (T + 1) + t];
  model.forward_logits(ref_ctx(), x, logits);
  REQUIRE(logits.shape() == Shape{B, T, V});
  double ce = 0;
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < T; ++t) {
      const float* l = logits.f32() + (i * T + t) * V;
      double mx = *std::max_element(l, l + V), z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(double(l[v]) - mx);
      ce += std::log(z) + mx - double(l[b.tokens.i32()[i * (T + 1) + t + 1]]);
    }
  CHECK(ce / double(B * T) == doctest::Approx(r.loss_main).epsilon(1e-5));
  CHECK(r.n_targets == B * T);

  // The optimised CPU path gives the same loss and gradients within float tolerance.
  ParamStore s2;
  Transformer m2(a, s2);
  s2.init(6);
  store.alloc_grads();
  const StepResult rr = model.forward_backward(ref_ctx(), b, LossWeights{}, 1.0f);
  ops::Context opt;
  opt.impl = ops::Impl::optimized;
  const StepResult ro = m2.forward_backward(opt, b, LossWeights{}, 1.0f);
  CHECK(ro.loss == doctest::Approx(rr.loss).epsilon(1e-5));
  // F32 kernels with different accumulation orders: ~1e-4 relative; a wrong gradient is O(1).
  for (size_t i = 0; i < store.params().size(); ++i) {
    CAPTURE(store.params()[i].info.name);
    CHECK(rel_diff(store.params()[i], s2.params()[i]) <= 1e-3);
  }
}

TEST_CASE("chunked logits: loss heads in row chunks give the whole-batch loss and gradients") {
  const ModelArgs a = micro_args();
  ParamStore s1, s2;
  Transformer m1(a, s1), m2(a, s2);
  s1.init(9);
  s2.init(9);
  s1.alloc_grads();
  s2.alloc_grads();
  m2.set_logit_chunk(5 * a.vocab_size);   // 5 rows at a time: several chunks and a partial one
  const Batch b = sft_batch(a.vocab_size, 9);   // weighted rows: the scale_rows path per chunk
  const StepResult r1 = m1.forward_backward(ref_ctx(), b, LossWeights{}, 1.0f);
  const StepResult r2 = m2.forward_backward(ref_ctx(), b, LossWeights{}, 1.0f);
  // the weighted sums are F32 dot products per chunk: equal to float rounding
  CHECK(r2.loss == doctest::Approx(r1.loss).epsilon(1e-6));
  CHECK(r2.loss_mtp == doctest::Approx(r1.loss_mtp).epsilon(1e-6));
  for (size_t i = 0; i < s1.params().size(); ++i) {
    CAPTURE(s1.params()[i].info.name);
    CHECK(rel_diff(s1.params()[i], s2.params()[i]) <= 1e-6);
  }
}

TEST_CASE("grouped experts: grouped GEMMs over expert-sorted rows equal the per-expert loop") {
  for (const ops::Precision p : {ops::Precision::fp32, ops::Precision::bf16}) {
    CAPTURE(int(p));
    ModelArgs a = micro_args();
    a.n_routed_experts = 8;   // with 2 of 8 chosen per token some experts get no rows
    a.n_expert_groups = 2;
    ParamStore s1, s2;
    Transformer m1(a, s1), m2(a, s2);
    s1.init(12);
    s2.init(12);
    s1.alloc_grads();
    s2.alloc_grads();
    m1.set_grouped_experts(0);
    m2.set_grouped_experts(1);
    ops::Context ctx = ref_ctx();
    ctx.linear.mode = p;
    const Batch b = sft_batch(a.vocab_size, 12);
    const StepResult r1 = m1.forward_backward(ctx, b, LossWeights{}, 1.0f);
    const StepResult r2 = m2.forward_backward(ctx, b, LossWeights{}, 1.0f);
    CHECK(r2.loss == doctest::Approx(r1.loss).epsilon(1e-6));
    CHECK(r2.expert_counts == r1.expert_counts);
    for (size_t i = 0; i < s1.params().size(); ++i) {
      CAPTURE(s1.params()[i].info.name);
      CHECK(rel_diff(s1.params()[i], s2.params()[i]) <= 1e-5);
    }
  }
}

namespace {

// Two models with the same weights and gradients allocated: one step each, A against B, each
// op-profiled.
struct Twin {
  ParamStore s1, s2;
  Transformer m1, m2;
  ops::Profiler p1, p2;
  StepResult r1, r2;
  Twin(const ModelArgs& a, uint64_t seed) : m1(a, s1), m2(a, s2) {
    s1.init(seed);
    s2.init(seed);
    s1.alloc_grads();
    s2.alloc_grads();
  }
  void step(ops::Context c1, ops::Context c2, const Batch& b) {
    c1.prof = &p1;
    c2.prof = &p2;
    r1 = m1.forward_backward(c1, b, LossWeights{}, 1.0f);
    r2 = m2.forward_backward(c2, b, LossWeights{}, 1.0f);
  }
};

int64_t op_calls(const ops::Profiler& p, const char* op) {
  for (const ops::Profiler::Entry& e : p.entries())
    if (std::string(e.op) == op) return e.calls;
  return 0;
}

}  // namespace

// q, k, v handed to the attention as BF16 codes (ops::Context::attention_inputs; on by default
// where the GPU's tensor-core attention reads them so): forced on the CPU, a bf16 step attends
// over the rounded values, so the loss and gradients move slightly but stay close, and MLA
// rounds q once per layer in its RoPE pass (k and v come out of mla_kv_split as codes).
TEST_CASE("attention inputs as BF16 codes: a bf16 step attends over the rounded q, k, v") {
  const ModelArgs a = micro_args();
  Twin t(a, 21);
  ParamStore &s1 = t.s1, &s2 = t.s2;
  ops::Context c1 = ref_ctx(), c2 = ref_ctx();
  c1.impl = c2.impl = ops::Impl::optimized;
  c1.linear.mode = c2.linear.mode = ops::Precision::bf16;
  c1.attention_inputs = 0;
  c2.attention_inputs = 1;
  t.step(c1, c2, sft_batch(a.vocab_size, 21));
  const StepResult &r1 = t.r1, &r2 = t.r2;
  const ops::Profiler &p1 = t.p1, &p2 = t.p2;
  CHECK(r2.loss == doctest::Approx(r1.loss).epsilon(1e-2));
  CHECK(r2.loss != r1.loss);   // the rounding happened
  double worst = 0;
  for (size_t i = 0; i < s1.params().size(); ++i)
    worst = std::max(worst, rel_diff(s1.params()[i], s2.params()[i]));
  CHECK(worst > 0);
  CHECK(worst < 0.1);
  const int64_t mla_layers = a.n_layers + a.n_mtp_layers;
  // q rotated and rounded in one pass per layer (rope_tail_codes), no separate rounding
  CHECK(op_calls(p2, "bf16_round") == op_calls(p1, "bf16_round"));
  CHECK(op_calls(p2, "rope_tail_codes") == mla_layers);
  CHECK(op_calls(p1, "rope_tail_codes") == 0);
  CHECK(op_calls(p2, "mla_kv_split") == op_calls(p1, "mla_kv_split"));
}

// Sums into existing tensors by the GEMM itself (ops::Context::gemm_accumulate, on by default
// on the GPU): MLA's q path into the kv path's input gradient, the router's input gradient into
// the FFN's, the non-stacked MLP's up projection into the gate's. Forced on the CPU: the same
// loss, gradients within the summation-order bound, and one add_ fewer per MLA and per MoE
// layer (with gate/up stacked; apart, each MLP's too).
TEST_CASE("GEMM accumulation: the input gradients added by the GEMMs match the temporaries") {
  for (const ops::Precision p : {ops::Precision::fp32, ops::Precision::bf16})
    for (const int stacked : {1, 0}) {
      CAPTURE(int(p));
      CAPTURE(stacked);
      const ModelArgs a = micro_args();
      Twin t(a, 31);
      ParamStore &s1 = t.s1, &s2 = t.s2;
      ops::Context c1 = ref_ctx(), c2 = ref_ctx();
      c1.impl = c2.impl = ops::Impl::optimized;
      c1.linear.mode = c2.linear.mode = p;
      c1.stacked_gate_up = c2.stacked_gate_up = int8_t(stacked);
      c1.gemm_accumulate = 0;
      c2.gemm_accumulate = 1;
      CHECK_FALSE(ops::gemm_accumulates(c1));
      CHECK(ops::gemm_accumulates(c2));
      t.step(c1, c2, sft_batch(a.vocab_size, 31));
      CHECK(t.r2.loss == t.r1.loss);   // the forward pass is untouched
      double worst = 0;
      for (size_t i = 0; i < s1.params().size(); ++i) {
        CAPTURE(s1.params()[i].info.name);
        CHECK(rel_diff(s1.params()[i], s2.params()[i]) <= 1e-5);
        worst = std::max(worst, rel_diff(s1.params()[i], s2.params()[i]));
      }
      MESSAGE("largest relative gradient difference ", worst);
      const int64_t mla = a.n_layers + a.n_mtp_layers;
      const int64_t moe = a.n_layers - a.n_dense_layers + a.n_mtp_layers;
      const int64_t fewer = op_calls(t.p1, "add_") - op_calls(t.p2, "add_");
      if (stacked) CHECK(fewer == mla + moe);
      else CHECK(fewer > mla + moe);
    }
}
