// ZeRO-1 optimiser and checkpoint layout tests that need one process: the sharded optimiser on
// groups of one rank is AdamW bit for bit; its checkpoint is save_checkpoint's byte for byte;
// the loaders accept split optimizer files and partial stores (subset). The multi-rank cases
// are in test_zero_mpi.cpp.
#include <doctest/doctest.h>

#include <filesystem>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "ds/core/error.hpp"
#include "ds/dist/comm.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/train/state.hpp"
#include "ds/train/zero.hpp"
#include "../temp_dir.hpp"
#include "zero_test_util.hpp"

namespace fs = std::filesystem;
using namespace ds;
using ds::testing::Part;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// Relative paths of every regular file below root, sorted.
std::set<std::string> files_below(const fs::path& root) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), root).string());
  return out;
}

// Gradients with full float mantissas (not the exact multiples of the MPI tests): bit
// identity must not depend on lucky values.
void random_grads(model::ParamStore& ps, int step) {
  for (model::Param& p : ps.params()) {
    Rng rng(uint64_t(77 + step), rng_stream("g:" + p.info.name));
    for (int64_t i = 0; i < p.grad.numel(); ++i) p.grad.f32()[i] = float(0.05 * rng.normal());
  }
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

train::TrainerState some_state() {
  train::TrainerState st;
  st.step = 3;
  st.optimizer_steps = 3;
  st.tokens_seen = 1234;
  st.seed = 5;
  st.seq_len = 16;
  st.total_steps = 10;
  return st;
}

}  // namespace

TEST_CASE("ShardedAdamW on groups of one rank is AdamW bit for bit") {
  const auto args = ds::testing::zero_test_args();
  for (bool bf16 : {true, false}) {
    CAPTURE(bf16);
    auto a = ds::testing::make_store(args, Part{}, 1);
    auto b = ds::testing::make_store(args, Part{}, 1);
    train::OptimizerOptions oo;
    oo.bf16_moments = bf16;
    oo.clip_norm = 0.5f;   // the random gradients' norm is far above: clipping is active
    train::AdamW ref(*a, oo);
    auto dp = dist::make_single_comm(), edp = dist::make_single_comm();
    train::ShardedAdamW z(*b, oo, *dp, *edp);
    ops::Context ctx;
    for (int step = 0; step < 3; ++step) {
      random_grads(*a, step);
      random_grads(*b, step);
      const train::GradStats sa = ref.grad_stats(ctx);
      z.reduce_gradients(ctx);
      const train::GradStats sb = z.grad_stats(ctx, *dp);
      CHECK(sa.norm > oo.clip_norm);
      CHECK(sb.norm == doctest::Approx(sa.norm).epsilon(1e-12));
      CHECK(sb.nonfinite == 0);
      ref.step(ctx, 1e-2f, sa);
      z.step(ctx, 1e-2f, sa);   // the same stats: bit identity of the update itself
    }
    CHECK(z.steps_done() == ref.steps_done());
    for (size_t i = 0; i < a->params().size(); ++i) {
      CAPTURE(a->params()[i].info.name);
      REQUIRE(same_bits(a->params()[i].value, b->params()[i].value));
    }
    auto full = z.gather_state();
    auto mom = ref.state_tensors();
    REQUIRE(full.size() == mom.size());
    for (size_t i = 0; i < mom.size(); ++i) {
      CHECK(full[i].first == mom[i].first);
      CHECK(full[i].second.shape() == mom[i].second->shape());
      CHECK(same_bits(full[i].second, *mom[i].second));
    }
  }
}

