// ds-pretrain --dry-run's layout plan (plan_layout) against the model each rank really builds:
// for pipeline and expert splits (and DualPipe's two stages per rank) of the tiny preset, a
// variant with more layers, and the 671B preset (shapes only, nothing allocated), the
// parameters a rank registers equal the plan's; the whole-model plan is one rank's of a world
// of one; the in-flight micro-batches of 1F1B, GPipe and DualPipe; the ZeRO-1 share; bad
// layouts.
#include <doctest/doctest.h>

#include <memory>
#include <set>

#include "ds/core/error.hpp"
#include "ds/dist/comm.hpp"
#include "ds/model/config.hpp"
#include "ds/model/params.hpp"
#include "ds/model/transformer.hpp"
#include "ds/train/dry_run.hpp"

using namespace ds;

namespace {

// A rank of an expert-parallel group of `n` for building a model's shapes: every collective
// is an error (none is made while a model registers its parameters).
class ShapeComm : public dist::Comm {
 public:
  ShapeComm(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "shape"; }
  void all_reduce_sum(void*, int64_t, DType) override { no(); }
  void all_reduce_sum_f64(double*, int64_t) override { no(); }
  void all_reduce_max(void*, int64_t, DType) override { no(); }
  void reduce_scatter_sum(const void*, void*, int64_t, DType) override { no(); }
  void all_gather(const void*, void*, int64_t, DType) override { no(); }
  void all_gather_v(const void*, void*, const std::vector<int64_t>&, DType) override { no(); }
  void all_to_all_v(const void*, const std::vector<int64_t>&, void*,
                    const std::vector<int64_t>&, DType) override {
    no();
  }
  void broadcast(void*, int64_t, DType, int) override { no(); }
  dist::Request isend(const void*, int64_t, DType, int, int) override { no(); return {}; }
  dist::Request irecv(void*, int64_t, DType, int, int) override { no(); return {}; }
  void barrier() override { no(); }
  std::unique_ptr<Comm> split(int, int) override { no(); return nullptr; }

 private:
  [[noreturn]] static void no() { DS_THROW(InternalError, "ShapeComm: no communication"); }
  int rank_, size_;
};

// Parameters pipeline rank r (expert rank e of ep) registers, as DistRuntime::build_model
// builds it: one stage, or DualPipe's stages r and pp-1-r over one store.
int64_t registered(const model::ModelArgs& a, int pp, int r, int ep, int e, bool dual) {
  model::ParamStore store;
  store.set_allocate(false);
  ShapeComm comm(e, ep);
  model::ModelParallel par;
  par.ep.comm = ep > 1 ? &comm : nullptr;
  par.pp_rank = r;
  par.pp_size = pp;
  model::Transformer fwd(a, store, par);
  std::unique_ptr<model::Transformer> rev;
  if (dual) {
    par.pp_rank = pp - 1 - r;
    rev = std::make_unique<model::Transformer>(a, store, par);
  }
  return store.numel();
}

train::PretrainOptions layout(int world, int pp, int ep, const char* schedule) {
  train::PretrainOptions o;
  o.dist.launch.world_size = world;
  o.dist.layout.pp = pp;
  o.dist.layout.ep = ep;
  o.dist.pp_schedule = schedule;
  o.batch_size = 16;
  o.micro_batch_size = 1;
  o.seq_len = 32;
  return o;
}

}  // namespace

TEST_CASE("dry-run layout plan: the parameters each rank builds") {
  model::ModelArgs deep = model::preset("tiny");
  deep.n_layers = 5;
  deep.n_dense_layers = 2;
  deep.n_mtp_layers = 2;
  model::ModelArgs no_mtp = model::preset("tiny");
  no_mtp.n_mtp_layers = 0;
  const std::pair<const char*, model::ModelArgs> models[] = {
      {"tiny", model::preset("tiny")}, {"deep", deep}, {"no mtp", no_mtp},
      {"671b", model::preset("671b")}};
  for (const auto& [name, a] : models) {
    for (const char* schedule : {"1f1b", "dualpipe"})
      for (int pp : {1, 2, 3, 4})
        for (int ep : {1, 2, 4}) {
          const bool dual = std::string(schedule) == "dualpipe";
          if ((dual && pp % 2 != 0) || pp > a.n_layers) continue;
          const train::LayoutPlan lp =
              train::plan_layout(layout(pp * ep * 2, pp, ep, schedule), a);
          REQUIRE(lp.ranks.size() == size_t(pp));
          CHECK(lp.layout.dp == 2 * ep);
          for (int r = 0; r < pp; ++r)
            for (int e = 0; e < ep; ++e) {
              INFO(name << " " << schedule << " pp " << pp << " ep " << ep << " rank " << r
                        << " expert rank " << e);
              CHECK(lp.ranks[size_t(r)].params == registered(a, pp, r, ep, e, dual));
            }
        }
  }
}

