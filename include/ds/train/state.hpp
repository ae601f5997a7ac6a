// Training checkpoints: a Hugging Face-style model directory (config.json, safetensors,
// tokenizer files) plus training_state/ beside the weights: trainer_state.json (step, tokens,
// data position, counters, run settings), optimizer.safetensors (AdamW moments, stored in
// their training dtype so resume is exact) and, when the model is saved in BF16,
// master.safetensors (the FP32 master weights). Format: docs/formats.md.
// Checkpoints of a distributed run (ZeRO-1 optimiser, expert/pipeline-parallel stores) are the
// same directory with the tensors split by writer rank: model-RRRRR-of-WWWWW.safetensors plus
// the index, training_state/optimizer-RRRRR-of-WWWWW.safetensors and master-RRRRR-of-WWWWW;
// every loader accepts both forms, whatever the number of ranks that wrote them. With a
// moving average of the weights (ema.hpp), ema/ holds it as a model directory of its own.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ds/io/checkpoint.hpp"
#include "ds/model/config.hpp"
#include "ds/model/params.hpp"
#include "ds/ops/ops.hpp"
#include "ds/train/data_loader.hpp"
#include "ds/dist/comm.hpp"
#include "ds/train/optimizer.hpp"
#include "ds/train/zero.hpp"

namespace ds::train {

struct TrainerState {
  int64_t step = 0;               // optimiser steps completed
  int64_t tokens_seen = 0;
  LoaderState data;               // the data position (with a mixture: its first source's)
  // ds-pretrain with several --data sources (MixedLoader): every source's position, in --data
  // order (empty with one source)
  std::vector<LoaderState> data_sources;
  int64_t nonfinite_skipped = 0;
  int64_t nonfinite_streak = 0;   // steps skipped in a row in this invocation (not saved)
  int64_t optimizer_steps = 0;    // AdamW bias-correction count (step - skipped)
  // run settings a resume must agree with
  uint64_t seed = 0;
  // ds-pretrain --data-seed, the seed of the data order when it is not `seed` (written only
  // then, as version 4; nullopt: the order follows `seed`)
  std::optional<uint64_t> data_seed;
  int64_t seq_len = 0;
  int64_t total_steps = 0;
  int64_t total_tokens = 0;
  std::string kind = "pretrain";  // pretrain | sft | rl
  std::string packing;            // pretrain: "stride" | "best-fit" ("" = not recorded: stride)
  std::string data_fingerprint;   // sft/rl: hash of the data and how it was rendered; a resume
                                  // must agree ("" = not recorded, not written)
  // The checkpoint (absolute path) this run branched from: --resume DIR with DIR outside
  // --out; kept by later resumes. resolve_resume continues --out's newest checkpoint when the
  // same --resume DIR is given again ("" = not a branch, not written).
  std::string branched_from;
  // ds-rl with --beta > 0: the --init checkpoint (absolute path) the run started from and the
  // hash of its weights (model::checkpoint_weights_hash): the frozen reference model, which a
  // resume loads from --init again and must find unchanged ("" = not recorded, not written).
  std::string init_checkpoint, init_weights;
  // ds-pretrain: the metrics line (a JSON object's text) of the checkpoint's step when its
  // evaluation could not read the data; the resume runs that evaluation first ("" = none)
  std::string pending_metrics;
};

struct SaveSpec {
  std::filesystem::path dir;      // final checkpoint directory (published atomically)
  io::TokenizerFiles tokenizer;   // tokenizer files to copy ("" = none)
  bool bf16 = false;
  uint64_t max_shard_bytes = 4ull << 30;   // one process only: ranks write one file each
  int keep_last = 0;              // > 0: once published, delete all but the newest keep_last
                                  // step-* checkpoints beside dir (io::prune_checkpoints)
  // The weights' moving average (WeightEma::average(), waited for), written as the model
  // directory dir/ema (F32, config.json, tokenizer files); nullptr: none.
  const model::ParamStore* ema = nullptr;
};

struct CheckpointLoadOptions {
  // The store holds only part of the model (an expert- or pipeline-parallel rank): weights,
  // masters and moments of tensors it lacks are ignored; those it holds are still required.
  bool subset = false;
};

// The state in trainer_state.json's text (src names the file in errors): FormatError for
// anything but the documented object (format, version 1, integer counters in [0, 2^63)).
TrainerState parse_trainer_state(const std::string& text, const std::string& src);

// The first parameter of `params` (on ctx's device) holding a NaN or an infinity, and how many
// it holds; nullopt when every weight is finite. Refuses non-finite weights at a save and in
// the non-finite step policy (trainer.hpp: finite_or_skip).
struct NonfiniteParam {
  const model::Param* param = nullptr;
  int64_t count = 0;
};
std::optional<NonfiniteParam> first_nonfinite_param(const ops::Context& ctx,
                                                    const model::ParamStore& params);

void save_checkpoint(const SaveSpec& spec, const model::ModelArgs& args,
                     const model::ParamStore& params, AdamW& opt, const TrainerState& st);

// The same checkpoint written by every rank of `world` together (collective over world and
// over opt's dp and edp groups; `params` is the store opt was built on, `st` the same on every
// rank). Parameters are written by group rank 0 of their ZeRO group (dp rank 0 of the stage
// for replicated parameters, edp rank 0 for routed experts), never for copies; buffers by dp
// rank 0. Rank 0 creates the temporary directory, every rank writes its files into it (a
// filesystem all ranks share), rank 0 writes config.json, the index, the tokenizer files and
// trainer_state.json and publishes the directory. A world of one writes exactly
// save_checkpoint's bytes. A failure on any rank is an error on every rank (the temporary
// directory is removed, nothing is published).
void save_checkpoint(const SaveSpec& spec, const model::ModelArgs& args,
                     const model::ParamStore& params, ShardedAdamW& opt, const TrainerState& st,
                     dist::Comm& world);

// Loads weights, buffers, optimiser moments and the trainer state from `dir`, written by one
// process or by several ranks (model index over rank files; optimizer*.safetensors and
// master*.safetensors in training_state/).
TrainerState load_checkpoint(const std::filesystem::path& dir, model::ParamStore& params,
                             AdamW& opt, const CheckpointLoadOptions& lo = {});
// The same for a ZeRO-1 optimiser: each rank reads the full moments by name and keeps its
// chunks (no communication; any checkpoint layout and number of ranks).
TrainerState load_checkpoint(const std::filesystem::path& dir, model::ParamStore& params,
                             ShardedAdamW& opt, const CheckpointLoadOptions& lo = {});

}  // namespace ds::train
