// ds-rl's library entry point: options (every default written once, here) and run_rl(), the
// GRPO run (spec §5.3): a policy initialised from a checkpoint (--init), a frozen copy of it as
// the reference model (not loaded when beta = 0), and per step: prompts_per_step prompts, a
// group of group_size sampled completions each (the inference engine on the current weights),
// rewards (built-in rules and/or an external command), group-normalised advantages, pi_old
// log-probs from the training forward, then `updates` AdamW steps on the clipped objective
// with the k3 KL penalty. Metrics JSONL per step, atomic checkpoints (kind "rl") with
// keep-last-N, exact resume (prompt order and sampling continue), SIGTERM = save and stop.
// Data parallel over ranks (mpirun -n N; --pp and --ep must be 1): each rank samples, scores
// and trains on a contiguous slice of the step's prompts with the whole model, the gradients
// meet in ZeRO-1 AdamW; rollouts and rewards are those of one process (lib/rl/rl_step.cpp).
// Contract: man/ds-rl.1; formats: docs/formats.md "RL prompts and reward command".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ds/dist/topology.hpp"
#include "ds/rl/grpo.hpp"
#include "ds/train/optimizer.hpp"

namespace ds::rl {

struct RlOptions {
  // model and prompts
  std::string init;                  // checkpoint (or run) directory: policy start + reference
  std::string prompts;               // JSONL prompts with reference answers
  bool chat = false;                 // render "prompt" strings with the chat template
  // run length and rollouts
  int64_t steps = 0;                 // GRPO steps (rollout batches) of the whole run
  int64_t stop_after = 0;            // stop this invocation after N steps (checkpoint saved)
  int64_t prompts_per_step = 4;      // prompts per rollout batch
  int64_t group_size = 8;            // G completions per prompt (>= 2)
  int64_t max_new_tokens = 128;      // per completion
  float temperature = 1.0f;          // sampling temperature (> 0)
  float top_p = 1.0f;                // nucleus sampling (1 = off)
  int top_k = 0;                     // top-k sampling (0 = off)
  // rewards
  std::vector<std::string> rewards = {"exact"};   // NAME[=WEIGHT]: exact, format, regex, command
  std::string reward_regex;          // pattern of the regex reward (ECMAScript)
  std::string reward_command;        // `sh -c` command of the command reward
  double reward_timeout = 0;         // seconds per reward-command run (0: no limit)
  // objective and optimisation
  GrpoOptions grpo;                  // clip eps, beta, advantage eps
  int64_t updates = 1;               // mu: policy updates per rollout batch
  int64_t micro_batch_size = 0;      // completions per forward/backward (0: all of a step)
  double lr = 1e-6;                  // constant learning rate (DeepSeekMath's policy LR)
  train::OptimizerOptions optimizer{0.9f, 0.95f, 1e-8f, 0.0f, 1.0f, true};   // wd 0
  double balance_alpha = 0;          // sequence-wise balance loss in the updates (0: off)
  double ema_decay = 0;              // moving average of the weights (train::WeightEma); 0: off
  // output
  std::string out;                   // run directory: step-XXXXXXXX checkpoints inside
  int64_t save_every = 0;            // steps; 0: only at the end
  int keep_last = 3;
  bool save_bf16 = false;
  std::string resume = "auto";       // auto (latest in --out) | never | a checkpoint directory
  std::string metrics;               // JSONL (lines after the resumed step are dropped)
  int64_t log_every = 1;             // progress period in steps when stderr is not a TTY
  // execution
  std::string device = "cpu";
  int threads = 0;                   // per rank; 0: the cores / ranks on this node
  uint64_t seed = 1234;              // prompt order and sampling
  dist::DistOptions dist;            // launch and layout (--pp and --ep must be 1)
};

// Runs the whole RL run; throws ds::Error (UsageError for bad flags, FormatError/IoError for
// bad prompts or a failing reward command: then no checkpoint of the failed step is written).
void run_rl(const RlOptions& opts);

}  // namespace ds::rl
