// The weights' moving average (train::WeightEma): its warm-up decay, the update rule over
// parameters and buffers bit for bit, the exchange used to evaluate it (and the operand cache
// it clears), the ema/ directory of a checkpoint and its loading, and bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "../temp_dir.hpp"
#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/train/ema.hpp"
#include "ds/train/optimizer.hpp"
#include "ds/train/state.hpp"
#include "zero_test_util.hpp"

using ds::DType;
using ds::Tensor;
using ds::train::WeightEma;
namespace model = ds::model;

namespace {

// Every value of a store (parameters, then buffers), flattened.
std::vector<float> values_of(const model::ParamStore& ps) {
  std::vector<float> v;
  for (const model::Param& p : ps.params())
    v.insert(v.end(), p.value.f32(), p.value.f32() + p.value.numel());
  for (const auto& [name, t] : ps.buffers()) v.insert(v.end(), t.f32(), t.f32() + t.numel());
  return v;
}

// Adds `delta * (i % 7 + 1)` to the i-th value of every tensor (a stand-in for an update).
void nudge(model::ParamStore& ps, float delta) {
  auto add = [&](Tensor& t) {
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] += delta * float(i % 7 + 1);
  };
  for (model::Param& p : ps.params()) add(p.value);
  for (auto& [name, t] : ps.buffers()) add(t);
}

}  // namespace

TEST_CASE("ema: the warm-up decay min(decay, (1 + n) / (10 + n))") {
  CHECK(WeightEma::decay_at(0.999, 0) == doctest::Approx(0.1));
  CHECK(WeightEma::decay_at(0.999, 8) == doctest::Approx(0.5));
  CHECK(WeightEma::decay_at(0.999, 890) == doctest::Approx(0.99));
  CHECK(WeightEma::decay_at(0.9, 1000) == 0.9);
  CHECK(WeightEma::decay_at(0.5, 8) == 0.5);
}

TEST_CASE("ema: starts at the weights, then avg = d avg + (1 - d) w for every tensor") {
  const model::ModelArgs a = ds::testing::zero_test_args();
  auto ps = ds::testing::make_store(a, {}, 3);
  REQUIRE(!ps->buffers().empty());
  WeightEma ema(*ps, 0.75);
  CHECK(values_of(ema.average()) == values_of(*ps));
  std::vector<float> avg = values_of(*ps);
  for (int64_t n = 0; n < 4; ++n) {
    nudge(*ps, 0.01f * float(n + 1));
    ema.start_update(n);
    ema.wait();
    const double d = WeightEma::decay_at(0.75, n), c = 1.0 - d;
    const std::vector<float> w = values_of(*ps);
    for (size_t i = 0; i < avg.size(); ++i) avg[i] = float(d * double(avg[i]) + c * double(w[i]));
    CHECK(values_of(ema.average()) == avg);
  }
  CHECK(values_of(ema.average()) != values_of(*ps));
  // the names and shapes of the weights, in their order
  REQUIRE(ema.average().params().size() == ps->params().size());
  for (size_t i = 0; i < ps->params().size(); ++i) {
    CHECK(ema.average().params()[i].info.name == ps->params()[i].info.name);
    CHECK(ema.average().params()[i].value.shape() == ps->params()[i].info.shape);
  }
}

TEST_CASE("ema: exchange swaps the weights with the average, twice restores; clears operands") {
  const model::ModelArgs a = ds::testing::zero_test_args();
  auto ps = ds::testing::make_store(a, {}, 5);
  WeightEma ema(*ps, 0.5);
  nudge(*ps, 0.1f);
  ema.start_update(20);   // decay 0.5
  const std::vector<float> w = values_of(*ps);
  ds::ops::Context ctx;
  ctx.operands = std::make_shared<ds::ops::OperandCache>();
  const Tensor key = Tensor::zeros({4});
  ctx.operands->get(key, 0, [] { return std::vector<Tensor>{Tensor::zeros({4})}; });
  REQUIRE(ctx.operands->entries() == 1);
  ema.exchange(ctx);   // waits for the update first
  CHECK(ctx.operands->entries() == 0);
  const std::vector<float> avg = values_of(*ps);
  CHECK(values_of(ema.average()) == w);
  CHECK(avg != w);
  ema.exchange(ctx);
  CHECK(values_of(*ps) == w);
  CHECK(values_of(ema.average()) == avg);
}

TEST_CASE("ema: a checkpoint's ema/ directory holds the average; load_ema reads it back") {
  ds::testing::TempDir tmp("ema");
  const model::ModelArgs a = ds::testing::zero_test_args();
  auto ps = ds::testing::make_store(a, {}, 9);
  ds::train::AdamW opt(*ps, {});
  WeightEma ema(*ps, 0.9);
  nudge(*ps, 0.05f);
  ema.start_update(100);
  ema.wait();
  ds::train::SaveSpec spec;
  spec.dir = tmp / "step-00000001";
  spec.ema = &ema.average();
  ds::train::TrainerState st;
  st.step = 1;
  ds::train::save_checkpoint(spec, a, *ps, opt, st);
  const auto ed = ds::train::ema_dir_of(spec.dir);
  CHECK(ds::io::exists(ed / "config.json"));
  CHECK(ds::io::exists(ed / "model.safetensors"));

  auto other = ds::testing::make_store(a, {}, 10);   // other values: all replaced
  WeightEma back(*other, 0.9);
  ds::train::load_ema(back, ed, false);
  CHECK(values_of(back.average()) == values_of(ema.average()));

  // a store holding part of the model: the rest is unexpected, unless subset
  auto part = ds::testing::make_store(a, {1, 0, 2, 1}, 9);   // expert group 1 of 2
  WeightEma mine(*part, 0.9);
  CHECK_THROWS_AS(ds::train::load_ema(mine, ed, false), ds::FormatError);
  ds::train::load_ema(mine, ed, true);
  for (const model::Param& p : mine.average().params()) {
    const model::Param* full = ema.average().find(p.info.name);
    REQUIRE(full);
    CHECK(std::equal(p.value.f32(), p.value.f32() + p.value.numel(), full->value.f32()));
  }
  // a directory without the average
  CHECK_THROWS(ds::train::load_ema(back, tmp / "nothing", false));
}

TEST_CASE("ema: the decay must lie in (0, 1)") {
  const model::ModelArgs a = ds::testing::zero_test_args();
  auto ps = ds::testing::make_store(a, {}, 1);
  for (double d : {0.0, 1.0, -0.1, 2.0, double(NAN)})
    CHECK_THROWS_AS(WeightEma(*ps, d), ds::UsageError);
}