TEST_CASE("ShardedAdamW counts non-finite gradients and skips copies in the norm") {
  const auto args = ds::testing::zero_test_args();
  auto ps = ds::testing::make_store(args, Part{}, 1);
  auto dp = dist::make_single_comm();
  train::ShardedAdamW z(*ps, train::OptimizerOptions{}, *dp, *dp, {"model.embed_tokens.weight"});
  ops::Context ctx;
  for (model::Param& p : ps->params()) p.grad.zero_();
  ps->get("model.embed_tokens.weight").grad.f32()[0] = 1e3f;   // a copy: not counted
  ps->get("lm_head.weight").grad.f32()[3] = 3.0f;
  ps->get("model.norm.weight").grad.f32()[1] = 4.0f;
  z.reduce_gradients(ctx);
  train::GradStats s = z.grad_stats(ctx, *dp);
  CHECK(s.norm == doctest::Approx(5.0));
  CHECK(s.nonfinite == 0);
  ps->get("model.norm.weight").grad.f32()[2] = std::numeric_limits<float>::quiet_NaN();
  ps->get("lm_head.weight").grad.f32()[5] = std::numeric_limits<float>::infinity();
  z.reduce_gradients(ctx);
  s = z.grad_stats(ctx, *dp);
  CHECK(s.nonfinite == 2);
  CHECK_FALSE(z.writes(ps->get("model.embed_tokens.weight")));
  CHECK(z.writes(ps->get("lm_head.weight")));
  for (const auto& [name, t] : z.gather_state()) CHECK(name.rfind("model.embed_tokens.", 0) != 0);
  CHECK_THROWS_AS(train::ShardedAdamW(*ps, train::OptimizerOptions{}, *dp, *dp, {"no.such.weight"}),
                  InternalError);
}

TEST_CASE("checkpoint of a one-rank ZeRO world is save_checkpoint's, byte for byte") {
  const auto args = ds::testing::zero_test_args();
  ds::testing::TempDir tmp("zero_ckpt");
  fs::create_directories(tmp / "tok");
  std::ofstream(tmp / "tok" / "tokenizer.json") << "{\"model\": {}}";
  for (int variant = 0; variant < 3; ++variant) {
    CAPTURE(variant);
    const bool bf16 = variant == 1;
    auto a = ds::testing::make_store(args, Part{}, 2);
    auto b = ds::testing::make_store(args, Part{}, 2);
    train::OptimizerOptions oo;
    oo.bf16_moments = variant != 2;
    train::AdamW ref(*a, oo);
    auto dp = dist::make_single_comm();
    train::ShardedAdamW z(*b, oo, *dp, *dp);
    ops::Context ctx;
    for (int step = 0; step < 2; ++step) {
      random_grads(*a, step);
      random_grads(*b, step);
      const auto sa = ref.grad_stats(ctx);
      z.reduce_gradients(ctx);
      ref.step(ctx, 1e-3f, sa);
      z.step(ctx, 1e-3f, z.grad_stats(ctx, *dp));
    }
    train::SaveSpec spec;
    spec.tokenizer = (tmp / "tok" / "tokenizer.json").string();
    spec.bf16 = bf16;
    if (variant == 2) spec.max_shard_bytes = 1 << 20;   // sharded model files + index
    spec.dir = tmp / fmt::format("a{}", variant);
    train::save_checkpoint(spec, args, *a, ref, some_state());
    spec.dir = tmp / fmt::format("b{}", variant);
    train::save_checkpoint(spec, args, *b, z, some_state(), *dp);
    const auto fa = files_below(tmp / fmt::format("a{}", variant));
    const auto fb = files_below(tmp / fmt::format("b{}", variant));
    CHECK(fa == fb);
    CHECK(fa.count(variant == 2 ? "model.safetensors.index.json" : "model.safetensors") == 1);
    CHECK(fa.count("training_state/master.safetensors") == (bf16 ? 1u : 0u));
    for (const std::string& f : fa) {
      CAPTURE(f);
      CHECK(slurp(tmp / fmt::format("a{}", variant) / f) ==
            slurp(tmp / fmt::format("b{}", variant) / f));
    }
    // Loading it back into a fresh ZeRO optimiser restores parameters and moments exactly.
    auto c = ds::testing::make_store(args, Part{}, 9);
    train::ShardedAdamW zc(*c, oo, *dp, *dp);
    const auto st = train::load_checkpoint(spec.dir, *c, zc);
    CHECK(st.step == 3);
    CHECK(zc.steps_done() == 3);
    for (size_t i = 0; i < b->params().size(); ++i)
      REQUIRE(same_bits(b->params()[i].value, c->params()[i].value));
    auto sb = z.gather_state(), sc = zc.gather_state();
    REQUIRE(sb.size() == sc.size());
    for (size_t i = 0; i < sb.size(); ++i) CHECK(same_bits(sb[i].second, sc[i].second));
  }
}

