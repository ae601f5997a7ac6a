// ds-rl's step after the rewards (lib/rl/rl_step.cpp: make_micros, reference_logprobs,
// update), checked against an independent layout: every completion scored alone, unpadded,
// through forward_logits (log-softmax of logits / T at o_t). That catches a shifted or
// mixed-up offset even when the policy and the reference share it. Then:
//   - pi_old: update 0 records the log-probs of the weights that sampled; update 1 takes its
//     ratios against them (its loss, KL and clip count equal grpo_loss on the independent
//     scores of the updated weights, with some tokens clipped);
//   - micro-batch invariance: 1, 4 (a remainder of 2) or all 6 completions per forward give
//     the same report and the same weights after 2 updates, with the balance loss on (its
//     rows are prompt + completion: padding, which differs per micro-batch, is left out).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../../lib/rl/rl_internal.hpp"
#include "../model/model_test_util.hpp"
#include "ds/core/rng.hpp"
#include "ds/rl/grpo.hpp"
#include "ds/train/optimizer.hpp"

using namespace ds;
using namespace ds::rl;
using namespace ds::rl::detail;

namespace {

constexpr float kTemp = 0.8f;

RlOptions options(int64_t micro_batch) {
  RlOptions o;
  o.prompts_per_step = 2;
  o.group_size = 3;
  o.updates = 2;
  o.micro_batch_size = micro_batch;
  o.lr = 0.05;
  o.temperature = kTemp;
  o.grpo.beta = 0.05;
  o.grpo.clip_eps = 0.05;
  o.balance_alpha = 0.05;
  // a large eps makes the update a smooth function of the gradient (no sign(g) steps for
  // coordinates whose gradient is rounding noise), so runs can be compared closely
  o.optimizer = train::OptimizerOptions{0.9f, 0.95f, 1e-3f, 0.0f, 0.0f, false};
  return o;
}

model::Pretrained micro_model(uint64_t seed) {
  model::Pretrained p;
  p.args = model::testing::micro_args();
  p.store = std::make_unique<model::ParamStore>();
  p.model = std::make_unique<model::Transformer>(p.args, *p.store);
  p.store->init(seed);
  p.model->set_policy_temperature(kTemp);
  return p;
}

// A run of 2 prompts (3 and 5 tokens) x 3 completions (1 to 6 tokens), random ids, with
// advantages from distinct rewards.
struct Fixture {
  RlOptions o;
  Run r;
  std::vector<Sample> samples;
  explicit Fixture(int64_t micro_batch) : o(options(micro_batch)), r(o) {
    r.policy = micro_model(21);
    r.ref = micro_model(22);
    r.policy.store->alloc_grads();
    r.opt = std::make_unique<train::AdamW>(*r.policy.store, o.optimizer);
    r.ctx.threads = 1;
    const int64_t V = r.policy.args.vocab_size;
    Rng rng(5, 1);
    r.prompt_ids = {{1, 7, 9}, {3, 4, 5, 6, 2}};
    const int lengths[6] = {4, 1, 6, 2, 5, 3};
    const std::vector<double> rewards = {1.0, 0.0, 0.5, 0.2, 0.9, 0.0};
    const auto adv = group_advantages(rewards, o.group_size, o.grpo.adv_eps);
    for (int i = 0; i < 6; ++i) {
      Sample s;
      s.prompt = i / 3;
      for (int t = 0; t < lengths[i]; ++t) s.tokens.push_back(int32_t(rng.below(uint64_t(V))));
      s.reward = rewards[size_t(i)];
      s.advantage = adv[size_t(i)];
      samples.push_back(s);
    }
  }
};

// log softmax(logits / T)[o_t] of each completion token, the row scored alone: x = prompt +
// completion without its last token, logits at prompt_len - 1 + t predict o_t.
std::vector<std::vector<float>> alone(model::Transformer& m, const Run& r,
                                      const std::vector<Sample>& samples) {
  std::vector<std::vector<float>> out;
  const ops::Context ctx;
  for (const Sample& s : samples) {
    const auto& p = r.prompt_ids[size_t(s.prompt)];
    std::vector<int32_t> row(p);
    row.insert(row.end(), s.tokens.begin(), s.tokens.end() - 1);
    const int64_t n = int64_t(row.size());
    Tensor x = Tensor::empty({1, n}, DType::i32), logits;
    std::copy(row.begin(), row.end(), x.i32());
    m.forward_logits(ctx, x, logits);
    const int64_t V = logits.size(-1);
    std::vector<float> lp;
    for (size_t t = 0; t < s.tokens.size(); ++t) {
      const float* z = logits.f32() + (int64_t(p.size()) - 1 + int64_t(t)) * V;
      double mx = -1e300, sum = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(z[v]) / kTemp);
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(z[v]) / kTemp - mx);
      lp.push_back(float(double(z[s.tokens[t]]) / kTemp - mx - std::log(sum)));
    }
    out.push_back(lp);
  }
  return out;
}

