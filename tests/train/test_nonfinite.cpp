// Non-finite numbers in training state: a step with a non-finite loss is skipped only when the
// weights are finite (weights that an update blew up stop the run, --skip-nonfinite or not),
// and at most 9 in a row; no
// checkpoint is written with non-finite weights; a resume refuses moments and masters holding
// NaN or infinity, negative second moments, and tensors that belong to no parameter.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../temp_dir.hpp"
#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/train/optimizer.hpp"
#include "ds/train/state.hpp"
#include "ds/train/trainer.hpp"
#include "zero_test_util.hpp"

namespace model = ds::model;
namespace train = ds::train;
using doctest::Contains;
using ds::Tensor;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

Tensor& moment(train::AdamW& opt, const std::string& name) {
  for (auto& [n, t] : opt.state_tensors())
    if (n == name) return *t;
  FAIL("no moment " << name);
  throw;
}

}  // namespace

TEST_CASE("finite_or_skip: a non-finite step is skipped only while the weights are finite") {
  const model::ModelArgs a = ds::testing::zero_test_args();
  auto ps = ds::testing::make_store(a, {}, 3);
  const ds::ops::Context ctx;
  train::TrainerState st;
  st.step = 4;
  CHECK(train::finite_or_skip(ctx, *ps, st, 1.5, {}, false, "run"));
  CHECK_FALSE(train::finite_or_skip(ctx, *ps, st, kNaN, {}, true, "run"));
  CHECK(st.nonfinite_skipped == 1);
  train::GradStats g;
  g.nonfinite = 3;
  CHECK_THROWS_WITH_AS(train::finite_or_skip(ctx, *ps, st, 1.5, g, false, "run"),
                       Contains("step 4: non-finite gradient"), ds::NumericsError);
  // skipped steps in a row: a finite one starts the count again; the 10th stops the run
  CHECK(train::finite_or_skip(ctx, *ps, st, 1.5, {}, true, "run"));
  for (int i = 0; i < 2; ++i) {
    for (int64_t k = 1; k < train::kMaxNonfiniteStreak; ++k)
      CHECK_FALSE(train::finite_or_skip(ctx, *ps, st, kNaN, {}, true, "run"));
    if (i == 0) CHECK(train::finite_or_skip(ctx, *ps, st, 2.0, {}, true, "run"));
  }
  CHECK(st.nonfinite_skipped == 1 + 2 * (train::kMaxNonfiniteStreak - 1));
  CHECK_THROWS_WITH_AS(train::finite_or_skip(ctx, *ps, st, kNaN, {}, true, "run"),
                       Contains("for the 10th step in a row: the run has diverged"),
                       ds::NumericsError);
  st.nonfinite_streak = 0;
  st.nonfinite_skipped = 1;
  // an update that diverged: stopping is the only way out, also with --skip-nonfinite
  ps->get("model.layers.1.mlp.gate.weight").value.f32()[5] = INFINITY;
  for (const bool skip : {true, false})
    CHECK_THROWS_WITH_AS(train::finite_or_skip(ctx, *ps, st, kNaN, {}, skip, "run"),
                         Contains("the weights are not finite (model.layers.1.mlp.gate.weight: "
                                  "1 of"), ds::NumericsError);
  CHECK(st.nonfinite_skipped == 1);
}

TEST_CASE("save_checkpoint: non-finite weights are not saved") {
  ds::testing::TempDir tmp("nonfinite_save");
  const model::ModelArgs a = ds::testing::zero_test_args();
  auto ps = ds::testing::make_store(a, {}, 3);
  train::AdamW opt(*ps, {});
  ps->get("lm_head.weight").value.f32()[7] = kNaN;
  train::SaveSpec spec;
  spec.dir = tmp / "step-00000001";
  train::TrainerState st;
  st.step = 1;
  CHECK_THROWS_WITH_AS(train::save_checkpoint(spec, a, *ps, opt, st),
                       Contains("not saved: the weights are not finite (lm_head.weight: 1 of"),
                       ds::NumericsError);
  CHECK_FALSE(ds::io::exists(spec.dir));
}

