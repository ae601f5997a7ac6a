// ds-sft's library entry point: options (every default written once, here) and sft(), a
// supervised fine-tuning run: a checkpoint from ds-pretrain (or ds-sft) as the starting
// point, chat / prompt-completion JSONL rendered with the DeepSeek-V3 chat template, loss on
// assistant tokens, packed rows with sample masking, epochs, the paper's cosine schedule
// (5e-6 -> 1e-6), held-out evaluation, the same checkpoints as ds-pretrain (trainer kind
// "sft"), bit-exact resume and SIGTERM = save and stop. check_data() validates and measures
// the data without training. Contract: man/ds-sft.1; data format: docs/formats.md "SFT data".
// reference: spec §5.1 (SFT settings), §8.6 (chat template).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ds/dist/topology.hpp"
#include "ds/train/optimizer.hpp"

namespace ds::sft {

struct SftOptions {
  // model and tokenizer
  std::string init;                // checkpoint directory (config.json + weights)
  std::string tokenizer;           // tokenizer.json; "" = the one in --init (the chat template
                                   // comes from the tokenizer_config.json beside it)
  // data
  std::vector<std::string> data;   // training JSONL files
  std::string val_data;            // held-out JSONL file ("" = none, or --val-fraction)
  double val_fraction = 0;         // else hold out this fraction of --data (seeded choice)
  std::string loss_on = "assistant";   // assistant | last | all
  bool packing = true;             // several samples per row (false: one per row, padded)
  bool truncate = false;           // cut samples longer than seq_len + 1 (default: error)
  // run length and batch
  int64_t epochs = 2;              // passes over the training samples (the paper: 2)
  int64_t steps = 0;               // or: optimiser steps (0: derived from epochs)
  int64_t stop_after = 0;          // stop this invocation after N steps (checkpoint saved)
  int64_t batch_size = 8;          // rows (sequences of seq_len + 1 tokens) per step
  int64_t micro_batch_size = 0;    // rows per forward/backward (0: the whole batch)
  int64_t seq_len = 512;
  // optimisation
  double lr = 5e-6;                // cosine from lr ...
  double lr_final = 1e-6;          // ... to lr_final at the last step
  int64_t warmup_steps = 0;        // linear warm-up before the cosine
  train::OptimizerOptions optimizer;
  double mtp_lambda = 0.1;         // MTP loss weight (keeps the MTP module trained)
  double balance_alpha = 1e-4;     // sequence-wise balance loss weight (per packed row)
  double gamma = 0.0;              // router-bias update speed (0: biases frozen)
  bool skip_nonfinite = false;
  double ema_decay = 0;            // moving average of the weights (train::WeightEma); 0: off
  // output
  std::string out;                 // run directory: step-XXXXXXXX checkpoints inside
  int64_t save_every = 0;          // steps; 0: only at the end
  int keep_last = 3;
  bool save_bf16 = false;
  std::string resume = "auto";     // auto (latest in --out) | never | a checkpoint directory
  std::string metrics;             // JSONL file (lines after the resumed step are dropped)
  int64_t eval_every = 0;          // steps; 0: never (else also at the end)
  int64_t eval_batches = 0;        // micro-batches per evaluation (0: the whole held-out set)
  int64_t log_every = 10;
  // execution
  std::string device = "cpu";
  int threads = 0;
  std::string precision = "fp32";
  std::string fp8_granularity = "tile";
  std::string fp8_scale = "fp32";
  std::string moe_gemm = "auto";   // routed experts' GEMMs: auto | loop | grouped
  uint64_t seed = 1234;            // data order and the --val-fraction split
  bool check_data = false;         // validate + tokenise + pack, print statistics, train nothing
  bool profile = false;
  // distributed (docs/distributed.md): --batch-size rows per step in all, micro-batches per rank
  dist::DistOptions dist;
};

// Runs the fine-tuning and prints a JSON summary on stdout; throws ds::Error (UsageError for
// bad flags, FormatError naming FILE:LINE for bad data) before anything is written when the
// inputs are wrong. A non-finite loss stops with NumericsError, the last checkpoint intact.
void sft(const SftOptions& opts);

// Reads, checks, tokenises and packs the data as sft() would and prints statistics as JSON
// (samples, tokens, targets, rows per epoch, packing efficiency, steps); loads no weights.
void check_data(const SftOptions& opts);

}  // namespace ds::sft