void check_close(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  REQUIRE(got.size() == want.size());
  for (size_t t = 0; t < got.size(); ++t) {
    CAPTURE(what);
    CAPTURE(t);
    CHECK(got[t] == doctest::Approx(want[t]).epsilon(1e-5).scale(1.0));
  }
}

struct Outcome {
  StepReport rep;
  GrpoStats u0, u1;
  std::vector<std::vector<float>> weights;
};

Outcome run_updates(Fixture& f) {
  Outcome out;
  std::vector<MicroBatch> micros = make_micros(f.r, f.samples);
  reference_logprobs(f.r, f.samples, micros);
  update(f.r, f.samples, micros, 0, out.rep, out.u0);
  update(f.r, f.samples, micros, 1, out.rep, out.u1);
  for (const auto& p : f.r.policy.store->params())
    out.weights.emplace_back(p.value.f32(), p.value.f32() + p.value.numel());
  return out;
}

}  // namespace

TEST_CASE("rl step: micro-batch rows hold prompt + completion, scored at the right offsets") {
  for (const int64_t mb : {0, 1, 4}) {
    CAPTURE(mb);
    Fixture f(mb);
    const std::vector<MicroBatch> micros = make_micros(f.r, f.samples);
    CHECK(micros.size() == (mb == 0 ? 1u : mb == 1 ? 6u : 2u));
    double weight = 0;
    size_t next = 0;
    for (const MicroBatch& m : micros) {
      CHECK(m.first == next);
      next += m.rows;
      const int64_t T = m.batch.tokens.size(1) - 1;
      REQUIRE(m.batch.lengths.size() == m.rows);
      for (size_t b = 0; b < m.rows; ++b) {
        const Sample& s = f.samples[m.first + b];
        const GrpoSeq& q = m.seqs[b];
        const int64_t P = int64_t(f.r.prompt_ids[size_t(s.prompt)].size());
        CHECK(m.batch.lengths[b] == P + int64_t(s.tokens.size()));
        CHECK(q.length == int64_t(s.tokens.size()));
        CHECK(q.advantage == s.advantage);
        weight += q.weight * double(q.length);
        // the target at offset + t (row b, position j) is o_t, and only those are scored
        for (int64_t t = 0; t < q.length; ++t) {
          const int64_t j = q.offset + t - int64_t(b) * T;
          CHECK(m.batch.tokens.i32()[int64_t(b) * (T + 1) + j + 1] == s.tokens[size_t(t)]);
        }
        float mask = 0;
        for (int64_t j = 0; j < T; ++j) mask += m.batch.loss_mask.f32()[int64_t(b) * T + j];
        CHECK(mask == float(q.length));
      }
    }
    CHECK(next == f.samples.size());
    CHECK(weight == doctest::Approx(1.0));   // sum_i (1 / (n |o_i|)) |o_i| over the n
  }
}

