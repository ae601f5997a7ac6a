// The policy-gradient entry points of model::Transformer with the GRPO loss: token_scores ==
// log-softmax of forward_logits / the policy temperature at the scored targets; equal
// rewards (beta = 0, no balance loss) give an exactly zero gradient everywhere; the MTP chain
// is skipped (zero MTP gradients, zero counts, one count vector per MoE layer);
// forward_backward_policy's dlogp matches finite differences of the loss through the whole
// model, at temperature 1 and others.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "../model/model_test_util.hpp"
#include "ds/rl/grpo.hpp"

using namespace ds;
using namespace ds::model;
using namespace ds::model::testing;
using namespace ds::rl;

namespace {

// Two rows: prompt of 3 tokens + completion of 4 (row 0) / 2 (row 1, then padding).
Batch policy_batch(const ModelArgs& a) {
  Batch b;
  b.tokens = random_tokens(2, 6, a.vocab_size, 5);
  b.loss_mask = Tensor::zeros({2, 6});
  for (int t = 2; t < 6; ++t) b.loss_mask.f32()[t] = 1;
  for (int t = 2; t < 4; ++t) b.loss_mask.f32()[6 + t] = 1;
  return b;
}
std::vector<GrpoSeq> seqs_of(const std::vector<double>& adv) {
  return {{2, 4, adv[0], 1.0 / 8, nullptr, nullptr}, {8, 2, adv[1], 1.0 / 4, nullptr, nullptr}};
}

}  // namespace

TEST_CASE("token_scores: log-softmax of the main logits / temperature at the scored targets") {
  ModelArgs a = micro_args();
  ParamStore store;
  Transformer model(a, store);
  store.init(3);
  ops::Context ctx;
  const Batch b = policy_batch(a);
  Tensor x = Tensor::empty({2, 6}, DType::i32), logits;
  for (int r = 0; r < 2; ++r)
    for (int t = 0; t < 6; ++t) x.i32()[r * 6 + t] = b.tokens.i32()[r * 7 + t];
  model.forward_logits(ctx, x, logits);
  const int64_t V = a.vocab_size;
  for (const double temp : {1.0, 0.7, 1.6}) {
    CAPTURE(temp);
    model.set_policy_temperature(float(temp));
    const TokenScores sc = model.token_scores(ctx, b);
    for (int i = 0; i < 12; ++i) {
      std::vector<double> row(static_cast<size_t>(V));
      for (int64_t v = 0; v < V; ++v) row[size_t(v)] = logits.f32()[i * V + v] / float(temp);
      double mx = row[0], z = 0, h = 0;
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, row[size_t(v)]);
      for (int64_t v = 0; v < V; ++v) z += std::exp(row[size_t(v)] - mx);
      for (int64_t v = 0; v < V; ++v) {
        const double p = std::exp(row[size_t(v)] - mx) / z;
        h -= p * std::log(p);
      }
      const int32_t y = b.tokens.i32()[(i / 6) * 7 + i % 6 + 1];
      if (b.loss_mask.f32()[i] != 0) {
        CHECK(sc.logp[size_t(i)] ==
              doctest::Approx(row[size_t(y)] - mx - std::log(z)).epsilon(1e-5));
        CHECK(sc.entropy[size_t(i)] == doctest::Approx(h).epsilon(1e-5));
      } else {
        CHECK(sc.logp[size_t(i)] == 0.0f);
      }
    }
  }
}

TEST_CASE("policy gradient: equal rewards give exactly zero gradients (beta 0, alpha 0)") {
  ModelArgs a = micro_args();
  ParamStore store;
  Transformer model(a, store);
  store.init(4);
  ops::Context ctx;
  const auto adv = group_advantages(std::vector<double>{0.1, 0.1}, 2, 1e-4);
  REQUIRE(adv == std::vector<double>{0, 0});
  const auto seqs = seqs_of(adv);
  const GrpoOptions o{0.2, 0.0, 1e-4};
  store.alloc_grads();
  store.zero_grads();
  const StepResult r = model.forward_backward_policy(
      ctx, policy_batch(a),
      [&](const TokenScores& sc, std::vector<float>& d) {
        GrpoStats st;
        return grpo_loss(o, seqs, sc.logp, d, st);
      },
      0.0f, 1.0f);
  CHECK(r.loss == 0.0);
  REQUIRE(int(r.expert_counts.size()) == model.n_moe_layers());
  for (const Param& p : store.params())
    for (int64_t i = 0; i < p.grad.numel(); ++i)
      if (p.grad.f32()[i] != 0.0f) FAIL("gradient of " << p.info.name << " is not zero");
}

