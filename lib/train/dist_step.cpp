// One rank's part of a distributed step (see include/ds/train/dist_step.hpp).
#include "ds/train/dist_step.hpp"

#include <sched.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <set>
#include <thread>

#include "ds/core/error.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/train/pipeline_schedule.hpp"
#include "ds/train/state.hpp"
#include "ds/train/zero.hpp"

namespace ds::train {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
// Point-to-point tags: micro-batch m's activations 2m, its gradients 2m + 1 (MPI guarantees
// tags up to 32767).
int tag_of(size_t m, int dir) { return int(m % 16000) * 2 + dir; }
}  // namespace

std::pair<int64_t, int64_t> dp_slice(int64_t global_batch, int dp, int dp_rank) {
  const int64_t first = global_batch * dp_rank / dp, end = global_batch * (dp_rank + 1) / dp;
  return {first, end - first};
}

int default_threads_per_rank() {
  int local = 1;
  if (const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
    local = std::atoi(v);
  } else if (std::getenv("SLURM_STEP_ID")) {   // inside srun: this step's tasks on this node
    const char* v = std::getenv("SLURM_STEP_TASKS_PER_NODE");   // "2(x3)" or "3,2": the first
    if (v && std::getenv("SLURM_LOCALID")) local = std::atoi(v);
  }
  const int all = int(std::max(1u, std::thread::hardware_concurrency()));
  // A launcher that binds each rank to its own cores (mpirun --bind-to, srun --cpu-bind)
  // leaves an affinity mask narrower than the machine: those cores are this rank's alone.
  cpu_set_t set;
  CPU_ZERO(&set);
  const int mask = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : all;
  if (mask > 0 && mask < all) return mask;
  return std::max(1, all / std::max(1, local));
}

DistStep::DistStep(dist::Topology& topo, model::Transformer& model, const std::string& pp_schedule,
                   model::Transformer* reverse)
    : topo_(topo), model_(model), reverse_(reverse), schedule_(pp_schedule) {
  if (schedule_ != "1f1b" && schedule_ != "gpipe" && schedule_ != "dualpipe")
    DS_THROW(UsageError, "--pp-schedule {}: expected 1f1b, gpipe or dualpipe", schedule_);
  DS_CHECK((schedule_ == "dualpipe") == (reverse_ != nullptr),
           "DistStep: the reverse-direction chunk goes with --pp-schedule dualpipe");
  // The tied embedding (1F1B/GPipe with MTP): first and last stage of each pipeline column
  // share one group; middle stages end up in groups of their own (split is collective over
  // the world). Under DualPipe the first and last stage share one tensor on ranks 0 and pp-1.
  if (reverse_) return;
  const auto& L = topo.layout();
  const bool ends = topo.is_first_stage() || topo.is_last_stage();
  const bool tied = L.pp > 1 && model.args().n_mtp_layers > 0;
  auto g = topo.world().split(ends ? topo.dp_rank() : L.dp + topo.rank(), topo.pp_rank());
  if (tied && ends) tied_ = std::move(g);
}

