// Building blocks every training loop shares (ds-pretrain, ds-sft, ds-rl): the
// per-step accumulation of micro-batch losses and expert loads, the optimiser update with
// the non-finite policy and the router-bias update, the step loop with SIGTERM/SIGINT
// handling, checkpoint save + keep-last pruning, resume resolution, the SFT cosine learning
// rate and the --profile report. Each loop keeps its own data, batches and metrics lines;
// nothing here knows where the tokens came from.
// reference: spec §4.8 (one pre-training step), §5.1 (SFT schedule); docs/formats.md.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "ds/model/transformer.hpp"
#include "ds/ops/ops.hpp"
#include "ds/train/optimizer.hpp"
#include "ds/train/state.hpp"

namespace ds::train {

// Expert-load MaxVio of one MoE layer: (max load - mean load) / mean load (0 when empty).
double max_violation(const std::vector<int32_t>& counts /*(E)*/);

// Losses and expert loads of one optimiser step, summed over its micro-batches.
struct StepAccumulator {
  double loss = 0, loss_main = 0, loss_mtp = 0, loss_balance = 0;
  std::vector<std::vector<int32_t>> expert_counts;   // per MoE layer (E): tokens routed
  int64_t a2a_bytes = 0;   // expert-parallel all-to-all bytes sent between ranks (DistStep)
  // Adds one micro-batch: its losses times `share` (its weight in the step's loss: b/B for
  // ds-pretrain, W_m/W_step for ds-sft); its expert counts unweighted.
  void add(const model::StepResult& r, double share);
  std::vector<double> maxvio() const;                 // per MoE layer, main then MTP
};

// Loss weights of one micro-batch of rows_m of the step's B rows when its token losses weigh
// share = W_m / W (its fraction of the step's target tokens; the forward's grad_scale): the
// balance loss is a mean over the step's rows, so the micro-batch runs with
// alpha x (rows_m / B) / share. Then every split into micro-batches or data-parallel ranks
// optimises the same objective. share 0 (no targets): alpha 0, no gradient flows.
model::LossWeights micro_loss_weights(const model::LossWeights& w, int64_t rows_m, int64_t B,
                                      double share);

struct UpdateResult {
  GradStats grads;        // global norm (before clipping) and non-finite count
  bool applied = false;   // false: the step was skipped (non-finite, --skip-nonfinite)
};

// Finishes optimiser step st.step (the caller has already incremented st.step and
// st.tokens_seen, and the micro-batches have accumulated the gradients): global gradient
// norm; if the loss or a gradient is not finite, throws NumericsError naming the step and
// `run_dir` (whose last checkpoint stays intact) unless skip_nonfinite, in which case the
// step is counted in st.nonfinite_skipped and nothing changes; otherwise AdamW at `lr`,
// st.optimizer_steps++, and the router-bias update with `gamma` from the summed counts.
UpdateResult apply_update(const ops::Context& ctx, model::Transformer& model, AdamW& opt,
                          TrainerState& st, const StepAccumulator& acc, double lr,
                          double gamma, bool skip_nonfinite, const std::string& run_dir);

// The non-finite policy of apply_update: true when the step may be applied; otherwise
// throws NumericsError (unless skip_nonfinite) or counts the skipped step and returns false.
// A non-finite step whose cause is the weights themselves (an earlier update diverged: a
// --lr far too high) is a NumericsError naming the first such tensor of `params` (this rank's)
// either way: skipping would skip every later step and save non-finite checkpoints. So is
// the kMaxNonfiniteStreak-th skipped step in a row (weights finite but diverged).
inline constexpr int64_t kMaxNonfiniteStreak = 10;
bool finite_or_skip(const ops::Context& ctx, const model::ParamStore& params, TrainerState& st,
                    double loss, const GradStats& grads, bool skip_nonfinite,
                    const std::string& run_dir);

// Runs step() while st.step < st.total_steps, at most `stop_after` times when > 0. SIGTERM
// and SIGINT are caught while the loop runs (an InterruptScope that ignores repeats) and end
// it after the current step. Callers hold their own kIgnored scope over the loop and the save
// that follows, so that a repeated signal cannot cut the save short (the loop's scope nests in
// it). Returns the signal that stopped it, 0 if none. Distributed runs
// pass `agree` (this rank's flag -> whether any rank got a signal; collective), called once
// before each step, so all ranks stop after the same step (a rank that saw no signal
// returns SIGTERM).
int run_step_loop(const TrainerState& st, int64_t stop_after, const std::function<void()>& step,
                  const std::function<bool(bool)>& agree = {});

// Writes run_dir/step-NNNNNNNN (st.step) atomically with the training state (and `ema`, the
// weights' moving average, as its ema/ model directory when given), copies the tokenizer
// files from `tokenizer` (a tokenizer.json or its directory; "" = none; its add_bos_token
// set into tokenizer_config.json when given), then deletes all but
// the keep_last newest checkpoints. Returns the checkpoint directory.
std::filesystem::path save_run_checkpoint(const std::filesystem::path& run_dir, int keep_last,
                                          const io::TokenizerFiles& tokenizer, bool bf16,
                                          const model::ModelArgs& args,
                                          const model::ParamStore& params, AdamW& opt,
                                          const TrainerState& st,
                                          const model::ParamStore* ema = nullptr);

// Which checkpoints an invocation writes. Its final save is skipped when it already wrote
// that step (--save-every, then --stop-after) or ran no step since resuming (a signal before
// the first step, an abandoned ds-rl step): the resumed checkpoint holds that step, and
// rewriting it in place would drop what this invocation lacks (ema/ without --ema-decay).
struct CheckpointMark {
  std::filesystem::path resumed_from;   // the checkpoint resumed from ("" = a fresh run)
  int64_t start_step = 0;               // the step this invocation started from
  int64_t saved_step = -1;              // the step of the last checkpoint it wrote
  bool needs_save(int64_t step) const {
    return step != saved_step && (step != start_step || resumed_from.empty());
  }
  // The checkpoint that holds `step` (the run's summary): run_dir/step-N, or the resumed one
  // when this invocation wrote nothing since.
  std::filesystem::path checkpoint(const std::filesystem::path& run_dir, int64_t step) const;
};

// A resume continues the model the checkpoint holds: `ckpt`/config.json (FormatError when
// missing or malformed) must describe the same model as `run` (UsageError naming the keys that
// differ, with `hint`: how this tool is given the model).
void check_resume_config(const std::filesystem::path& ckpt, const model::ModelArgs& run,
                         const std::string& hint);

// --resume: "auto" -> the latest complete checkpoint in run_dir (empty path if there is none);
// "never" -> empty path, and a UsageError if run_dir already holds checkpoints (keep-last would
// mix the two runs' checkpoints); "" -> empty path (library callers); otherwise that directory
// (UsageError if it is not one). When run_dir already holds checkpoints, DIR must be the newest
// of them, or a checkpoint outside run_dir that the newest's run branched from (then the
// newest is returned: the same command continues the branch); else a UsageError (an older
// one's successors would be overwritten, another run's mixed with this one's).
std::filesystem::path resolve_resume(const std::string& resume, const std::string& run_dir);

// The absolute form of `resumed` to record as TrainerState::branched_from when it lies outside
// run_dir (a branch), else `kept` (the loaded state's own, carried along).
std::string branch_origin(const std::filesystem::path& resumed, const std::string& run_dir,
                          const std::string& kept);

// Learning rate of 0-based step `step` out of total_steps: linear warm-up to `peak` over
// warmup_steps ((step + 1) / warmup), then a half cosine from `peak` to `final_lr`, reached
// exactly at the last step (total_steps - 1). The SFT schedule of spec §5.1 (5e-6 -> 1e-6).
double cosine_lr(int64_t step, int64_t total_steps, int64_t warmup_steps, double peak,
                 double final_lr);

// Peak resident set size of this process in MiB.
double peak_rss_mb();

// --profile: prints the per-op table on stderr and returns the JSON summary (an object as
// text). step_seconds: wall seconds of the timed steps (evaluation and checkpoints excluded).
std::string profile_report(const ops::Profiler& prof, double step_seconds, int64_t steps,
                           int64_t tokens);

}  // namespace ds::train
