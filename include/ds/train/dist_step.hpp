// One rank's part of a distributed training step (docs/distributed.md): the micro-batches of
// this rank's data-parallel slice through this rank's pipeline stage(s), under the 1F1B, GPipe
// or DualPipe schedule (pipeline_schedule.hpp), activations and gradients exchanged with the
// neighbouring stages; then the sums
// every rank needs: the tied embedding's gradient between the first and last stage, and the
// step's losses and expert counts over the world (so the metrics, the non-finite check and
// the router-bias update see the whole global batch, exactly as one process would).
// Expert parallelism happens inside the MoE layers; ZeRO-1 in ShardedAdamW (zero.hpp).
// reference: Narayanan et al. 2021 (1F1B: warm-up of pp - stage - 1 forwards, then one
// forward / one backward); DeepSeek-V3 paper §3.2.1; spec §7.1 (bubble formulas).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ds/dist/topology.hpp"
#include "ds/model/transformer.hpp"
#include "ds/train/trainer.hpp"

namespace ds::train {

struct MicroBatch {
  model::Batch batch;
  double share = 1;     // its weight in the step's loss (b / global batch for ds-pretrain)
  std::optional<model::LossWeights> weights;   // its own loss weights (default: the step's)
  // A stand-in that only keeps this rank in step with its expert-parallel group (see
  // DistRuntime::micro_slices): run with share 0, its losses and expert counts dropped.
  bool dummy = false;
};

// Busy/idle split of this rank's pipeline work, summed over the steps run so far.
struct PipelineTiming {
  double compute_s = 0;   // inside stage_forward / stage_backward
  double wait_s = 0;      // blocked receiving activations or gradients
  double step_s = 0;      // wall time of the micro-batch phase
  int64_t steps = 0;
  double last_compute_s = 0, last_step_s = 0;   // the latest step alone
  double bubble() const { return step_s > 0 ? 1.0 - compute_s / step_s : 0.0; }
  double last_bubble() const { return last_step_s > 0 ? 1.0 - last_compute_s / last_step_s : 0.0; }
};

class DistStep {
 public:
  // Collective over topo.world() (builds the first/last-stage group of the tied embedding).
  // `model` is this rank's stage (direction 0); under --pp-schedule dualpipe `reverse` is its
  // stage pp-1-r of the reverse direction (same ParamStore).
  DistStep(dist::Topology& topo, model::Transformer& model, const std::string& pp_schedule,
           model::Transformer* reverse = nullptr);

  // Forward + backward of this rank's micro-batches (every stage of a pipeline column must
  // be given the same list). Gradients are ADDED x share; returns this rank's part of the
  // step's losses and counts (reduce() completes it).
  StepAccumulator forward_backward(const ops::Context& ctx, const std::vector<MicroBatch>& mbs,
                                   const model::LossWeights& lw);
  // Forward only, completed over the world: the sum over every rank's batches of
  // loss_main x target_weight and the sum of target_weight (their ratio is the mean loss per
  // target token); dummies count for nothing. Collective: every rank calls it with as many
  // batches as the others (DistRuntime::eval_batches).
  std::pair<double, double> forward_loss(const ops::Context& ctx,
                                         const std::vector<MicroBatch>& batches);
  // Sums the tied embedding's gradient between the first and last stage (no-op without it).
  void reduce_tied_gradients();
  // Completes acc over the world: losses and expert counts summed over every rank.
  void reduce(StepAccumulator& acc);
  // True on every rank when any rank got SIGTERM/SIGINT (all stop after the same step).
  bool agree_stop(bool local);

  const PipelineTiming& timing() const { return timing_; }
  dist::Topology& topology() { return topo_; }
  model::Transformer& model() { return model_; }
  model::Transformer* reverse() { return reverse_; }

 private:
  void pipeline(const ops::Context& ctx, const std::vector<MicroBatch>& mbs,
                const model::LossWeights& lw, bool train, StepAccumulator* acc,
                std::pair<double, double>* eval);