void DistStep::pipeline(const ops::Context& ctx, const std::vector<MicroBatch>& mbs,
                        const model::LossWeights& lw, bool train, StepAccumulator* acc,
                        std::pair<double, double>* eval) {
  dist::Comm& pp = topo_.pp();
  const int P = topo_.layout().pp, r = topo_.pp_rank();
  const int64_t C = model_.args().dim;
  const size_t M = mbs.size();
  std::vector<model::Transformer::PassPtr> passes(M);
  std::vector<Tensor> in_flight;            // buffers of pending isends
  std::vector<dist::Request> sends;
  // Drops the buffers of the sends that completed (a step of many micro-batches kept every
  // boundary tensor it sent to the end of the step)
  auto reap = [&] {
    size_t k = 0;
    for (size_t i = 0; i < sends.size(); ++i) {
      if (sends[i].test()) continue;
      if (k != i) sends[k] = std::move(sends[i]), in_flight[k] = std::move(in_flight[i]);
      ++k;
    }
    sends.resize(k);
    in_flight.resize(k);
  };
  const auto t_step = Clock::now();
  double compute = 0, wait = 0;

  auto rows = [&](size_t m) {
    const Tensor& t = mbs[m].batch.tokens;
    return t.size(0) * (t.size(1) - 1);
  };
  auto fwd = [&](int dir, size_t m) {
    model::Transformer& chunk = dir == 0 ? model_ : *reverse_;
    const int s = stage_of(P, r, dir);
    Tensor h_in, h_out;
    if (s > 0) {
      h_in = Tensor::empty({rows(m), C});
      const auto t0 = Clock::now();
      pp.recv(h_in.raw(), h_in.numel(), DType::f32, rank_of_stage(P, s - 1, dir), tag_of(m, 0));
      wait += seconds_since(t0);
    }
    const auto t0 = Clock::now();
    passes[m] = chunk.stage_forward(ctx, mbs[m].batch, mbs[m].weights.value_or(lw),
                                    float(mbs[m].share), train, h_in, h_out);
    compute += seconds_since(t0);
    if (s < P - 1) {
      sends.push_back(pp.isend(h_out.raw(), h_out.numel(), DType::f32, rank_of_stage(P, s + 1, dir),
                               tag_of(m, 0)));
      in_flight.push_back(h_out);
    }
    if (!train) {
      const model::StepResult res = chunk.stage_result(*passes[m]);
      if (s == P - 1 && eval && !mbs[m].dummy) {
        eval->first += res.loss_main * res.target_weight;
        eval->second += res.target_weight;
      }
      passes[m].reset();
    }
  };
  auto bwd = [&](int dir, size_t m) {
    model::Transformer& chunk = dir == 0 ? model_ : *reverse_;
    const int s = stage_of(P, r, dir);
    Tensor dh_out, dh_in;
    if (s < P - 1) {
      dh_out = Tensor::empty({rows(m), C});
      const auto t0 = Clock::now();
      pp.recv(dh_out.raw(), dh_out.numel(), DType::f32, rank_of_stage(P, s + 1, dir), tag_of(m, 1));
      wait += seconds_since(t0);
    }
    const auto t0 = Clock::now();
    chunk.stage_backward(ctx, *passes[m], dh_out, dh_in);
    compute += seconds_since(t0);
    if (!mbs[m].dummy) acc->add(chunk.stage_result(*passes[m]), mbs[m].share);
    passes[m].reset();
    if (s > 0) {
      sends.push_back(pp.isend(dh_in.raw(), dh_in.numel(), DType::f32, rank_of_stage(P, s - 1, dir),
                               tag_of(m, 1)));
      in_flight.push_back(dh_in);
    }
  };

  // evaluation runs forward-only through the direction-0 chunks
  for (const PipeOp& op : pipeline_schedule(schedule_, P, r, int(M), train)) {
    if (op.backward) bwd(op.dir, size_t(op.m));
    else fwd(op.dir, size_t(op.m));
    reap();
  }
  const auto t0 = Clock::now();
  for (auto& q : sends) q.wait();
  wait += seconds_since(t0);
  if (train) {
    timing_.last_compute_s = compute;
    timing_.last_step_s = seconds_since(t_step);
    timing_.compute_s += compute;
    timing_.wait_s += wait;
    timing_.step_s += timing_.last_step_s;
    timing_.steps += 1;
  }
}

StepAccumulator DistStep::forward_backward(const ops::Context& ctx,
                                           const std::vector<MicroBatch>& mbs,
                                           const model::LossWeights& lw) {
  StepAccumulator acc;
  auto a2a = [&] { return model_.a2a_bytes_sent() + (reverse_ ? reverse_->a2a_bytes_sent() : 0); };
  const int64_t a2a0 = a2a();
  pipeline(ctx, mbs, lw, true, &acc, nullptr);
  acc.a2a_bytes = a2a() - a2a0;
  // A rank without micro-batches still contributes well-formed (zero) counts.
  if (acc.expert_counts.empty())
    acc.expert_counts.assign(size_t(model_.n_moe_layers()),
                             std::vector<int32_t>(size_t(model_.args().n_routed_experts), 0));
  return acc;
}

std::pair<double, double> DistStep::forward_loss(const ops::Context& ctx,
                                                 const std::vector<MicroBatch>& batches) {
  std::pair<double, double> out{0.0, 0.0};
  pipeline(ctx, batches, model::LossWeights{0.0f, 0.0f}, false, nullptr, &out);
  std::vector<double> v{out.first, out.second};
  topo_.world().all_reduce_sum(v);
  return {v[0], v[1]};
}

void DistStep::reduce_tied_gradients() {
  if (!tied_) return;
  model::Param* w = nullptr;
  for (auto& p : model_.store().params())
    if (p.info.name == "model.embed_tokens.weight") w = &p;
  DS_CHECK(w && w->grad.defined(), "tied embedding: no gradient for model.embed_tokens.weight");
  tied_->all_reduce_sum(w->grad);
}

