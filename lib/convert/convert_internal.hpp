// Internals of ds-convert-fp8 (lib/convert): the input checkpoint as files of tensors in data
// order, a conversion plan (per output file: the tensors in order and how each is produced),
// the streaming executor that writes a plan into an atomically published directory, and the
// row-band helpers that keep memory bounded (a band is a multiple of the block rows, about
// kBandElements values). See include/ds/convert/fp8_convert.hpp.
// reference: spec §1.13, §3.3; docs/formats.md "FP8 checkpoints".
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "ds/convert/fp8_convert.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/config.hpp"
#include "ds/ops/ops.hpp"

namespace ds::convert::detail {

namespace fs = std::filesystem;

inline constexpr int64_t kBlock = 128;                   // the release's weight_block_size
inline constexpr int64_t kBandElements = int64_t(1) << 22;   // 4 Mi values (16 MiB as F32)
inline constexpr const char* kScaleSuffix = "_scale_inv";

// The quantization_config the release carries (spec §1.13), key order as in its config.json.
nlohmann::ordered_json official_quant_config();

struct InputFile {
  std::string name;                  // file name inside the checkpoint directory
  std::vector<std::string> tensors;  // in data-offset order
};

struct InputCheckpoint {
  fs::path dir;                      // checkpoint directory ("" when opened from a file)
  fs::path source;                   // what the user named (for messages)
  bool has_config = false;           // config.json was read
  nlohmann::ordered_json config;     // config.json as read (key order kept)
  model::ModelArgs args;             // parsed when open_input's need_config
  bool quant_config = false;         // config.json has a quantization_config
  int64_t block_rows = kBlock, block_cols = kBlock;   // its weight_block_size
  ops::ScaleFormat scale_fmt = ops::ScaleFormat::fp32; // its scale_fmt ("ue8m0": powers of 2)
  bool indexed = false;              // model.safetensors.index.json
  std::unique_ptr<io::SafetensorsDir> st;
  std::vector<InputFile> files;      // sorted by name
};

// A checkpoint directory (need_config: config.json required), or for verify also an index or
// a .safetensors file. IoError / FormatError / ConfigError naming the path.
InputCheckpoint open_input(const fs::path& path, bool need_config);

// "<w>_scale_inv" for "<...>.weight" names, "" otherwise (model::scale_inv_name's rule).
std::string scale_name(const std::string& weight);
// The weight a "<...>.weight_scale_inv" name belongs to, "" for other names.
std::string weight_of_scale(const std::string& name);
// The scale of an F8_E4M3 weight: nullptr when absent; FormatError naming the file and tensor
// when the weight is not 2-D or the scale is not F32/BF16 [ceil(M/bm), ceil(N/bn)] for the
// checkpoint's weight_block_size.
const io::TensorView* find_scale(const InputCheckpoint& in, const io::TensorView& w);
// Names the registry of `args` marks ParamInfo::fp8 (what the release stores as FP8).
std::unordered_set<std::string> fp8_param_names(const model::ModelArgs& args);

// How one output tensor is produced.
enum class Op : uint8_t {
  copy,          // the input tensor's bytes
  quantize,      // input F32/BF16/F16 weight -> E4M3 codes (its scales kept for `scale`)
  scale,         // the scales computed by the preceding `quantize` of weight `src`
  dequantize,    // input E4M3 weight `src` with scale `scale_src` -> BF16
};

struct OutTensor {
  io::TensorDecl decl;               // what the output file declares
  Op op = Op::copy;
  std::string src;                   // input tensor (for `scale`: the quantised weight)
  std::string scale_src;             // dequantize: the input scale tensor
};

struct OutFile {
  std::string name;
  std::vector<OutTensor> tensors;
};

struct Plan {
  std::vector<OutFile> files;
  bool indexed = false;              // write model.safetensors.index.json
  ConvertStats stats;                // counts filled by the planner
};

// Checks of the options shared by quantize and dequantize (UsageError); returns OUT.
fs::path check_output(const ConvertOptions& opt);

// Writes `plan` into a temporary directory next to `out`, plus `config` (config.json), the
// index and a copy of every other top-level regular file of the input (tokenizer files ...),
// then publishes it (replacing an existing `out` only with opt.force). Returns the stats.
ConvertStats execute(const InputCheckpoint& in, Plan plan, const nlohmann::ordered_json& config,
                     const ConvertOptions& opt, const fs::path& out);

// ---- Row bands ---------------------------------------------------------------------------
// A tensor as a matrix: (shape[0], numel / shape[0]) for >= 2 dims, (1, n) for 1-D, (1, 1)
// for a scalar.
std::pair<int64_t, int64_t> matrix_dims(const Shape& s);
// Rows per band for `cols` columns: a multiple of `align` rows, about kBandElements values.
int64_t band_rows(int64_t cols, int64_t align);
// Rows [r0, r1) of v (as matrix_dims) as a view of the same bytes.
io::TensorView row_view(const io::TensorView& v, int64_t r0, int64_t r1);
// Rows [r0, r1) of an F32/BF16/F16 tensor as F32 (r1 - r0, cols). FormatError otherwise.
Tensor rows_f32(const io::TensorView& v, int64_t r0, int64_t r1);
// Rows [r0, r1) of an E4M3 weight (M, N) of `in` dequantised with its scale in `in`'s blocks
// (r0 a multiple of the block rows, r1 too or M): model::dequantize_fp8_blocks on the band, the
// one implementation the checkpoint loader uses too; its errors name the file and the rows.
Tensor dequantize_rows(const InputCheckpoint& in, const io::TensorView& w,
                       const io::TensorView& scale, int64_t r0, int64_t r1);

// An ops::Context for `threads` (0: all cores), setting the OpenMP thread count.
ops::Context make_context(int threads, const std::string& device = "cpu");

}  // namespace ds::convert::detail