TEST_CASE("load_checkpoint reads split optimizer files and partial stores") {
  const auto args = ds::testing::zero_test_args();
  ds::testing::TempDir tmp("zero_split");
  auto a = ds::testing::make_store(args, Part{}, 3);
  train::OptimizerOptions oo;
  train::AdamW ref(*a, oo);
  ops::Context ctx;
  random_grads(*a, 0);
  ref.step(ctx, 1e-3f, ref.grad_stats(ctx));
  train::SaveSpec spec;
  spec.dir = tmp / "step-00000003";
  spec.bf16 = true;
  train::save_checkpoint(spec, args, *a, ref, some_state());

  // Split optimizer.safetensors and master.safetensors in two files each, as two ranks would.
  const fs::path sd = spec.dir / "training_state";
  for (const char* stem : {"optimizer", "master"}) {
    std::vector<Tensor> keep;
    std::vector<io::TensorSource> first, second;
    {
      io::SafetensorsFile f(sd / (std::string(stem) + ".safetensors"));
      const auto& names = f.names();
      for (size_t i = 0; i < names.size(); ++i) {
        const io::TensorView& v = f.get(names[i]);
        Tensor t = Tensor::empty(v.shape, v.dtype);
        std::memcpy(t.raw(), v.data, v.nbytes);
        keep.push_back(t);
        (i < names.size() / 2 ? first : second)
            .push_back(io::TensorSource::from_tensor(names[i], keep.back(), v.dtype));
      }
      io::write_safetensors(sd / (std::string(stem) + "-00001-of-00002.safetensors"), first);
      io::write_safetensors(sd / (std::string(stem) + "-00002-of-00002.safetensors"), second);
    }
    // A name in two files is refused.
    CHECK_THROWS_AS(
        train::load_checkpoint(spec.dir, *ds::testing::make_store(args, Part{}, 4), ref),
        FormatError);
    fs::remove(sd / (std::string(stem) + ".safetensors"));
  }
  auto b = ds::testing::make_store(args, Part{}, 4);
  train::AdamW ob(*b, oo);
  train::load_checkpoint(spec.dir, *b, ob);
  for (size_t i = 0; i < a->params().size(); ++i)
    REQUIRE(same_bits(a->params()[i].value, b->params()[i].value));
  auto ma = ref.state_tensors(), mb = ob.state_tensors();
  for (size_t i = 0; i < ma.size(); ++i) CHECK(same_bits(*ma[i].second, *mb[i].second));

  // A partial store (second pipeline stage, expert group 1 of 2): the other tensors are only
  // tolerated with subset.
  const Part part{2, 1, 2, 1};
  auto c = ds::testing::make_store(args, part, 4, /*with_copy=*/false);
  train::AdamW oc(*c, oo);
  CHECK_THROWS_AS(train::load_checkpoint(spec.dir, *c, oc), FormatError);
  train::CheckpointLoadOptions lo;
  lo.subset = true;
  train::load_checkpoint(spec.dir, *c, oc, lo);
  for (const model::Param& p : c->params())
    REQUIRE(same_bits(p.value, a->get(p.info.name).value));
  auto dp = dist::make_single_comm();
  train::ShardedAdamW zc(*c, oo, *dp, *dp);
  train::load_checkpoint(spec.dir, *c, zc, lo);
  for (const auto& [name, t] : zc.gather_state()) {
    const Tensor* m = nullptr;
    for (auto& [n2, t2] : ma)
      if (n2 == name) m = t2;
    REQUIRE(m);
    CHECK(same_bits(t, *m));
  }
  // What the store needs is still required.
  c->add(model::ParamInfo{"model.extra.weight", {4}, false});
  train::AdamW od(*c, oo);
  try {
    train::load_checkpoint(spec.dir, *c, od, lo);
    FAIL("no error for a missing tensor");
  } catch (const FormatError& e) {
    CHECK(std::string(e.what()).find("missing: model.extra.weight") != std::string::npos);
  }
}