TEST_CASE("load_checkpoint: moments and masters are checked as they are read") {
  ds::testing::TempDir tmp("nonfinite_load");
  const model::ModelArgs a = ds::testing::zero_test_args();
  auto ps = ds::testing::make_store(a, {}, 3);
  train::TrainerState st;
  st.step = 1;
  const std::string q = "model.layers.0.self_attn.q_a_proj.weight";
  // F32 moments, or the default BF16 ones (edited as codes)
  auto save = [&](const std::string& name, bool bf16, auto&& edit, bool bf16_moments = false) {
    train::OptimizerOptions oo;
    oo.bf16_moments = bf16_moments;
    train::AdamW opt(*ps, oo);
    edit(opt);
    train::SaveSpec spec;
    spec.dir = tmp / name / "step-00000001";
    spec.bf16 = bf16;
    train::save_checkpoint(spec, a, *ps, opt, st);
    return spec.dir;
  };
  bool bf16_load = false;
  auto load = [&](const std::filesystem::path& dir) {
    auto back = ds::testing::make_store(a, {}, 4);
    train::OptimizerOptions oo;
    oo.bf16_moments = bf16_load;
    train::AdamW opt(*back, oo);
    return train::load_checkpoint(dir, *back, opt);
  };
  const auto good = save("good", true, [](train::AdamW&) {});
  CHECK(load(good).step == 1);

  const auto nan = save("nan", false, [&](train::AdamW& o) {
    moment(o, q + ".exp_avg").f32()[2] = kNaN;
  });
  const std::string nan_msg = "optimizer.safetensors: " + q +
                              ".exp_avg: a non-finite value (NaN or infinity) at element 2";
  CHECK_THROWS_WITH_AS(load(nan), Contains(nan_msg.c_str()), ds::FormatError);
  const auto neg = save("neg", false, [&](train::AdamW& o) {
    moment(o, q + ".exp_avg_sq").f32()[9] = -1e-8f;
  });
  const std::string neg_msg = q + ".exp_avg_sq: a negative second moment at element ";
  CHECK_THROWS_WITH_AS(load(neg), Contains((neg_msg + "9").c_str()), ds::FormatError);
  const auto neg16 = save("neg16", false, [&](train::AdamW& o) {
    static_cast<uint16_t*>(moment(o, q + ".exp_avg_sq").raw())[4] = 0xbf80;   // -1.0 in BF16
  }, true);
  bf16_load = true;
  CHECK_THROWS_WITH_AS(load(neg16), Contains((neg_msg + "4").c_str()), ds::FormatError);
  bf16_load = false;
  // -0 is not negative; first moments may be negative
  const auto zero = save("zero", false, [&](train::AdamW& o) {
    moment(o, q + ".exp_avg_sq").f32()[9] = -0.0f;
    moment(o, q + ".exp_avg").f32()[9] = -3.0f;
  });
  CHECK(load(zero).step == 1);

  // a master holding infinity (a BF16 checkpoint's FP32 weights)
  const auto inf = tmp / "inf" / "step-00000001";
  std::filesystem::create_directories(inf.parent_path());
  std::filesystem::copy(good, inf, std::filesystem::copy_options::recursive);
  {
    std::vector<ds::io::TensorSource> masters;
    std::vector<Tensor> keep;
    keep.reserve(ps->params().size());
    for (const model::Param& p : ps->params()) {
      keep.push_back(p.value.clone());
      if (p.info.name == q) keep.back().f32()[0] = INFINITY;
      masters.push_back(
          ds::io::TensorSource::from_tensor(p.info.name, keep.back(), ds::DType::f32));
    }
    ds::io::write_safetensors(inf / "training_state" / "master.safetensors", masters);
  }
  const std::string inf_msg = "master.safetensors: " + q + ": a non-finite value";
  CHECK_THROWS_WITH_AS(load(inf), Contains(inf_msg.c_str()), ds::FormatError);

  // a moment of no parameter of the model
  const auto extra = tmp / "extra" / "step-00000001";
  std::filesystem::create_directories(extra.parent_path());
  std::filesystem::copy(good, extra, std::filesystem::copy_options::recursive);
  {
    train::OptimizerOptions oo;
    oo.bf16_moments = false;
    train::AdamW opt(*ps, oo);
    std::vector<ds::io::TensorSource> moments;
    for (auto& [name, t] : opt.state_tensors())
      moments.push_back(ds::io::TensorSource::from_tensor(name, *t, t->dtype()));
    const Tensor ghost = Tensor::zeros({2});
    moments.push_back(ds::io::TensorSource::from_tensor("ghost.exp_avg", ghost, ds::DType::f32));
    ds::io::write_safetensors(extra / "training_state" / "optimizer.safetensors", moments);
  }
  CHECK_THROWS_WITH_AS(load(extra), Contains("1 unexpected optimizer tensor(s): ghost.exp_avg"),
                       ds::FormatError);
}
