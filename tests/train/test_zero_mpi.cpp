// ZeRO-1 and checkpoints written by several ranks, under mpirun (2 and 4 ranks; CTest
// ds_test_zero_mpi_np2/np4). Every rank regenerates every rank's gradients from seeds, so it
// computes the single-process reference (AdamW on the summed gradients of the full model)
// locally and compares its own parameters, moments and norms with it. Layouts: data
// parallelism alone, with expert parallelism (experts reduced over edp only), with pipeline
// stages (each stage holds different parameters; the last stage holds a copy of the
// embedding), and both.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <filesystem>
#include <set>

#include "../temp_dir.hpp"
#include "ds/dist/topology.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/train/state.hpp"
#include "ds/train/zero.hpp"
#include "mpi_test.hpp"
#include "zero_test_util.hpp"

namespace fs = std::filesystem;
using namespace ds;
using ds::testing::Part;

namespace {

std::vector<dist::Layout> layouts() {
  const int w = test::world().size();
  if (w == 2) return {{1, 2, 1}, {1, 2, 2}, {2, 1, 1}};
  if (w == 4) return {{1, 4, 1}, {1, 4, 2}, {2, 2, 1}, {2, 2, 2}, {1, 4, 4}};
  return {{1, w, 1}};
}

// A directory every rank sees: rank 0's temporary directory, its path broadcast.
struct SharedDir {
  std::unique_ptr<ds::testing::TempDir> tmp;
  fs::path path;
  SharedDir() {
    dist::Comm& w = test::world();
    std::string p;
    if (w.rank() == 0) {
      tmp = std::make_unique<ds::testing::TempDir>("zero_mpi");
      p = tmp->path().string();
    }
    int64_t n = int64_t(p.size());
    w.broadcast(&n, 1, DType::i64, 0);
    p.resize(size_t(n));
    w.broadcast(p.data(), n, DType::u8, 0);
    path = p;
  }
  ~SharedDir() { test::world().barrier(); }   // nobody still reads when rank 0 removes it
};

// One rank's side of a run and the full-model reference every rank keeps.
struct Run {
  model::ModelArgs args = ds::testing::zero_test_args();
  dist::Layout layout;
  std::unique_ptr<dist::Topology> topo;
  Part part;
  std::set<std::string> copies;
  train::OptimizerOptions oo;
  std::unique_ptr<model::ParamStore> ps, full;
  std::unique_ptr<train::ShardedAdamW> z;
  std::unique_ptr<train::AdamW> ref;
  ops::Context ctx;

  Run(const dist::Layout& l, const train::OptimizerOptions& o) : layout(l), oo(o) {
    topo = test::topology(l);
    part = Part{l.pp, topo->pp_rank(), l.ep, topo->ep_rank()};
    if (l.pp > 1 && topo->is_last_stage()) copies.insert("model.embed_tokens.weight");
    ps = ds::testing::make_store(args, part, 1);
    full = ds::testing::make_store(args, Part{}, 1);
    z = std::make_unique<train::ShardedAdamW>(*ps, oo, topo->dp(), topo->edp(), copies);
    ref = std::make_unique<train::AdamW>(*full, oo);
  }
  // A fresh store and optimiser of this rank's part (other initial values).
  std::pair<std::unique_ptr<model::ParamStore>, std::unique_ptr<train::ShardedAdamW>> fresh() {
    auto s = ds::testing::make_store(args, part, 99);
    auto o = std::make_unique<train::ShardedAdamW>(*s, oo, topo->dp(), topo->edp(), copies);
    return {std::move(s), std::move(o)};
  }
  // One step of the ZeRO optimiser on this rank's gradients; returns its stats.
  train::GradStats zero_step(model::ParamStore& s, train::ShardedAdamW& opt, int step) {
    ds::testing::fill_grads(s, topo->dp_rank(), step);
    opt.reduce_gradients(ctx);
    const train::GradStats st = opt.grad_stats(ctx, topo->world());
    opt.step(ctx, 1e-2f, st);
    return st;
  }
  train::GradStats ref_step(int step) {
    ds::testing::fill_reference_grads(args, *full, layout.dp, layout.ep, step);
    const train::GradStats st = ref->grad_stats(ctx);
    ref->step(ctx, 1e-2f, st);
    return st;
  }
  // Largest relative difference of this rank's parameters from the reference's.
  double value_diff(const model::ParamStore& s) const {
    double m = 0;
    for (const model::Param& p : s.params())
      m = std::max(m, ds::testing::max_rel_diff(p.value, full->get(p.info.name).value));
    return m;
  }
  const Tensor* ref_moment(const std::string& name) {
    for (auto& [n, t] : ref->state_tensors())
      if (n == name) return t;
    return nullptr;
  }
};

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

std::string layout_str(const dist::Layout& l) {
  return fmt::format("pp={} dp={} ep={}", l.pp, l.dp, l.ep);
}

train::TrainerState state_at(int64_t step) {
  train::TrainerState st;
  st.step = step;
  st.optimizer_steps = step;
  st.tokens_seen = 100 * step;
  st.seed = 7;
  return st;
}

}  // namespace