TEST_CASE("dry-run layout plan: one rank of a world of one is the whole-model plan") {
  const model::ModelArgs a = model::preset("tiny");
  train::PretrainOptions o = layout(1, 1, 1, "1f1b");
  o.micro_batch_size = 0;
  const train::LayoutPlan lp = train::plan_layout(o, a);
  const model::MemoryPlan m = model::plan_memory(a, o.batch_size, o.seq_len, true);
  REQUIRE(lp.ranks.size() == 1);
  const train::RankPlan& p = lp.ranks[0];
  CHECK(p.weights == m.weights);
  CHECK(p.grads == m.grads);
  CHECK(p.optimizer == m.optimizer);
  CHECK(p.activations == doctest::Approx(m.activations).epsilon(1e-12));
  CHECK(p.in_flight == 1);
  const model::ParamCounts c = model::count_params(a);
  CHECK(p.params == c.total + c.mtp);
}

TEST_CASE("dry-run layout plan: micro-batches in flight, ZeRO-1 shares, bad layouts") {
  const model::ModelArgs a = model::preset("671b");
  // 1F1B: stage s keeps pp - s micro-batches at its peak (at most the step's count)
  train::LayoutPlan lp = train::plan_layout(layout(32, 8, 4, "1f1b"), a);
  CHECK(lp.micro_batches == 4);   // 16 rows / dp 4, one row each
  for (int s = 0; s < 8; ++s) CHECK(lp.ranks[size_t(s)].in_flight == std::min(8 - s, 4));
  // GPipe: every micro-batch of the step on every stage
  lp = train::plan_layout(layout(16, 4, 2, "gpipe"), a);
  for (const train::RankPlan& p : lp.ranks) CHECK(p.in_flight == lp.micro_batches);
  // DualPipe (paper §3.2.1): pp + 1 at most (here every rank), with enough micro-batches
  lp = train::plan_layout(layout(8, 8, 1, "dualpipe"), a);
  CHECK(lp.micro_batches == 16);   // raised to 2 pp
  for (const train::RankPlan& p : lp.ranks) CHECK(p.in_flight <= 9);
  CHECK(lp.ranks[0].in_flight == 9);
  // ZeRO-1: replicated tensors over dp ranks, routed experts over dp / ep of them
  lp = train::plan_layout(layout(16, 2, 4, "1f1b"), a);
  const auto [l0, l1] = lp.ranks[1].layers[0];
  const model::StagePart part = model::stage_part(a, l0, l1, false, true, 4, 32);
  const int64_t replicated = part.replicated + a.vocab_size * a.dim;   // the embedding copy
  const int64_t c_rep = (replicated + 7) / 8, c_exp = (part.experts + 1) / 2;
  CHECK(lp.ranks[1].optimizer_params == c_rep + c_exp);
  // BF16 m and v and the F32 reduced gradient of the chunk; the update gathers a group's
  // whole flat F32 vector
  CHECK(lp.ranks[1].optimizer == 8.0 * double(lp.ranks[1].optimizer_params));
  CHECK(lp.ranks[1].update_buffer == 4.0 * double(std::max(8 * c_rep, 2 * c_exp)));
  CHECK_THROWS_WITH_AS(train::plan_layout(layout(12, 8, 1, "1f1b"), a),
                       doctest::Contains("--pp 8 does not divide the world size 12"),
                       UsageError);
  CHECK_THROWS_WITH_AS(train::plan_layout(layout(24, 2, 3, "1f1b"), a),
                       doctest::Contains("--ep 3"), UsageError);
  CHECK_THROWS_WITH_AS(train::plan_layout(layout(62, 62, 1, "1f1b"), a),
                       doctest::Contains("--pp 62"), UsageError);
  CHECK_THROWS_WITH_AS(train::plan_layout(layout(3, 3, 1, "dualpipe"), a),
                       doctest::Contains("--pp-schedule dualpipe needs an even --pp"),
                       UsageError);
}