  dist::Topology& topo_;
  model::Transformer& model_;
  model::Transformer* reverse_ = nullptr;
  std::string schedule_;
  std::unique_ptr<dist::Comm> tied_;   // first + last stage with this dp_rank (null: none)
  PipelineTiming timing_;
};

class ShardedAdamW;

// The micro-batches of a step of `rows` rows on a data-parallel rank of `layout` (the rows of
// the largest dp slice in micro-batches of `micro`, micro <= 0: the whole slice; raised to an
// even count of at least 2 pp under DualPipe), and the rows of a full one (in *micro_rows).
int64_t step_micro_batches(int64_t rows, const dist::Layout& layout, int64_t micro,
                           const std::string& pp_schedule, int64_t* micro_rows = nullptr);

// UsageError when `layout` cannot hold the model `what` names (its config.json or preset):
// --ep must divide n_routed_experts, --pp at most n_layers.
void check_layout_fits(const dist::Layout& layout, const model::ModelArgs& a,
                       const std::string& what);

// The distributed side of a training run, shared by ds-pretrain and ds-sft: the world and its
// groups, the ZeRO-1 optimiser and the step runner. Inactive (one process) when the launch has
// one rank; then the tools keep their single-process path untouched.
class DistRuntime {
 public:
  // Starts the world (dist::init_world). UsageError when --pp/--ep ask for more than one rank
  // but only one was launched.
  explicit DistRuntime(const dist::DistOptions& o);
  ~DistRuntime();
  bool active() const { return bool(topo_); }
  bool main() const;                       // rank 0, or one process
  model::ModelParallel model_parallel();   // this rank's part of the model (direction 0)
  // Builds this rank's model into `store`: the Transformer of model_parallel(), and under
  // DualPipe also the reverse-direction stage (kept here; the two are registered in stage
  // order so the ranks sharing stages have the same parameter layout).
  std::unique_ptr<model::Transformer> build_model(const model::ModelArgs& args,
                                                  model::ParamStore& store);
  // True when this rank's store holds part of the model (--ep or --pp > 1).
  bool partial_model() const;
  // check_layout_fits for this world's layout. Called before any data is read, on every rank
  // alike (the world and the model are the same everywhere).
  void check_model(const model::ModelArgs& a, const std::string& what) const;
  // After the model is built: ShardedAdamW over its parameters and the DistStep. Collective.
  void attach(model::Transformer& m, const OptimizerOptions& opt);
  dist::Topology& topo() { return *topo_; }
  DistStep& step() { return *step_; }
  ShardedAdamW& opt() { return *opt_; }
  // The micro-batches of this rank's data-parallel slice of a global batch of `rows` rows:
  // (first, count) pairs of at most `micro` rows (micro <= 0: the largest slice). Every rank
  // gets the same number of entries, since an expert-parallel MoE layer needs every rank of
  // its group in every call: a rank whose slice is short (a batch that dp does not divide, or
  // smaller than dp) gets entries with count 0, which the caller runs as a dummy MicroBatch
  // (one row of the global batch, share 0). Under DualPipe the count is also raised to an even
  // number of at least 2 pp (the schedule's requirement), with stand-ins.
  std::vector<std::pair<int64_t, int64_t>> micro_slices(int64_t rows, int64_t micro) const;
  // The evaluation batches [0, n) this rank runs (dp_rank, dp_rank + dp, ...), padded with -1
  // (a dummy) to the same count on every rank.
  std::vector<int64_t> eval_batches(int64_t n) const;
  // Logs the layout line ("N ranks (pp x dp, ep)"), "" for one process.
  std::string describe() const;

 private:
  dist::DistOptions o_;
  std::unique_ptr<dist::Topology> topo_;
  std::unique_ptr<model::Transformer> reverse_;   // DualPipe: stage pp-1-r
  std::unique_ptr<dist::Comm> pair_dp_, pair_edp_;   // DualPipe: ranks r and pp-1-r x dp
  std::unique_ptr<DistStep> step_;
  std::unique_ptr<ShardedAdamW> opt_;
};

// apply_update (trainer.hpp) for distributed runs: the tied embedding's gradient summed, the
// gradients reduce-scattered (ZeRO-1), the global norm and non-finite count over the world
// (so every rank takes the same decision), AdamW on the owned chunks + all-gather, and the
// router-bias update from acc's counts (reduced by DistStep::reduce first). Collective.
UpdateResult apply_update(const ops::Context& ctx, DistStep& d, ShardedAdamW& opt,
                          TrainerState& st, const StepAccumulator& acc, double lr, double gamma,
                          bool skip_nonfinite, const std::string& run_dir);

// save_run_checkpoint (trainer.hpp) for distributed runs: every rank writes its part of the
// same directory (docs/formats.md "Checkpoints written by several ranks"); rank 0 prunes.
// Collective over world.
std::filesystem::path save_run_checkpoint(const std::filesystem::path& run_dir, int keep_last,
                                          const io::TokenizerFiles& tokenizer, bool bf16,
                                          const model::ModelArgs& args,
                                          const model::ParamStore& params, ShardedAdamW& opt,
                                          const TrainerState& st, dist::Comm& world,
                                          const model::ParamStore* ema = nullptr);

// Rows [first, first + count) of the global batch that data-parallel rank dp_rank of dp takes:
// [B*r/dp, B*(r+1)/dp). Slices may differ by one row (batch-size ramps): every micro-batch
// weighs b / B of the global batch, so the sum over ranks is the full step either way.
std::pair<int64_t, int64_t> dp_slice(int64_t global_batch, int dp, int dp_rank);

// Threads per rank when --threads is 0: the cores of this machine shared by the ranks on it
// (OMPI_COMM_WORLD_LOCAL_SIZE, or inside an srun step SLURM_STEP_TASKS_PER_NODE; else 1),
// or the cores of the affinity mask when a launcher bound the rank to fewer than all.
int default_threads_per_rank();

}  // namespace ds::train