TEST_CASE("policy gradient: MTP skipped, counts well-formed, dlogp through the model") {
  ModelArgs a = micro_args();
  ParamStore store;
  Transformer model(a, store);
  store.init(5);
  randomize_biases(store, 0.05, 2);
  ops::Context ctx;
  ctx.impl = ops::Impl::reference;
  const Batch b = policy_batch(a);
  const auto seqs = seqs_of({0.9, -1.1});
  const GrpoOptions o{0.2, 0.0, 1e-4};
  auto run = [&](bool train, std::vector<GrpoSeq> q) {
    double L = 0;
    auto fn = [&](const TokenScores& sc, std::vector<float>& d) {
      GrpoStats st;
      return grpo_loss(o, q, sc.logp, d, st);
    };
    if (train) {
      store.zero_grads();
      L = model.forward_backward_policy(ctx, b, fn, 0.0f, 1.0f).loss;
    } else {
      const TokenScores sc = model.token_scores(ctx, b);
      std::vector<float> d(sc.logp.size());
      GrpoStats st;
      L = grpo_loss(o, q, sc.logp, d, st);
    }
    return L;
  };
  store.alloc_grads();
  const StepResult r0 = model.forward_backward_policy(
      ctx, b, [&](const TokenScores& sc, std::vector<float>& d) {
        GrpoStats st;
        return grpo_loss(o, seqs, sc.logp, d, st);
      }, 0.0f, 1.0f);
  REQUIRE(int(r0.expert_counts.size()) == model.n_moe_layers());
  const auto names = model.moe_layer_names();
  int64_t mtp_total = 0;
  for (int32_t c : r0.expert_counts.back()) mtp_total += c;
  CHECK(mtp_total == 0);                                    // the MTP layer's MoE did not run
  for (const Param& p : store.params())
    if (p.info.layer >= a.n_layers)
      for (int64_t i = 0; i < p.grad.numel(); ++i) REQUIRE(p.grad.f32()[i] == 0.0f);
  // finite differences of the GRPO loss in a few coordinates of two weights, pi_old fixed at
  // the unperturbed policy (rho = 1 there, within the clip range nearby); at temperature 1 and
  // at the temperatures that sampling uses (the scores are of logits / T)
  for (const float temp : {1.0f, 0.6f, 1.5f}) {
    CAPTURE(temp);
    model.set_policy_temperature(temp);
    const TokenScores base = model.token_scores(ctx, b);
    std::vector<GrpoSeq> fixed = seqs;
    for (GrpoSeq& q : fixed) q.logp_old = base.logp.data() + q.offset;
    run(true, fixed);
    for (const std::string name : {"lm_head.weight", "model.layers.0.self_attn.q_b_proj.weight"}) {
      Param& p = store.get(name);
      std::vector<float> g(p.grad.f32(), p.grad.f32() + p.grad.numel());
      for (int64_t i : {int64_t(0), p.value.numel() / 3, p.value.numel() - 1}) {
        const float w0 = p.value.f32()[i];
        const float h = 3e-3f;
        p.value.f32()[i] = w0 + h;
        const double lp = run(false, fixed);
        p.value.f32()[i] = w0 - h;
        const double lm = run(false, fixed);
        p.value.f32()[i] = w0;
        const double num = (lp - lm) / (2 * double(h));
        INFO(std::string(name) << "[" << i << "] analytic " << g[size_t(i)] << " numeric " << num);
      CHECK(std::fabs(g[size_t(i)] - num) <= 2e-3 * std::max(1.0, std::fabs(num)) + 2e-4);
      }
    }
  }
}

TEST_CASE("forward_backward with mtp_lambda 0: MTP chain skipped, counts per layer") {
  ModelArgs a = micro_args();
  ParamStore store;
  Transformer model(a, store);
  store.init(6);
  ops::Context ctx;
  Batch b;
  b.tokens = random_tokens(2, 8, a.vocab_size, 9);
  const StepResult r = model.forward_backward(ctx, b, LossWeights{0.0f, 0.01f}, 1.0f);
  REQUIRE(int(r.expert_counts.size()) == model.n_moe_layers());
  CHECK(r.loss_mtp == 0.0);
  REQUIRE(r.expert_counts.back().size() == size_t(a.n_routed_experts));
  for (int32_t c : r.expert_counts.back()) CHECK(c == 0);
  const StepResult with = model.forward_loss(ctx, b, LossWeights{0.3f, 0.01f});
  CHECK(with.loss_main == r.loss_main);                 // the main model does not see the skip
  CHECK(with.loss_mtp > 0.0);
  model.update_router_bias(r.expert_counts, 0.01f);   // well-formed: accepted
}

TEST_CASE("policy head: chunked logits give the same scores, loss and gradients") {
  ModelArgs a = micro_args();
  ParamStore s1, s2;
  Transformer m1(a, s1), m2(a, s2);
  s1.init(6);
  s2.init(6);
  s1.alloc_grads();
  s2.alloc_grads();
  m2.set_logit_chunk(5 * a.vocab_size);   // several chunks and a partial one
  const ops::Context ctx;
  auto fn = [](const TokenScores& sc, std::vector<float>& d) {   // L = sum_i c_i logp_i
    double L = 0;
    for (size_t i = 0; i < sc.logp.size(); ++i) {
      const float c = 0.1f * float(int(i % 7) - 3);
      L += double(c) * sc.logp[i];
      d[i] = c;
    }
    return L;
  };
  TokenScores t1, t2;
  const StepResult r1 = m1.forward_backward_policy(ctx, policy_batch(a), fn, 0.0f, 1.0f, &t1);
  const StepResult r2 = m2.forward_backward_policy(ctx, policy_batch(a), fn, 0.0f, 1.0f, &t2);
  CHECK(r2.loss == doctest::Approx(r1.loss).epsilon(1e-6));
  REQUIRE(t2.logp.size() == t1.logp.size());
  for (size_t i = 0; i < t1.logp.size(); ++i) {   // the GEMM of a row block may round apart
    CHECK(t2.logp[i] == doctest::Approx(t1.logp[i]).epsilon(1e-5));
    CHECK(t2.entropy[i] == doctest::Approx(t1.entropy[i]).epsilon(1e-5));
  }
  for (size_t i = 0; i < s1.params().size(); ++i) {
    const Param &p = s1.params()[i], &q = s2.params()[i];
    double num = 0, den = 0;
    for (int64_t j = 0; j < p.grad.numel(); ++j) {
      const double x = q.grad.f32()[j], y = p.grad.f32()[j];
      num += (x - y) * (x - y);
      den += y * y;
    }
    CAPTURE(p.info.name);
    CHECK(std::sqrt(num) <= 1e-6 * std::sqrt(den) + 1e-12);
  }
}
