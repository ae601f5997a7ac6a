// Internal state of one ds-rl run (lib/rl/rl_run.cpp: setup, resume, loop, checkpoints;
// lib/rl/rl_step.cpp: one GRPO step). Not part of the public API.
// Letters: P prompts per step, G group size, n = P*G completions, B rows of a micro-batch,
// T its longest prompt + completion minus 1. On several ranks a rank holds the samples of its
// slice [p0, p0 + Pr) of the step's prompts: Pr*G of the n completions, global index p0*G + i.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ds/infer/stop.hpp"
#include "ds/io/staging.hpp"
#include "ds/model/pretrained.hpp"
#include "ds/rl/prompts.hpp"
#include "ds/rl/rewards.hpp"
#include "ds/rl/rl.hpp"
#include "ds/train/dist_step.hpp"
#include "ds/train/ema.hpp"
#include "ds/train/metrics.hpp"
#include "ds/train/state.hpp"
#include "ds/train/trainer.hpp"

namespace ds::rl::detail {

// One sampled completion of a step and what the updates need of it.
struct Sample {
  int64_t prompt = 0;               // index into Run::prompts
  std::vector<int32_t> tokens;      // (|o|) generated ids, the stop id included
  std::string text;                 // completion text (stop id removed)
  double reward = 0, advantage = 0;
  std::vector<float> logp_old;      // (|o|) pi_old, from the first update's forward
  std::vector<float> logp_ref;      // (|o|) reference model (beta > 0)
};

// A micro-batch of completions [first, first + rows) as a model batch: tokens (B, T+1) =
// prompt + completion + padding (id 0), loss_mask (B, T) = 1 on the completion targets,
// lengths (B) = prompt + completion (the balance loss leaves the padding out, so it does not
// depend on the micro-batch), and each completion's GrpoSeq (offset of its first target in
// the (B*T) score arrays).
struct MicroBatch {
  size_t first = 0, rows = 0;
  model::Batch batch;
  std::vector<GrpoSeq> seqs;   // (B)
};

// Timings and statistics of one step, for the metrics line.
struct StepReport {
  double rollout_s = 0, reward_s = 0, reference_s = 0, update_s = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double loss = 0, loss_pg = 0, loss_balance = 0, kl = 0, entropy = 0, clip_fraction = 0;
  double grad_norm = 0, reward_mean = 0, reward_std = 0, accuracy = -1;
  double no_signal_groups = 0;      // fraction of groups whose rewards are all equal
  std::vector<double> term_means;   // per reward term
  int64_t max_len = 0;              // longest completion
};

struct Run {
  const RlOptions& o;
  ops::Context ctx;
  model::Pretrained policy;                 // weights being trained (store, model, tokenizer)
  std::optional<model::Pretrained> ref;     // frozen reference (beta > 0)
  std::unique_ptr<train::AdamW> opt;          // one process
  std::unique_ptr<train::DistRuntime> ranks;   // several ranks when ranks->active()
  std::unique_ptr<train::WeightEma> ema;        // --ema-decay
  std::vector<RlPrompt> prompts;
  std::vector<std::vector<int32_t>> prompt_ids;   // rendered and tokenized, per prompt
  std::vector<std::string> golds;                 // reference answers ("" when none)
  std::unique_ptr<RewardSet> rewards;
  std::unique_ptr<infer::TokenText> text;
  int32_t eos = 1;
  train::TrainerState st;
  train::MetricsWriter metrics;
  std::vector<int64_t> order;               // prompt order of epoch order_epoch
  int64_t order_epoch = -1;
  train::CheckpointMark mark;               // the checkpoint resumed from, the last step written
  std::unique_ptr<io::RunDirLock> lock;     // --out (rank 0)
  double rollout_s = 0, update_s = 0;       // totals of this invocation (summary)
  int64_t rollout_tokens = 0, steps_run = 0;

  explicit Run(const RlOptions& opts) : o(opts) {}
  bool distributed() const { return ranks && ranks->active(); }
  bool main() const { return !ranks || ranks->main(); }
  // rl_run.cpp
  void init();
  std::vector<int64_t> next_prompts();      // P prompt indices; advances st.data
  void save();
  // rl_step.cpp
  StepReport step();
};

// The pieces of Run::step after the rewards (rl_step.cpp; tests/rl/test_rl_step.cpp).
// Micro-batches of --micro-batch-size consecutive samples (all of them when 0).
std::vector<MicroBatch> make_micros(const Run& r, const std::vector<Sample>& samples);
// samples[i].logp_ref from the reference model (beta > 0).
void reference_logprobs(Run& r, std::vector<Sample>& samples, std::vector<MicroBatch>& micros);
// Update u of the step: one forward + backward over every micro-batch, then the optimiser
// step. u = 0 records each sample's logp_old (the sampling policy) and the report's loss,
// kl and entropy; later updates take rho against those. `all` += this update's GrpoStats.
void update(Run& r, std::vector<Sample>& samples, std::vector<MicroBatch>& micros, int64_t u,
            StepReport& rep, GrpoStats& all);

}  // namespace ds::rl::detail
