// Model weights <-> a Hugging Face-style model directory: config.json plus model.safetensors
// (or shards + model.safetensors.index.json). Parameters are stored as F32 or BF16; buffers
// (the routers' e_score_correction_bias) always as F32. Loading checks the directory against
// the ParamStore and reports every missing / unexpected / wrong-shaped tensor in one error.
// reference: spec §1.13 (tensor names), docs/model.md; include/ds/io/safetensors.hpp.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ds/model/config.hpp"
#include "ds/model/params.hpp"

namespace ds::model {

inline constexpr uint64_t kDefaultMaxShardBytes = uint64_t(5) << 30;   // 5 GiB, as HF

// Writes config.json (torch_dtype "bfloat16" or "float32") and the tensors (parameters in
// registration order, then buffers) into `dir`, which must exist (typically a
// CheckpointWriter's path()). Existing model*.safetensors / index files in `dir` are removed
// first so a stale index can never shadow the new files.
void save_model(const ParamStore& ps, const ModelArgs& args, const std::filesystem::path& dir,
                bool bf16, uint64_t max_shard_bytes = kDefaultMaxShardBytes);

// Fills every parameter and buffer of `ps` from the safetensors in `dir` (F32/BF16/F16 are
// converted to F32). FormatError listing all problems at once: tensors the model needs but
// the directory lacks, tensors present but unknown to the model (unless matched by
// `allowed_extra`: exact names, or prefixes when ending in '*', e.g. "model.layers.61.*"),
// wrong shapes, and dtypes that cannot be loaded without dequantisation (FP8).
void load_model(ParamStore& ps, const std::filesystem::path& dir,
                const std::vector<std::string>& allowed_extra = {});

}  // namespace ds::model
