// ds-pretrain's library entry point: options (every default written once, here) and
// pretrain(), the whole pre-training run: model from a preset or config.json, data from
// ds-tokenize shards, AdamW with the paper's schedules, MTP and balance losses, the
// auxiliary-loss-free bias update, validation, metrics JSONL, atomic checkpoints with
// keep-last-N, bit-exact --resume, and the weights' moving average (--ema-decay). dry_run()
// prints the plan without allocating.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ds/dist/topology.hpp"
#include "ds/train/optimizer.hpp"
#include "ds/train/schedule.hpp"

namespace ds::train {

struct PretrainOptions {
  // model
  std::string preset;              // "tiny", "small", "671b" (or empty with model_config)
  std::string model_config;        // a config.json (Hugging Face keys)
  std::string tokenizer;           // tokenizer.json (copied into every checkpoint)
  // data
  // dataset dirs / manifests / shards (ds-tokenize encode); several: a mixture (data_mix.hpp)
  std::vector<std::string> data;
  std::string data_weights;        // "3,1": the sources' weights ("" = equal)
  int64_t val_sequences = -1;      // held-out sequences; -1: auto (1% of the data, <= 256)
  std::string packing = "stride";  // stride | best-fit (train::Packing, data_loader.hpp)
  // run length and batch
  int64_t steps = 0;               // optimiser steps (0: derive from tokens)
  int64_t tokens = 0;              // or a token budget
  int64_t stop_after = 0;          // stop this invocation after N steps (checkpoint saved)
  int64_t batch_size = 8;          // sequences per step (after the ramp)
  int64_t micro_batch_size = 0;    // sequences per forward/backward (0: = batch)
  int64_t seq_len = 128;
  // optimisation
  ScheduleOptions schedule;
  OptimizerOptions optimizer;
  double balance_alpha = 1e-4;     // sequence-wise balance loss weight
  bool skip_nonfinite = false;     // skip (and count) steps with non-finite loss/grads
  bool resume_new_data = false;    // resume on other data: read it from its start
  double ema_decay = 0;            // moving average of the weights (train::WeightEma); 0: off
  // output
  std::string out;                 // run directory: step-XXXXXXXX checkpoints inside
  int64_t save_every = 0;          // steps; 0: only at the end
  int keep_last = 3;
  bool save_bf16 = false;          // model.safetensors in BF16 (masters kept in the state)
  std::string resume = "auto";     // auto (latest in --out) | never | a checkpoint directory
  std::string metrics;             // JSONL file (appended on resume)
  int64_t eval_every = 0;          // steps; 0: never (and at the end if > 0)
  int64_t eval_batches = 4;
  int64_t log_every = 10;          // progress line period when stderr is not a TTY
  // execution
  std::string device = "cpu";
  int threads = 0;
  std::string precision = "fp32";        // Linear GEMMs: fp32 | bf16 | fp8 (ops::LinearPrecision)
  std::string fp8_granularity = "tile";  // tile (1x128 / 128x128) | tensor
  std::string fp8_scale = "fp32";        // fp32 | ue8m0 (power-of-two scales)
  std::string moe_gemm = "auto";         // routed experts' GEMMs: auto | loop | grouped
  uint64_t seed = 1234;
  std::optional<uint64_t> data_seed;   // the data order's seed (nullopt: seed)
  bool dry_run = false;
  bool profile = false;            // per-op timing report at the end of the run
  // distributed (docs/distributed.md): --batch-size stays the global batch; micro-batches are
  // per rank
  dist::DistOptions dist;
};

// Runs the training; throws ds::Error on bad input. A non-finite loss stops the run with a
// NumericsError (the last checkpoint stays intact) unless skip_nonfinite.
void pretrain(const PretrainOptions& opts);

// Prints the parameter counts and memory plan as JSON on stdout; allocates nothing.
void dry_run(const PretrainOptions& opts);

}  // namespace ds::train