TEST_CASE("rl step: pi_old, pi_ref and update 1's ratios against independent scores") {
  Fixture f(4);
  const auto old_alone = alone(*f.r.policy.model, f.r, f.samples);
  const auto ref_alone = alone(*f.r.ref->model, f.r, f.samples);
  std::vector<MicroBatch> micros = make_micros(f.r, f.samples);
  reference_logprobs(f.r, f.samples, micros);
  StepReport rep;
  GrpoStats u0, u1;
  update(f.r, f.samples, micros, 0, rep, u0);
  for (size_t i = 0; i < f.samples.size(); ++i) {
    CAPTURE(i);
    check_close(f.samples[i].logp_old, old_alone[i], "logp_old");
    check_close(f.samples[i].logp_ref, ref_alone[i], "logp_ref");
  }
  CHECK(u0.clipped == 0);   // rho = 1 at the sampling policy
  // update 1 against grpo_loss on the updated weights' independent scores, flat layout
  const auto new_alone = alone(*f.r.policy.model, f.r, f.samples);
  std::vector<float> logp;
  std::vector<GrpoSeq> seqs;
  for (size_t i = 0; i < f.samples.size(); ++i) {
    GrpoSeq q;
    q.offset = int64_t(logp.size());
    q.length = int64_t(new_alone[i].size());
    q.advantage = f.samples[i].advantage;
    q.weight = 1.0 / (6.0 * double(q.length));
    q.logp_old = old_alone[i].data();
    q.logp_ref = ref_alone[i].data();
    seqs.push_back(q);
    logp.insert(logp.end(), new_alone[i].begin(), new_alone[i].end());
  }
  std::vector<float> dlogp(logp.size());
  GrpoStats want;
  grpo_loss(f.o.grpo, seqs, logp, dlogp, want);
  update(f.r, f.samples, micros, 1, rep, u1);
  CHECK(want.clipped >= 3);   // the check covers clipped tokens
  CHECK(u1.tokens == want.tokens);
  CHECK(std::fabs(u1.clipped - want.clipped) <= 1);   // a ratio at 1 +- eps may round either way
  CHECK(u1.loss == doctest::Approx(want.loss).epsilon(1e-4));
  CHECK(u1.kl == doctest::Approx(want.kl).epsilon(1e-4));
  CHECK(want.kl > 0);
}

TEST_CASE("rl step: 1, 4 or all completions per micro-batch give the same step") {
  Fixture all(0), one(1), four(4);
  const Outcome a = run_updates(all), b = run_updates(one), c = run_updates(four);
  CHECK(a.rep.loss_balance > 0);
  for (const Outcome* o : {&b, &c}) {
    CHECK(o->rep.loss == doctest::Approx(a.rep.loss).epsilon(1e-5));
    CHECK(o->rep.loss_pg == doctest::Approx(a.rep.loss_pg).epsilon(1e-5));
    CHECK(o->rep.loss_balance == doctest::Approx(a.rep.loss_balance).epsilon(1e-5));
    CHECK(o->rep.kl == doctest::Approx(a.rep.kl).epsilon(1e-5));
    CHECK(o->rep.entropy == doctest::Approx(a.rep.entropy).epsilon(1e-5));
    CHECK(o->rep.grad_norm == doctest::Approx(a.rep.grad_norm).epsilon(1e-4));
    CHECK(o->u1.loss == doctest::Approx(a.u1.loss).epsilon(1e-4));
    CHECK(o->u1.clipped == a.u1.clipped);
    REQUIRE(o->weights.size() == a.weights.size());
    double worst = 0;
    for (size_t i = 0; i < a.weights.size(); ++i)
      for (size_t k = 0; k < a.weights[i].size(); ++k)
        worst = std::max(worst, double(std::fabs(o->weights[i][k] - a.weights[i][k])));
    CHECK(worst <= 1e-5);
  }
}
