// Training checkpoints: a Hugging Face-style model directory (config.json, safetensors,
// tokenizer files) plus training_state/ beside the weights: trainer_state.json (step, tokens,
// data position, counters, run settings), optimizer.safetensors (AdamW moments, stored in
// their training dtype so resume is exact) and, when the model is saved in BF16,
// master.safetensors (the FP32 master weights). Format: docs/formats.md.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include "ds/model/config.hpp"
#include "ds/model/params.hpp"
#include "ds/train/data_loader.hpp"
#include "ds/train/optimizer.hpp"

namespace ds::train {

struct TrainerState {
  int64_t step = 0;               // optimiser steps completed
  int64_t tokens_seen = 0;
  LoaderState data;
  int64_t nonfinite_skipped = 0;
  int64_t optimizer_steps = 0;    // AdamW bias-correction count (step - skipped)
  // run settings a resume must agree with
  uint64_t seed = 0;
  int64_t seq_len = 0;
  int64_t total_steps = 0;
  int64_t total_tokens = 0;
  std::string kind = "pretrain";  // pretrain | sft | rl
  std::string data_fingerprint;   // sft/rl: hash of the data and how it was rendered; a resume
                                  // must agree ("" = not recorded, not written)
};

struct SaveSpec {
  std::filesystem::path dir;      // final checkpoint directory (published atomically)
  std::string tokenizer;          // tokenizer.json to copy ("" = none)
  bool bf16 = false;
  uint64_t max_shard_bytes = 4ull << 30;
};

void save_checkpoint(const SaveSpec& spec, const model::ModelArgs& args,
                     const model::ParamStore& params, AdamW& opt, const TrainerState& st);
// Loads weights, buffers, optimiser moments and the trainer state from `dir`.
TrainerState load_checkpoint(const std::filesystem::path& dir, model::ParamStore& params,
                             AdamW& opt);

}  // namespace ds::train