TEST_CASE("ZeRO-1 equals AdamW on the summed gradients; the norm counts every element once") {
  for (const dist::Layout& l : layouts()) {
    for (int variant = 0; variant < 3; ++variant) {
      train::OptimizerOptions oo;
      oo.bf16_moments = variant == 0;
      oo.clip_norm = variant == 2 ? 0.0f : 1.0f;
      CAPTURE(layout_str(l));
      CAPTURE(variant);
      Run r(l, oo);
      for (int step = 0; step < 3; ++step) {
        const train::GradStats zs = r.zero_step(*r.ps, *r.z, step);
        const train::GradStats rs = r.ref_step(step);
        CHECK(zs.norm == doctest::Approx(rs.norm).epsilon(1e-12));
        if (oo.clip_norm > 0) CHECK(rs.norm > oo.clip_norm);   // clipping is active
        CHECK(zs.nonfinite == 0);
      }
      CHECK(r.value_diff(*r.ps) <= 1e-6);
      CHECK(r.z->steps_done() == 3);
      // Full moments on the writers, the reference's up to the same tolerance.
      for (const auto& [name, t] : r.z->gather_state()) {
        const Tensor* m = r.ref_moment(name);
        REQUIRE(m);
        CHECK(ds::testing::max_rel_diff(t, *m) <= 1e-6);
      }
    }
  }
}

TEST_CASE("a non-finite gradient on one rank is seen by every rank") {
  for (const dist::Layout& l : layouts()) {
    CAPTURE(layout_str(l));
    Run r(l, train::OptimizerOptions{});
    ds::testing::fill_grads(*r.ps, r.topo->dp_rank(), 0);
    if (r.topo->rank() == r.topo->world_size() - 1)   // an expert or last-stage parameter
      r.ps->params().back().grad.f32()[0] = std::numeric_limits<float>::infinity();
    r.z->reduce_gradients(r.ctx);
    const train::GradStats s = r.z->grad_stats(r.ctx, r.topo->world());
    CHECK(s.nonfinite == 1);
    CHECK_FALSE(std::isfinite(s.norm));
  }
}

