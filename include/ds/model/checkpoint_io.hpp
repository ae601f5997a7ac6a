// Model weights <-> a Hugging Face-style model directory: config.json plus model.safetensors
// (or shards + model.safetensors.index.json). Parameters are stored as F32 or BF16; buffers
// (the routers' e_score_correction_bias) always as F32. Loading checks the directory against
// the ParamStore and reports every missing / unexpected / wrong-shaped tensor in one error.
// reference: spec §1.13 (tensor names), docs/model.md; include/ds/io/safetensors.hpp.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "ds/io/safetensors.hpp"
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

// The two halves of save_model, for checkpoints written by several ranks (each rank writes
// the tensors it owns into its own file; one rank writes config.json and the index):
// config.json alone, and the tensors of `ps` that `keep` selects (parameters in registration
// order, then buffers, as save_model lays them out). The sources point into `ps`.
void save_model_config(const ModelArgs& args, const std::filesystem::path& dir, bool bf16);
std::vector<io::TensorSource> model_tensor_sources(
    const ParamStore& ps, bool bf16, const std::function<bool(const std::string& name)>& keep);

// Fills every parameter and buffer of `ps` from the safetensors in `dir` (F32/BF16/F16 are
// converted to F32). FormatError listing all problems at once: tensors the model needs but
// the directory lacks, tensors present but unknown to the model (unless matched by
// `allowed_extra`: exact names, or prefixes when ending in '*', e.g. "model.layers.61.*"),
// wrong shapes, and dtypes that cannot be loaded without dequantisation (FP8).
void load_model(ParamStore& ps, const std::filesystem::path& dir,
                const std::vector<std::string>& allowed_extra = {});

// ---- Loading with FP8 block dequantisation and duplicate tensors (helper L; spec §3.3) -----
// An F8_E4M3 weight W (M, N) needs a sibling "<prefix>.weight_scale_inv" (F32 or BF16,
// shape [ceil(M/bm), ceil(N/bn)]); it is loaded as W[i,j] = e4m3(W[i,j]) * s[i/bm, j/bn] in
// FP32 (partial edge blocks use their block's scale). `copies` maps names that duplicate a
// model tensor (the MTP layer's embed_tokens / shared_head.head in HF files) to that tensor:
// they are accepted, must match its shape, and are compared byte for byte (result in stats;
// the model always uses the main tensor).
struct LoadOptions {
  std::vector<std::string> allowed_extra;   // as load_model's
  bool fp8 = false;                         // accept FP8 e4m3 weights with their scales
  int64_t block_rows = 128, block_cols = 128;
  std::vector<std::pair<std::string, std::string>> copies;   // file name -> model name
  // The store holds part of the model (an expert- or pipeline-parallel rank): tensors in the
  // directory that the store lacks are ignored (not reported as unexpected); tensors the
  // store needs are still required.
  bool subset = false;
};

struct LoadStats {
  int64_t tensors = 0;                      // model tensors filled
  int64_t fp8_dequantised = 0;
  std::vector<std::string> copies_equal;    // copies present and identical to their tensor
  std::vector<std::string> copies_differ;   // present but different (ignored)
  std::vector<std::string> ignored;         // names accepted through allowed_extra
};

// One FormatError "<source>: checkpoint does not match the model: ..." listing every
// problem: missing, unexpected, wrong-shaped, unsupported dtypes, FP8 weights without a
// scale, scales without an FP8 weight, wrong-shaped scales, mismatched copies' shapes.
LoadStats load_model(ParamStore& ps, const io::SafetensorsDir& st, const std::string& source,
                     const LoadOptions& opt);

// The checks of an FP8 weight and its scale, without dequantising: FormatError naming the
// tensor for a non-2-D weight, a scale of the wrong shape/dtype, a NaN, zero, negative or huge
// scale, or an E4M3 NaN code. Returns the scale as F32. `first_row`: where `w` starts in its
// tensor when it is a band of rows (a multiple of block_rows), for the positions in messages.
Tensor check_fp8_blocks(const io::TensorView& w, const io::TensorView& scale_inv,
                        int64_t block_rows, int64_t block_cols, int64_t first_row = 0);
// The dequantisation rule above into `out` (F32, the weight's shape), after check_fp8_blocks.
void dequantize_fp8_blocks(const io::TensorView& w, const io::TensorView& scale_inv,
                           int64_t block_rows, int64_t block_cols, Tensor& out,
                           int64_t first_row = 0);
// "<prefix>.weight" -> "<prefix>.weight_scale_inv" ("" for names not ending in ".weight").
std::string scale_inv_name(const std::string& weight_name);

}  // namespace ds::model
