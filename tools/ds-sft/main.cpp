// ds-sft: supervised fine-tuning of a ds-pretrain checkpoint on chat or prompt/completion
// JSONL (DeepSeek-V3 chat template, loss on assistant tokens, packing with sample masking).
// Thin CLI: flags bind to ds::sft::SftOptions (defaults live there), then ds::sft::sft() or
// check_data(); exit codes from ds::cli::run_tool. Contract: man ds-sft.
#include <CLI/CLI.hpp>

#include "ds/cli/common.hpp"
#include "ds/cli/train_flags.hpp"
#include "ds/sft/sft.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Supervised fine-tuning of a DeepSeek-V3 style model on chat JSONL", "ds-sft"};
  ds::cli::CommonOptions common;
  ds::cli::add_common_options(app, common, "ds-sft");
  ds::sft::SftOptions o;
  auto& op = o.optimizer;

  app.add_option("--init,--model", o.init,
                 "Checkpoint directory to start from (ds-pretrain or ds-sft)");
  app.add_option("--tokenizer", o.tokenizer, "tokenizer.json (default: the one in --init)")
      ->check(CLI::ExistingFile);
  app.add_option("--data", o.data, "Training JSONL files (chat or prompt/completion)");
  app.add_option("--val-data", o.val_data, "Held-out JSONL file for the evaluation loss");
  app.add_option("--val-fraction", o.val_fraction, "Or: hold out this fraction of --data (seeded)")
      ->capture_default_str();
  app.add_option("--loss-on", o.loss_on, "Target tokens: assistant, last (assistant turn) or all")
      ->check(CLI::IsMember({"assistant", "last", "all"}))->capture_default_str();
  app.add_flag("--no-packing{false}", o.packing,
               "One sample per sequence (padded) instead of packing");
  app.add_flag("--truncate", o.truncate,
               "Cut samples longer than --seq-len + 1 tokens (default: error)");
  CLI::Option* epochs =
      app.add_option("--epochs", o.epochs, "Passes over the training data")->capture_default_str();
  app.add_option("--steps", o.steps, "Or: optimiser steps of the whole run (0: from --epochs)")
      ->capture_default_str()->excludes(epochs);
  app.add_option("--stop-after", o.stop_after,
                 "Stop this invocation after N steps (saves a checkpoint)")
      ->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "Sequences (packed rows) per step")
      ->capture_default_str();
  app.add_option("--micro-batch-size", o.micro_batch_size,
                 "Sequences per forward/backward (0: whole batch)")
      ->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "Tokens per sequence (a row holds seq-len + 1)")
      ->capture_default_str();
  app.add_option("--lr", o.lr, "Learning rate at the start of the cosine")->capture_default_str();
  app.add_option("--lr-final", o.lr_final, "Learning rate at the last step")->capture_default_str();
  app.add_option("--warmup-steps", o.warmup_steps, "Linear warm-up steps before the cosine")
      ->capture_default_str();
  app.add_option("--mtp-lambda", o.mtp_lambda, "MTP loss weight (0: MTP modules not trained)")
      ->capture_default_str();
  app.add_option("--balance-alpha", o.balance_alpha, "Sequence-wise balance loss weight alpha")
      ->capture_default_str();
  app.add_option("--bias-update-speed", o.gamma, "Router bias update speed gamma (0: frozen)")
      ->capture_default_str();
  ds::cli::add_adamw_options(app, op);
  app.add_flag("--skip-nonfinite", o.skip_nonfinite,
               "Skip (and count) steps with a non-finite loss or gradient, while the weights "
               "are finite and at most 9 in a row");
  ds::cli::add_ema_option(app, o.ema_decay, true);
  ds::cli::add_checkpoint_options(app, o.out, o.save_every, o.keep_last, o.save_bf16);
  app.add_option("--resume", o.resume,
                 "'auto' (latest in --out), 'never', or a checkpoint directory")
      ->expected(0, 1)->default_str("auto");
  app.add_option("--metrics", o.metrics, "Write one JSON line per step to this file");
  app.add_option("--eval-every", o.eval_every,
                 "Held-out evaluation period in steps (0: at the end only)")
      ->capture_default_str();
  app.add_option("--eval-batches", o.eval_batches,
                 "Micro-batches per evaluation (0: all held-out data)")
      ->capture_default_str();
  app.add_option("--log-every", o.log_every,
                 "Progress period in steps when stderr is not a terminal")
      ->capture_default_str();
  ds::cli::add_device_options(app, o.device, o.threads);
  ds::cli::add_precision_options(app, o.precision, o.fp8_granularity, o.fp8_scale, o.moe_gemm);
  app.add_option("--seed", o.seed, "Seed of the data order and the --val-fraction split")
      ->capture_default_str();
  app.add_flag("--check-data", o.check_data,
               "Check, tokenise and pack the data, print statistics; train nothing");
  ds::cli::add_profile_flag(app, o.profile);
  ds::cli::add_dist_options(app, o.dist);

  return ds::cli::run_tool(app, argc, argv, common, [&] {
    o.dist.launch.device = o.device;
    if (o.check_data) ds::sft::check_data(o);
    else ds::sft::sft(o);
  });
}