TEST_CASE("checkpoints written by several ranks load in one process and on the same layout") {
  SharedDir shared;
  int idx = 0;
  for (const dist::Layout& l : layouts()) {
    CAPTURE(layout_str(l));
    const bool bf16 = idx % 2 == 1;
    train::OptimizerOptions oo;
    oo.bf16_moments = idx % 3 != 2;
    Run r(l, oo);
    for (int step = 0; step < 3; ++step) {
      r.zero_step(*r.ps, *r.z, step);
      r.ref_step(step);
    }
    const fs::path run_dir = shared.path / fmt::format("run{}", idx++);
    train::SaveSpec spec;
    spec.dir = run_dir / io::checkpoint_dir_name(3);
    spec.bf16 = bf16;
    train::save_checkpoint(spec, r.args, *r.ps, *r.z, state_at(3), r.topo->world());
    REQUIRE(fs::is_directory(spec.dir));   // published before anyone returns

    if (r.topo->is_main()) {
      // One file per writer rank: dp_rank < ep (edp rank 0 writes experts; dp rank 0 also
      // the replicated parameters and buffers).
      const int w = r.topo->world_size();
      for (int rank = 0; rank < w; ++rank) {
        const bool writer = rank % l.dp < l.ep;
        const std::string num = fmt::format("{:05d}-of-{:05d}.safetensors", rank + 1, w);
        CHECK(fs::exists(spec.dir / ("model-" + num)) == writer);
        CHECK(fs::exists(spec.dir / "training_state" / ("optimizer-" + num)) == writer);
        CHECK(fs::exists(spec.dir / "training_state" / ("master-" + num)) == (writer && bf16));
      }
      CHECK(fs::exists(spec.dir / "model.safetensors.index.json"));
      CHECK_FALSE(fs::exists(spec.dir / "model.safetensors"));
      CHECK(fs::exists(spec.dir / "config.json"));
      // One process, plain AdamW, the whole model: every tensor present exactly once.
      auto one = ds::testing::make_store(r.args, Part{}, 99);
      train::AdamW opt(*one, oo);
      const train::TrainerState st = train::load_checkpoint(spec.dir, *one, opt);
      CHECK(st.step == 3);
      CHECK(opt.steps_done() == 3);
      double d = 0;
      for (const model::Param& p : one->params())
        d = std::max(d, ds::testing::max_rel_diff(p.value, r.full->get(p.info.name).value));
      CHECK(d <= 1e-6);   // the F32 masters, also in a BF16 checkpoint
      for (auto& [name, t] : opt.state_tensors())
        CHECK(ds::testing::max_rel_diff(*t, *r.ref_moment(name)) <= 1e-6);
      for (const auto& [name, t] : one->buffers()) CHECK(same_bits(t, *r.full->find_buffer(name)));
    }

    // The same layout: a fresh store and optimiser continue exactly where the live ones are.
    auto [s2, z2] = r.fresh();
    train::CheckpointLoadOptions lo;
    lo.subset = true;
    train::load_checkpoint(spec.dir, *s2, *z2, lo);
    CHECK(z2->steps_done() == 3);
    for (size_t i = 0; i < r.ps->params().size(); ++i)
      REQUIRE(same_bits(r.ps->params()[i].value, s2->params()[i].value));
    for (const auto& [name, t] : r.ps->buffers()) CHECK(same_bits(t, *s2->find_buffer(name)));
    for (int step = 3; step < 5; ++step) {
      r.zero_step(*r.ps, *r.z, step);
      r.zero_step(*s2, *z2, step);
    }
    for (size_t i = 0; i < r.ps->params().size(); ++i)
      REQUIRE(same_bits(r.ps->params()[i].value, s2->params()[i].value));
    const auto ga = r.z->gather_state(), gb = z2->gather_state();
    REQUIRE(ga.size() == gb.size());
    for (size_t i = 0; i < ga.size(); ++i) CHECK(same_bits(ga[i].second, gb[i].second));

    // A second save prunes the first (keep_last).
    spec.dir = run_dir / io::checkpoint_dir_name(5);
    spec.keep_last = 1;
    train::save_checkpoint(spec, r.args, *r.ps, *r.z, state_at(5), r.topo->world());
    if (r.topo->is_main()) CHECK(io::list_checkpoints(run_dir) == std::vector<fs::path>{spec.dir});
  }
}

TEST_CASE("a one-process checkpoint resumes on several ranks") {
  SharedDir shared;
  int idx = 0;
  for (const dist::Layout& l : layouts()) {
    CAPTURE(layout_str(l));
    train::OptimizerOptions oo;
    oo.bf16_moments = idx % 2 == 0;
    Run r(l, oo);
    for (int step = 0; step < 2; ++step) r.ref_step(step);
    train::SaveSpec spec;
    spec.dir = shared.path / fmt::format("single{}", idx++);
    spec.bf16 = idx % 2 == 0;
    if (r.topo->is_main()) train::save_checkpoint(spec, r.args, *r.full, *r.ref, state_at(2));
    r.topo->world().barrier();

    train::CheckpointLoadOptions lo;
    lo.subset = true;
    train::load_checkpoint(spec.dir, *r.ps, *r.z, lo);
    CHECK(r.z->steps_done() == 2);
    for (const model::Param& p : r.ps->params())
      REQUIRE(same_bits(p.value, r.full->get(p.info.name).value));
    for (const auto& [name, t] : r.z->gather_state()) CHECK(same_bits(t, *r.ref_moment(name)));
    for (int step = 2; step < 4; ++step) {
      const train::GradStats zs = r.zero_step(*r.ps, *r.z, step);
      const train::GradStats rs = r.ref_step(step);
      CHECK(zs.norm == doctest::Approx(rs.norm).epsilon(1e-12));
    }
    CHECK(r.value_diff(*r.ps) <= 1e-6);
  }
}