void DistStep::reduce(StepAccumulator& acc) {
  std::vector<double> v{acc.loss, acc.loss_main, acc.loss_mtp, acc.loss_balance,
                        double(acc.a2a_bytes)};
  for (const auto& c : acc.expert_counts) v.insert(v.end(), c.begin(), c.end());
  topo_.world().all_reduce_sum(v);
  acc.loss = v[0];
  acc.loss_main = v[1];
  acc.loss_mtp = v[2];
  acc.loss_balance = v[3];
  acc.a2a_bytes = int64_t(v[4]);
  size_t i = 5;
  for (auto& c : acc.expert_counts)
    for (auto& x : c) x = int32_t(v[i++]);
}

bool DistStep::agree_stop(bool local) {
  int64_t f = local ? 1 : 0;
  topo_.world().all_reduce_max(&f, 1, DType::i64);
  return f != 0;
}

DistRuntime::DistRuntime(const dist::DistOptions& o) : o_(o) {
  check_pp_schedule(o.pp_schedule, o.layout.pp);
  auto world = dist::init_world(o.launch);
  if (world->size() > 1)
    topo_ = dist::Topology::create(std::move(world), o.layout,
                                   dist::detect_launch(o.launch).local_rank);
  else if (o.layout.pp > 1 || o.layout.ep > 1)
    DS_THROW(UsageError, "--pp {} --ep {} need several ranks: launch with mpirun -n N or srun "
             "--mpi=pmix -n N", o.layout.pp, o.layout.ep);
}

DistRuntime::~DistRuntime() = default;

bool DistRuntime::main() const { return !topo_ || topo_->is_main(); }

void DistRuntime::check_model(const model::ModelArgs& a, const std::string& what) const {
  if (topo_) check_layout_fits(topo_->layout(), a, what);
}

void check_layout_fits(const dist::Layout& L, const model::ModelArgs& a,
                       const std::string& what) {
  if (L.ep > 1 && a.n_routed_experts % L.ep != 0)
    DS_THROW(UsageError, "--ep {}: {} has {} routed experts, which {} ranks cannot share "
             "equally (--ep must divide n_routed_experts)", L.ep, what, a.n_routed_experts, L.ep);
  if (L.pp > a.n_layers)
    DS_THROW(UsageError, "--pp {}: {} has {} layer{}, fewer than the pipeline stages (each "
             "stage needs at least one)", L.pp, what, a.n_layers, a.n_layers == 1 ? "" : "s");
}

bool DistRuntime::partial_model() const {
  return topo_ && (topo_->layout().ep > 1 || topo_->layout().pp > 1);
}

model::ModelParallel DistRuntime::model_parallel() {
  model::ModelParallel par;
  if (topo_) {
    par.ep.comm = &topo_->ep();
    par.pp_rank = topo_->pp_rank();
    par.pp_size = topo_->layout().pp;
  }
  return par;
}

std::unique_ptr<model::Transformer> DistRuntime::build_model(const model::ModelArgs& args,
                                                             model::ParamStore& store) {
  model::ModelParallel par = model_parallel();
  if (!topo_ || o_.pp_schedule != "dualpipe")
    return std::make_unique<model::Transformer>(args, store, par);
  const int P = topo_->layout().pp, r = topo_->pp_rank();
  model::ModelParallel rev = par;
  rev.pp_rank = P - 1 - r;
  std::unique_ptr<model::Transformer> fwd;
  if (rev.pp_rank < r) reverse_ = std::make_unique<model::Transformer>(args, store, rev);
  fwd = std::make_unique<model::Transformer>(args, store, par);
  if (!reverse_) reverse_ = std::make_unique<model::Transformer>(args, store, rev);
  return fwd;
}

void DistRuntime::attach(model::Transformer& m, const OptimizerOptions& opt) {
  DS_CHECK(topo_, "DistRuntime::attach on one process");
  dist::Comm* dp = &topo_->dp();
  dist::Comm* edp = &topo_->edp();
  std::set<std::string> copies;
  if (reverse_) {
    // Stages r and pp-1-r live on ranks r and pp-1-r (x dp): ZeRO-1 shards them over that pair
    // of pipeline ranks, so the two copies of a stage receive one summed gradient and one update.
    const auto& L = topo_->layout();
    const int r = topo_->pp_rank(), pair = std::min(r, L.pp - 1 - r), side = r < L.pp / 2 ? 0 : 1;
    pair_dp_ = topo_->world().split(pair, side * L.dp + topo_->dp_rank());
    pair_edp_ = topo_->world().split(pair * L.ep + topo_->ep_rank(),
                                     side * (L.dp / L.ep) + topo_->edp_rank());
    dp = pair_dp_.get();
    edp = pair_edp_.get();
  } else if (m.holds_embedding_copy()) {
    copies.insert("model.embed_tokens.weight");
  }
  opt_ = std::make_unique<ShardedAdamW>(m.store(), opt, *dp, *edp, copies);
  step_ = std::make_unique<DistStep>(*topo_, m, o_.pp_schedule, reverse_.get());
}

