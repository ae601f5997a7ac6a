// The step's BF16 weight operands kept from the forward to the backward pass
// (ops::OperandCache, set by train::make_context on the GPU): three bf16 training steps of a
// small MoE model with the cache equal three without it bit for bit (losses, then every
// weight), through the per-expert loop and the grouped experts, with the cache refreshed by
// AdamW::step (each weight's new BF16 operand written by the update into the cached entry,
// Context::operand_refresh; through apply_update and called directly) and cleared instead
// (operand_refresh 0). Refreshed, the entries are made once in three steps. The same run with
// the cache never refreshed nor cleared (the optimizer given a context without it) must
// differ: the test can see stale operands. In fp8 the BF16 operands of the Linears that stay
// BF16 (head, eh_proj) are refreshed the same way. On the CPU here;
// tests/kernels/test_model_gpu.cpp trains on the GPU with the cache that the tools use.
#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <string_view>

#include "ds/core/rng.hpp"
#include "ds/model/config.hpp"
#include "ds/model/params.hpp"
#include "ds/model/transformer.hpp"
#include "ds/train/optimizer.hpp"
#include "ds/train/state.hpp"
#include "ds/train/trainer.hpp"

using namespace ds;

namespace {

model::ModelArgs args() {
  model::ModelArgs a = model::preset("tiny");
  a.vocab_size = 64;
  a.n_layers = 2;   // 1 dense + 1 MoE layer, and the MTP layer
  return a;
}

model::Batch batch(int64_t V, uint64_t seed) {
  model::Batch b;
  b.tokens = Tensor::empty({2, 17}, DType::i32);
  Rng rng(seed, 3);
  for (int64_t i = 0; i < b.tokens.numel(); ++i)
    b.tokens.i32()[i] = int32_t(rng.below(uint64_t(V)));
  return b;
}

struct Run {
  std::vector<double> losses;
  std::unique_ptr<model::ParamStore> store;
  int64_t roundings = 0;   // BF16 rounding op calls (bf16_round*) over the three steps
  int64_t made = 0;        // operand cache entries made over the three steps
};

// BF16 rounding op calls (bf16_round, bf16_round_multi) in a profile.
int64_t roundings(const ops::Profiler& prof) {
  int64_t n = 0;
  for (const ops::Profiler::Entry& e : prof.entries())
    if (std::string_view(e.op).substr(0, 10) == "bf16_round") n += e.calls;
  return n;
}

// mode 0: no cache; 1: the cache, through apply_update; 2: the cache, AdamW::step called
// directly; 3: the cache, never cleared; 4: the cache, cleared (not refreshed) by the step.
// share: ctx.linear.share_inputs (0 or 1).
Run train3(int mode, int grouped, int share = 0,
           ops::Precision precision = ops::Precision::bf16) {
  const model::ModelArgs a = args();
  Run r;
  r.store = std::make_unique<model::ParamStore>();
  model::Transformer m(a, *r.store);
  r.store->init(5);
  r.store->alloc_grads();
  m.set_grouped_experts(grouped);
  ops::Context ctx;
  ctx.linear.mode = precision;
  ctx.linear.share_inputs = int8_t(share);
  ctx.operand_refresh = int8_t(mode == 4 ? 0 : 1);
  ops::Profiler prof;
  ctx.prof = &prof;
  if (mode > 0) ctx.operands = std::make_shared<ops::OperandCache>();
  train::OptimizerOptions oo;
  oo.bf16_moments = false;
  train::AdamW opt(*r.store, oo);
  train::TrainerState st;
  for (int step = 1; step <= 3; ++step) {
    r.store->zero_grads();
    const model::StepResult sr =
        m.forward_backward(ctx, batch(a.vocab_size, uint64_t(step)), model::LossWeights{}, 1.0f);
    r.losses.push_back(sr.loss);
    if (mode > 0) CHECK(ctx.operands->entries() > 0);
    train::StepAccumulator acc;
    acc.add(sr, 1.0);
    st.step = step;
    const size_t before = mode > 0 ? ctx.operands->entries() : 0;
    if (mode == 2 || mode == 3) {
      ops::Context octx = ctx;   // mode 3: the optimizer does not see the cache
      if (mode == 3) octx.operands = nullptr;
      opt.step(octx, 1e-2f, opt.grad_stats(octx));
    } else {
      train::apply_update(ctx, m, opt, st, acc, 1e-2, 0.0, false, "run");
    }
    if (mode == 4) CHECK(ctx.operands->entries() == 0);
    // refreshed: every BF16 entry kept (the CPU caches no FP8 codes: its FP8 Linears
    // fake-quantise per use; the dropping of unbound entries is tests/ops/test_operand_cache)
    if (mode == 1 || mode == 2) {
      CHECK(before > 0);
      CHECK(ctx.operands->entries() == before);
    }
  }
  r.roundings = roundings(prof);
  r.made = mode > 0 ? ctx.operands->made() : 0;
  return r;
}

bool same_weights(const model::ParamStore& x, const model::ParamStore& y) {
  for (size_t i = 0; i < x.params().size(); ++i) {
    const Tensor &a = x.params()[i].value, &b = y.params()[i].value;
    if (a.nbytes() != b.nbytes() || std::memcmp(a.raw(), b.raw(), a.nbytes()) != 0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("operand cache: bf16 training with the step's cached weight operands is bit-identical") {
  for (int grouped : {0, 1}) {
    CAPTURE(grouped);
    const Run plain = train3(0, grouped), cached = train3(1, grouped), direct = train3(2, grouped);
    const Run stale = train3(3, grouped), cleared = train3(4, grouped);
    REQUIRE(plain.losses.size() == 3);
    for (size_t i = 0; i < 3; ++i) {
      CHECK(cached.losses[i] == plain.losses[i]);
      CHECK(direct.losses[i] == plain.losses[i]);
      CHECK(cleared.losses[i] == plain.losses[i]);
    }
    CHECK(same_weights(*cached.store, *plain.store));
    CHECK(same_weights(*direct.store, *plain.store));
    CHECK(same_weights(*cleared.store, *plain.store));
    // refreshed by the updates: made once in three steps (cleared: three times), and the
    // weights' roundings are the optimizer's, not separate ops
    MESSAGE("cache entries made in 3 steps: refreshed ", cached.made, ", cleared ",
            cleared.made, "; bf16_round calls ", cached.roundings, " vs ", cleared.roundings);
    CHECK(cached.made > 0);
    // (the per-expert loop makes an expert's operands in the steps that route tokens to it:
    // refreshed, once for the experts used in any step)
    if (grouped) CHECK(cleared.made == 3 * cached.made);
    else CHECK(cleared.made > 2 * cached.made);
    CHECK(direct.made == cached.made);
    CHECK(cached.roundings < cleared.roundings);
    // never cleared: steps 2 and 3 run on step 1's weights, so something must differ
    CHECK(stale.losses[0] == plain.losses[0]);
    CHECK((stale.losses[1] != plain.losses[1] || !same_weights(*stale.store, *plain.store)));
  }
}

// model::gemm_input (ctx.linear.share_inputs, on by default on the GPU): every activation that
// feeds Linears rounded once and read by all of them, forward and backward (MLA's input, q and
// kv latents and attention output, the MLPs' inputs and SwiGLU outputs, the heads' inputs, MTP's
// eh_proj input). Forced on here, where the operands are rounded F32 copies: the same losses and
// weights bit for bit as every Linear rounding its own input, with fewer rounding calls.
TEST_CASE("shared GEMM inputs: bf16 training is bit-identical with fewer roundings") {
  for (int grouped : {0, 1}) {
    CAPTURE(grouped);
    const Run plain = train3(0, grouped, 0), shared = train3(0, grouped, 1);
    const Run both = train3(1, grouped, 1);   // with the weights' operand cache as on the GPU
    REQUIRE(plain.losses.size() == 3);
    for (size_t i = 0; i < 3; ++i) {
      CHECK(shared.losses[i] == plain.losses[i]);
      CHECK(both.losses[i] == plain.losses[i]);
    }
    CHECK(same_weights(*shared.store, *plain.store));
    CHECK(same_weights(*both.store, *plain.store));
    MESSAGE("bf16_round calls over 3 steps: ", plain.roundings, " each Linear rounding its input, ",
            shared.roundings, " shared inputs, ", both.roundings, " with the weight cache too");
    CHECK(shared.roundings < plain.roundings);
    CHECK(both.roundings < shared.roundings);
  }
}

// The policy head (RL: per-token log-probabilities, dlogits written by token_logprob_backward)
// under shared GEMM inputs: the same loss and gradients bit for bit as without, with fewer
// BF16 roundings (the head's dlogits are no longer rounded after the op), with the logits in
// one chunk (kept from the scoring pass) and in several (recomputed, the last one partial).
TEST_CASE("shared GEMM inputs: a policy-gradient step is bit-identical") {
  const model::ModelArgs a = args();
  for (int64_t chunk : {int64_t(0), int64_t(5) * a.vocab_size}) {
    CAPTURE(chunk);
    std::vector<std::vector<float>> grads[2];
    double losses[2] = {0, 0};
    int64_t rounds[2] = {0, 0};
    for (int share : {0, 1}) {
      model::ParamStore store;
      model::Transformer m(a, store);
      if (chunk > 0) m.set_logit_chunk(chunk);
      store.init(5);
      store.alloc_grads();
      ops::Context ctx;
      ctx.linear.mode = ops::Precision::bf16;
      ctx.linear.share_inputs = int8_t(share);
      ops::Profiler prof;
      ctx.prof = &prof;
      const model::PolicyLossFn loss = [](const model::TokenScores& sc, std::vector<float>& d) {
        double l = 0;
        for (size_t i = 0; i < sc.logp.size(); ++i) {
          l -= 0.5 * sc.logp[i];
          d[i] = -0.5f;
        }
        return l;
      };
      const model::StepResult r =
          m.forward_backward_policy(ctx, batch(a.vocab_size, 11), loss, 1e-3f, 1.0f);
      losses[share] = r.loss;
      for (const model::Param& p : store.params())
        grads[share].emplace_back(p.grad.f32(), p.grad.f32() + p.grad.numel());
      rounds[share] = roundings(prof);
    }
    CHECK(losses[1] == losses[0]);
    REQUIRE(grads[0].size() == grads[1].size());
    size_t same = 0, nonzero = 0;
    for (size_t i = 0; i < grads[0].size(); ++i) {
      same += grads[0][i] == grads[1][i];
      for (float g : grads[0][i]) nonzero += g != 0.0f;
    }
    CHECK(same == grads[0].size());
    CHECK(nonzero > 1000);   // the step did reach the weights
    CHECK(rounds[1] < rounds[0]);
  }
}

// fp8: the BF16 operands of the Linears that stay BF16 (the head, MTP's eh_proj) refreshed by
// the step: the same losses and weights as without a cache.
TEST_CASE("operand cache: fp8 training with the refreshed BF16 operands is bit-identical") {
  const Run plain = train3(0, 0, 0, ops::Precision::fp8);
  const Run cached = train3(1, 0, 0, ops::Precision::fp8);
  REQUIRE(plain.losses.size() == 3);
  for (size_t i = 0; i < 3; ++i) CHECK(cached.losses[i] == plain.losses[i]);
  CHECK(same_weights(*cached.store, *plain.store));
}
