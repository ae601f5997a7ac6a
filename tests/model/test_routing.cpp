// Routing semantics at model level: the e_score_correction_bias changes which experts are
// selected but never the gate weights, the selection follows the bias, and
// update_router_bias moves every MoE layer's bias by gamma * sign(mean - c) (0 at the mean).
// reference: docs/model.md "MoE" and "After each optimiser step"; spec §1.9-1.10.
#include <doctest/doctest.h>

#include <string>

#include "ds/ops/ops.hpp"
#include "model_test_util.hpp"

using namespace ds;
using namespace ds::model;
using namespace ds::model::testing;

namespace {

Tensor& bias_of(ParamStore& store, const std::string& layer_mlp) {
  Tensor* t = store.find_buffer(layer_mlp + ".gate.e_score_correction_bias");
  REQUIRE(t != nullptr);
  return *t;
}

ops::Context ref_ctx() {
  ops::Context c;
  c.impl = ops::Impl::reference;
  return c;
}

}  // namespace

TEST_CASE("a huge bias forces the selection but leaves the gate weights unchanged") {
  ModelArgs a = micro_args();
  ParamStore store;
  Transformer model(a, store);
  store.init(21);
  Batch b;
  b.tokens = random_tokens(2, 6, a.vocab_size, 21);
  const LossWeights lw{0.3f, 0.0f};   // balance loss off: it depends on the selection counts
  Tensor& bias = bias_of(store, "model.layers.1.mlp");

  // Expert 3 gets +100: its group (experts 2, 3) wins for every token, and with K = 2 both
  // experts of that group are taken, 3 first.
  bias.zero_();
  bias.f32()[3] = 100.0f;
  const StepResult r100 = model.forward_loss(ref_ctx(), b, lw);
  const Tensor& idx = r100.route_idx[0];
  REQUIRE(idx.shape() == Shape{12, 2});
  for (int64_t t = 0; t < 12; ++t) {
    CHECK(idx.i32()[t * 2] == 3);
    CHECK(idx.i32()[t * 2 + 1] == 2);
  }
  CHECK(r100.expert_counts[0] == std::vector<int32_t>{0, 0, 12, 12});

  // The same selection forced by a 10x larger bias (and a shift of expert 2) gives the same
  // loss: the bias enters the selection only, never the weights.
  bias.f32()[3] = 1000.0f;
  bias.f32()[2] = 50.0f;
  const StepResult r1000 = model.forward_loss(ref_ctx(), b, lw);
  CHECK(routes(r1000) == routes(r100));
  CHECK(r1000.loss == r100.loss);

  // Forcing the other group changes the selection and therefore the loss.
  bias.zero_();
  bias.f32()[0] = 100.0f;
  const StepResult r0 = model.forward_loss(ref_ctx(), b, lw);
  CHECK(r0.expert_counts[0] == std::vector<int32_t>{12, 12, 0, 0});
  CHECK(r0.loss != r100.loss);
}

TEST_CASE("with every expert selected, any bias leaves the loss unchanged") {
  ModelArgs a = micro_args();
  a.n_expert_groups = 1;
  a.n_limited_groups = 1;
  a.n_activated_experts = 4;   // K = E: the bias can only reorder the selection
  ParamStore store;
  Transformer model(a, store);
  store.init(22);
  Batch b;
  b.tokens = random_tokens(2, 6, a.vocab_size, 22);
  const StepResult base = model.forward_loss(ref_ctx(), b, LossWeights{});
  randomize_biases(store, 3.0, 22);
  const StepResult biased = model.forward_loss(ref_ctx(), b, LossWeights{});
  CHECK(biased.loss == doctest::Approx(base.loss).epsilon(1e-6));
  CHECK(biased.loss_balance == doctest::Approx(base.loss_balance).epsilon(1e-6));
}

TEST_CASE("update_router_bias: b += gamma * sign(mean - c), per MoE layer incl. MTP") {
  ModelArgs a = micro_args();
  ParamStore store;
  Transformer model(a, store);
  store.init(23);
  REQUIRE(model.n_moe_layers() == 2);
  REQUIRE(model.moe_layer_names() ==
          std::vector<std::string>{"model.layers.1.mlp", "model.layers.2.mlp"});
  const float g = 1e-3f;
  model.update_router_bias({{3, 1, 2, 2}, {0, 4, 4, 0}}, g);
  const Tensor& b1 = bias_of(store, "model.layers.1.mlp");
  const Tensor& b2 = bias_of(store, "model.layers.2.mlp");
  CHECK(std::vector<float>(b1.f32(), b1.f32() + 4) == std::vector<float>{-g, g, 0.0f, 0.0f});
  CHECK(std::vector<float>(b2.f32(), b2.f32() + 4) == std::vector<float>{g, -g, -g, g});
  model.update_router_bias({{5, 5, 5, 5}, {1, 0, 0, 0}}, g);   // balanced layer: unchanged
  CHECK(std::vector<float>(b1.f32(), b1.f32() + 4) == std::vector<float>{-g, g, 0.0f, 0.0f});
  CHECK(b2.f32()[0] == doctest::Approx(0.0f));
  CHECK(b2.f32()[1] == doctest::Approx(0.0f));
  CHECK(b2.f32()[3] == doctest::Approx(2 * g));
  CHECK_THROWS(model.update_router_bias({{1, 2, 3, 4}}, g));   // one vector per MoE layer
}

TEST_CASE("expert counts: N*K pairs per MoE layer, main and MTP") {
  ModelArgs a = micro_args();
  ParamStore store;
  Transformer model(a, store);
  store.init(24);
  Batch b;
  b.tokens = random_tokens(3, 5, a.vocab_size, 24);
  const StepResult r = model.forward_backward(ref_ctx(), b, LossWeights{}, 1.0f);
  REQUIRE(r.expert_counts.size() == 2);
  int64_t main = 0, mtp = 0;
  for (int32_t c : r.expert_counts[0]) main += c;
  for (int32_t c : r.expert_counts[1]) mtp += c;
  CHECK(main == 3 * 5 * 2);
  CHECK(mtp == 3 * 4 * 2);
  CHECK(r.route_idx[1].shape() == Shape{12, 2});
}
