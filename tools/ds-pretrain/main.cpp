// ds-pretrain: pre-train a DeepSeek-V3 model (MLA, DeepSeekMoE with loss-free balancing, MTP)
// on ds-tokenize shards. Thin CLI: flags bind to ds::train::PretrainOptions (defaults live
// there), then ds::train::pretrain() or dry_run(); exit codes from ds::cli::run_tool.
// Contract: man ds-pretrain.
#include <CLI/CLI.hpp>

#include "ds/cli/common.hpp"
#include "ds/cli/train_flags.hpp"
#include "ds/train/pretrain.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Pre-train a DeepSeek-V3 style MoE model on token shards", "ds-pretrain"};
  ds::cli::CommonOptions common;
  ds::cli::add_common_options(app, common, "ds-pretrain");
  ds::train::PretrainOptions o;
  auto& s = o.schedule;
  auto& op = o.optimizer;

  auto* model = app.add_option_group("model");
  model->add_option("--preset", o.preset, "Model preset: tiny, small, 1b, 671b");
  model->add_option("--model-config", o.model_config, "Model config.json (Hugging Face keys)")
      ->check(CLI::ExistingFile);
  app.add_option("--tokenizer", o.tokenizer,
                 "tokenizer.json (checked against the data, copied into checkpoints)")
      ->check(CLI::ExistingFile);
  app.add_option("--data", o.data,
                 "Dataset directory, manifest.json or shard (ds-tokenize encode); repeat it for "
                 "a mixture");
  app.add_option("--data-weights", o.data_weights,
                 "Weights of the --data sources in a mixture, e.g. 3,1 (default: equal)");
  app.add_option("--val-sequences", o.val_sequences,
                 "Held-out sequences (-1: 1% of the data, at most 256)")
      ->capture_default_str();
  app.add_option("--packing", o.packing,
                 "Training rows: stride (fixed windows) or best-fit (whole documents packed, "
                 "padded)")
      ->check(CLI::IsMember({"stride", "best-fit"}))
      ->capture_default_str();
  app.add_option("--steps", o.steps, "Optimiser steps of the whole run")->capture_default_str();
  app.add_option("--tokens", o.tokens, "Or: token budget of the whole run")->capture_default_str();
  app.add_option("--stop-after", o.stop_after,
                 "Stop this invocation after N steps (saves a checkpoint)")
      ->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "Sequences per step (after the ramp)")
      ->capture_default_str();
  app.add_option("--micro-batch-size", o.micro_batch_size,
                 "Sequences per forward/backward (0: whole batch)")
      ->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "Tokens per sequence")->capture_default_str();
  app.add_option("--lr", s.lr, "Peak learning rate")->capture_default_str();
  app.add_option("--warmup-steps", s.warmup_steps, "Linear warm-up steps (-1: 1% of the steps)")
      ->capture_default_str();
  app.add_option("--lr-constant-end", s.constant_end,
                 "End of the constant LR phase (fraction of tokens)")
      ->capture_default_str();
  app.add_option("--lr-cosine-end", s.cosine_end, "End of the cosine decay (fraction of tokens)")
      ->capture_default_str();
  app.add_option("--lr-cosine-final", s.cosine_final_ratio,
                 "LR at the end of the cosine, relative to --lr")
      ->capture_default_str();
  app.add_option("--lr-tail1-end", s.tail1_end,
                 "End of the first constant tail (fraction of tokens)")
      ->capture_default_str();
  app.add_option("--lr-tail1", s.tail1_ratio, "First tail LR, relative to --lr")
      ->capture_default_str();
  app.add_option("--lr-tail2", s.tail2_ratio, "Second tail LR, relative to --lr")
      ->capture_default_str();
  app.add_option("--batch-start", s.batch_start,
                 "Batch size at the start of the ramp (-1: batch/5)")
      ->capture_default_str();
  app.add_option("--batch-ramp-end", s.ramp_end,
                 "End of the batch-size ramp (fraction of tokens; 0: none)")
      ->capture_default_str();
  app.add_option("--mtp-lambda", s.lambda_start, "MTP loss weight")->capture_default_str();
  app.add_option("--mtp-lambda-late", s.lambda_end, "MTP loss weight after --mtp-lambda-switch")
      ->capture_default_str();
  app.add_option("--mtp-lambda-switch", s.lambda_switch,
                 "Where the MTP weight drops (fraction of tokens)")
      ->capture_default_str();
  app.add_option("--bias-update-speed", s.gamma, "Router bias update speed gamma (0: off)")
      ->capture_default_str();
  app.add_option("--bias-update-stop", s.gamma_stop, "Where gamma drops to 0 (fraction of tokens)")
      ->capture_default_str();
  app.add_option("--balance-alpha", o.balance_alpha, "Sequence-wise balance loss weight alpha")
      ->capture_default_str();
  ds::cli::add_adamw_options(app, op);
  ds::cli::add_ema_option(app, o.ema_decay, true);
  app.add_flag("--resume-new-data", o.resume_new_data,
               "Resume on other data: keep weights, optimiser and counters, read it from its "
               "start");
  app.add_flag("--skip-nonfinite", o.skip_nonfinite,
               "Skip (and count) steps with a non-finite loss or gradient, while the weights "
               "are finite and at most 9 in a row");
  ds::cli::add_checkpoint_options(app, o.out, o.save_every, o.keep_last, o.save_bf16);
  app.add_option("--resume", o.resume,
                 "'auto' (latest in --out), 'never', or a checkpoint directory")
      ->expected(0, 1)->default_str("auto");
  app.add_option("--metrics", o.metrics,
                 "One JSON line per step (a fresh run starts the file over)");
  app.add_option("--eval-every", o.eval_every, "Validation period in steps (0: never)")
      ->capture_default_str();
  app.add_option("--eval-batches", o.eval_batches, "Validation batches per evaluation")
      ->capture_default_str();
  app.add_option("--log-every", o.log_every,
                 "Progress period in steps when stderr is not a terminal")
      ->capture_default_str();
  ds::cli::add_device_options(app, o.device, o.threads);
  ds::cli::add_precision_options(app, o.precision, o.fp8_granularity, o.fp8_scale, o.moe_gemm);
  app.add_option("--seed", o.seed,
                 "Seed of the initial weights, and of the data order unless --data-seed")
      ->capture_default_str();
  uint64_t data_seed = 0;
  CLI::Option* data_seed_opt = app.add_option(
      "--data-seed", data_seed,
      "Seed of the data order (rows, epochs, a mixture's sources); default: --seed");
  ds::cli::add_profile_flag(app, o.profile);
  app.add_flag("--dry-run", o.dry_run,
               "Print parameter counts and a memory plan as JSON; train nothing");
  ds::cli::add_dist_options(app, o.dist);

  return ds::cli::run_tool(app, argc, argv, common, [&] {
    o.dist.launch.device = o.device;
    if (data_seed_opt->count() > 0) o.data_seed = data_seed;
    if (o.dry_run) ds::train::dry_run(o);
    else ds::train::pretrain(o);
  });
}
