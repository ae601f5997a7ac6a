// ds-rl: reinforcement learning of a DeepSeek-V3 checkpoint with GRPO (spec §5.3): groups of
// sampled completions per prompt, rule-based or external rewards, the clipped token-level
// objective with a k3 KL penalty to the frozen initial model. Thin CLI: flags bind to
// ds::rl::RlOptions (defaults live there), then ds::rl::run_rl(); exit codes from
// ds::cli::run_tool. Contract: man ds-rl.
#include <CLI/CLI.hpp>

#include "ds/cli/common.hpp"
#include "ds/cli/train_flags.hpp"
#include "ds/rl/rl.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Reinforcement learning with GRPO on prompts with verifiable answers", "ds-rl"};
  ds::cli::CommonOptions common;
  ds::cli::add_common_options(app, common, "ds-rl");
  ds::rl::RlOptions o;
  auto& op = o.optimizer;

  app.add_option("--init,--model", o.init,
                 "Checkpoint (or run) directory: the initial policy and the reference model");
  app.add_option("--prompts,--data", o.prompts,
                 "Prompts JSONL: {\"prompt\" or \"messages\", \"reference\"}")
      ->check(CLI::ExistingFile);
  app.add_flag("--chat", o.chat,
               "Render \"prompt\" strings with the chat template (\"messages\" always are)");
  app.add_option("--steps", o.steps, "GRPO steps (rollout batches) of the whole run")
      ->capture_default_str();
  app.add_option("--stop-after", o.stop_after,
                 "Stop this invocation after N steps (saves a checkpoint)")
      ->capture_default_str();
  app.add_option("--prompts-per-step", o.prompts_per_step, "Prompts per rollout batch")
      ->capture_default_str();
  app.add_option("--group-size", o.group_size, "Completions sampled per prompt (G >= 2)")
      ->capture_default_str();
  app.add_option("--max-new-tokens", o.max_new_tokens, "Maximum tokens per completion")
      ->capture_default_str();
  app.add_option("--temperature", o.temperature, "Sampling temperature (> 0)")
      ->capture_default_str();
  app.add_option("--top-p", o.top_p, "Nucleus sampling mass (1: off)")->capture_default_str();
  app.add_option("--top-k", o.top_k, "Top-k sampling (0: off)")->capture_default_str();
  app.add_option("--reward", o.rewards,
                 "Reward term NAME[=WEIGHT] (exact, format, regex, command); repeatable, summed")
      ->capture_default_str();
  app.add_option("--reward-regex", o.reward_regex,
                 "Pattern of the regex reward (ECMAScript, searched in the completion)");
  app.add_option("--reward-command", o.reward_command,
                 "Shell command of the command reward (JSON lines in, one number per line out)");
  app.add_option("--reward-timeout", o.reward_timeout,
                 "Seconds one reward-command run may take (0: no limit)")
      ->capture_default_str();
  app.add_option("--clip-eps", o.grpo.clip_eps, "Clipping epsilon of the probability ratio")
      ->capture_default_str();
  app.add_option("--beta", o.grpo.beta, "KL penalty coefficient (0: no reference model)")
      ->capture_default_str();
  app.add_option("--adv-eps", o.grpo.adv_eps, "Added to the group reward std in the advantages")
      ->capture_default_str();
  app.add_option("--updates", o.updates, "Policy updates per rollout batch (mu)")
      ->capture_default_str();
  app.add_option("--micro-batch-size", o.micro_batch_size,
                 "Completions per forward/backward (0: all of a step)")
      ->capture_default_str();
  app.add_option("--lr", o.lr, "Learning rate (constant)")->capture_default_str();
  ds::cli::add_adamw_options(app, op);
  app.add_option("--balance-alpha", o.balance_alpha,
                 "Sequence-wise balance loss weight in the updates")
      ->capture_default_str();
  ds::cli::add_ema_option(app, o.ema_decay, false);
  ds::cli::add_checkpoint_options(app, o.out, o.save_every, o.keep_last, o.save_bf16);
  app.add_option("--resume", o.resume,
                 "'auto' (latest in --out), 'never', or a checkpoint directory")
      ->capture_default_str();
  app.add_option("--metrics", o.metrics, "Write one JSON line per step to this file");
  app.add_option("--log-every", o.log_every, "Log a step summary every N steps")
      ->capture_default_str();
  ds::cli::add_device_options(app, o.device, o.threads);
  app.add_option("--seed", o.seed, "Seed of the prompt order and the sampling")
      ->capture_default_str();
  ds::cli::add_dist_options(app, o.dist);
  // every rank samples with the whole model: data parallel only
  app.get_option("--pp")->description("Pipeline stages; must be 1 (ds-rl is data-parallel only)");
  app.get_option("--ep")->description("Expert-parallel group size; must be 1 (data-parallel only)");
  app.get_option("--pp-schedule")
      ->description("Accepted, unused: ds-rl has no pipeline (so dualpipe, which needs an even "
                    "--pp, is refused)");

  return ds::cli::run_tool(app, argc, argv, common, [&] {
    o.dist.launch.device = o.device;
    ds::rl::run_rl(o);
  });
}