int64_t step_micro_batches(int64_t rows, const dist::Layout& layout, int64_t micro,
                           const std::string& pp_schedule, int64_t* micro_rows) {
  const int64_t largest = (rows + layout.dp - 1) / layout.dp;
  const int64_t mb = std::max<int64_t>(1, micro > 0 ? std::min(micro, largest) : largest);
  int64_t n = (largest + mb - 1) / mb;   // micro-batches of the largest slice
  // DualPipe needs an even count of at least 2 pp: a short step (batch ramp, the last step of
  // an epoch) is topped up with stand-ins rather than refused mid-run
  if (pp_schedule == "dualpipe") n = std::max<int64_t>(n + n % 2, 2 * layout.pp);
  if (micro_rows) *micro_rows = mb;
  return n;
}

std::vector<std::pair<int64_t, int64_t>> DistRuntime::micro_slices(int64_t rows,
                                                                   int64_t micro) const {
  const int dp = topo_->layout().dp;
  const auto [first, count] = dp_slice(rows, dp, topo_->dp_rank());
  int64_t mb = 0;
  const int64_t n = step_micro_batches(rows, topo_->layout(), micro, o_.pp_schedule, &mb);
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t r = 0; r < count; r += mb) out.emplace_back(first + r, std::min(mb, count - r));
  while (int64_t(out.size()) < n) out.emplace_back(0, 0);
  return out;
}

std::vector<int64_t> DistRuntime::eval_batches(int64_t n) const {
  const int dp = topo_->layout().dp;
  std::vector<int64_t> out;
  for (int64_t i = topo_->dp_rank(); i < n; i += dp) out.push_back(i);
  while (int64_t(out.size()) < (n + dp - 1) / dp) out.push_back(-1);
  return out;
}

std::string DistRuntime::describe() const {
  if (!topo_) return "";
  const auto& L = topo_->layout();
  return fmt::format("{} ranks (pp {} x dp {}, ep {})", topo_->world_size(), L.pp, L.dp, L.ep);
}

UpdateResult apply_update(const ops::Context& ctx, DistStep& d, ShardedAdamW& opt,
                          TrainerState& st, const StepAccumulator& acc, double lr, double gamma,
                          bool skip_nonfinite, const std::string& run_dir) {
  UpdateResult u;
  if (ctx.operands) ctx.operands->clear();   // the weights are about to change
  d.reduce_tied_gradients();
  opt.reduce_gradients(ctx);
  u.grads = opt.grad_stats(ctx, d.topology().world());
  // acc and the stats are sums over the world: every rank takes the same branch
  if (!finite_or_skip(ctx, opt.params(), st, acc.loss, u.grads, skip_nonfinite, run_dir))
    return u;
  opt.step(ctx, float(lr), u.grads);
  st.optimizer_steps++;
  d.model().update_router_bias(acc.expert_counts, float(gamma));
  if (d.reverse()) d.reverse()->update_router_bias(acc.expert_counts, float(gamma));
  u.applied = true;
  return u;
}

std::filesystem::path save_run_checkpoint(const std::filesystem::path& run_dir, int keep_last,
                                          const io::TokenizerFiles& tokenizer, bool bf16,
                                          const model::ModelArgs& args,
                                          const model::ParamStore& params, ShardedAdamW& opt,
                                          const TrainerState& st, dist::Comm& world,
                                          const model::ParamStore* ema) {
  SaveSpec spec;
  spec.dir = run_dir / io::checkpoint_dir_name(uint64_t(st.step));
  spec.tokenizer = tokenizer;
  spec.bf16 = bf16;
  spec.ema = ema;
  spec.keep_last = keep_last;   // rank 0 prunes once the directory is published
  save_checkpoint(spec, args, params, opt, st, world);
  spdlog::info("saved {}", spec.dir.string());
  return spec.dir;
}

}  // namespace ds::train
