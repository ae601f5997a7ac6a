// Shared setup of a training run from its options: the model configuration (preset or
// config.json, vocabulary sized to the tokenizer), the run length in steps and tokens, the
// checkpoint to resume from, and the execution context (device, threads). Used by
// ds-pretrain; ds-sft and ds-rl use make_context (their models come from a checkpoint).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "ds/io/staging.hpp"
#include "ds/model/config.hpp"
#include "ds/ops/ops.hpp"
#include "ds/train/pretrain.hpp"

namespace ds::train {

struct RunSetup {
  model::ModelArgs args;
  int64_t total_steps = 0;
  int64_t total_tokens = 0;
  std::filesystem::path resume_from;               // empty: fresh start
  std::shared_ptr<io::RunDirLock> lock;            // --out, held by rank 0 for the run
  std::optional<std::string> expected_fingerprint; // the tokenizer's, checked against the data
  ops::Context ctx;
};

// Model configuration alone (preset or config.json; vocabulary from the tokenizer when a
// preset is used: its vocab_size rounded up to a multiple of 128).
model::ModelArgs resolve_model_args(const PretrainOptions& o);
// The flag values a run and a --dry-run plan both need (UsageError naming the flag); returns
// the model.
model::ModelArgs check_pretrain_flags(const PretrainOptions& o);
// Everything; validates flags (UsageError naming the flag).
RunSetup resolve_setup(const PretrainOptions& o);
// ops::Context for --device/--threads on GPU `gpu` (UsageError for an unknown device,
// CudaError for an unavailable one).
ops::Context make_context(const std::string& device, int threads, int gpu = 0);
// The same plus the Linear GEMM precision of --precision/--fp8-granularity/--fp8-scale and the
// experts' GEMMs of --moe-gemm ("fp32|bf16|fp8", "tile|tensor", "fp32|ue8m0",
// "auto|loop|grouped"; UsageError naming the flag, also for grouped FP8 experts without
// tile scaling).
ops::Context make_context(const std::string& device, int threads, const std::string& precision,
                          const std::string& fp8_granularity, const std::string& fp8_scale,
                          const std::string& moe_gemm = "auto", int gpu = 0);
// The precision flags' checks alone (make_context's, and --dry-run's): UsageError naming the
// flag for a bad value, an FP8 setting other than the default without --precision fp8, or
// grouped FP8 experts without tile scaling.
void check_precision_flags(const std::string& precision, const std::string& fp8_granularity,
                           const std::string& fp8_scale, const std::string& moe_gemm);
// From ds-pretrain's options, on GPU dist::process_gpu(o.device, o.dist.launch).
ops::Context make_context(const PretrainOptions& o);

}  // namespace ds::train
