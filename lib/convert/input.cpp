// ds-convert-fp8 inputs: opening a checkpoint as files of tensors in data order (config.json
// with its quantization_config, the registry's FP8 parameter names), and the row-band helpers
// that read and dequantise a tensor a few MiB at a time.
// reference: spec §1.13, §3.3; include/ds/model/pretrained.hpp (read_quant_config).
#include <algorithm>
#include <map>
#include <thread>

#include "convert_internal.hpp"
#include "ds/core/error.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"
#include "ds/model/checkpoint_io.hpp"
#include "ds/model/pretrained.hpp"
#include "ds/model/transformer.hpp"

namespace ds::convert::detail {

nlohmann::ordered_json official_quant_config() {
  return nlohmann::ordered_json{{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"weight_block_size", {kBlock, kBlock}}};
}

std::string scale_name(const std::string& weight) { return model::scale_inv_name(weight); }

std::string weight_of_scale(const std::string& name) {
  static const std::string sfx = std::string(".weight") + kScaleSuffix;
  if (name.size() <= sfx.size() || !name.ends_with(sfx)) return "";
  return name.substr(0, name.size() - std::string(kScaleSuffix).size());
}

std::unordered_set<std::string> fp8_param_names(const model::ModelArgs& args) {
  std::unordered_set<std::string> out;
  for (const model::ParamInfo& p : model::describe_params(args))
    if (p.fp8) out.insert(p.name);
  return out;
}

namespace {

// config.json: always its quantization_config; the model arguments only when `args` (verify
// reads the block size of any safetensors directory, DeepSeek-V3 or not).
void read_config(InputCheckpoint& in, const fs::path& cfg, bool args) {
  const std::string text = io::read_file(cfg);
  io::check_json_input(text, cfg.string());
  try {
    in.config = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    DS_THROW(ConfigError, "{}: not valid JSON: {}", cfg.string(), e.what());
  }
  DS_CHECK_AS(ConfigError, in.config.is_object(), "{}: not a JSON object", cfg.string());
  if (args) in.args = model::from_hf_json(text, cfg.string());
  const model::QuantConfig q = model::read_quant_config(cfg);
  in.quant_config = q.fp8;
  in.block_rows = q.block_rows;
  in.block_cols = q.block_cols;
  // DeepSeek-V3.1's power-of-two scales; the weights quantize adds to such a checkpoint follow
  if (q.pow2_scales) in.scale_fmt = ops::ScaleFormat::ue8m0;
  in.has_config = true;
}

}  // namespace

InputCheckpoint open_input(const fs::path& path, bool need_config) {
  InputCheckpoint in;
  in.source = path;
  DS_CHECK_AS(IoError, io::exists(path), "{}: no such checkpoint", path.string());
  if (io::is_directory(path)) {
    in.dir = path;
    const fs::path cfg = path / "config.json";
    if (io::exists(cfg)) read_config(in, cfg, need_config);
    else DS_CHECK_AS(FormatError, !need_config,
                     "{}: no config.json (it names the tensors to quantise and carries "
                     "quantization_config)", path.string());
    in.indexed = io::exists(path / io::kSafetensorsIndex);
  } else {
    DS_CHECK_AS(UsageError, !need_config, "{}: expected a checkpoint directory", path.string());
    in.indexed = path.string().ends_with(".json");
    const fs::path cfg = path.parent_path() / "config.json";
    if (io::exists(cfg)) read_config(in, cfg, false);
  }
  in.st = std::make_unique<io::SafetensorsDir>(path);
  // Tensors grouped by file, each file's in data order (views of one mapping: pointer order).
  std::map<std::string, std::vector<std::string>> by_file;
  for (const std::string& n : in.st->names())
    by_file[in.st->file_of(n).filename().string()].push_back(n);
  for (auto& [file, names] : by_file) {
    std::sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
      return in.st->get(a).data < in.st->get(b).data ||
             (in.st->get(a).data == in.st->get(b).data && a < b);   // empty tensors
    });
    in.files.push_back(InputFile{file, std::move(names)});
  }
  return in;
}

const io::TensorView* find_scale(const InputCheckpoint& in, const io::TensorView& w) {
  const std::string where = in.st->file_of(w.name).string();
  DS_CHECK_AS(FormatError, w.shape.size() == 2,
              "{}: tensor {}: an F8_E4M3 weight must be 2-D, got {}", where, w.name,
              shape_str(w.shape));
  const std::string sn = scale_name(w.name);
  if (sn.empty() || !in.st->contains(sn)) return nullptr;
  const io::TensorView& s = in.st->get(sn);
  const Shape want{(w.shape[0] + in.block_rows - 1) / in.block_rows,
                   (w.shape[1] + in.block_cols - 1) / in.block_cols};
  DS_CHECK_AS(
      FormatError, (s.dtype == DType::f32 || s.dtype == DType::bf16) && s.shape == want,
      "{}: tensor {}: scale of {} {} must be F32 {} (weight_block_size [{}, {}]), got {} {}",
      in.st->file_of(sn).string(), sn, w.name, shape_str(w.shape), shape_str(want), in.block_rows,
      in.block_cols, dtype_name(s.dtype), shape_str(s.shape));
  return &s;
}

ops::Context make_context(int threads, const std::string& device) {
  check_threads(threads);
  DS_CHECK_AS(UsageError, device == "cpu" || device == "cuda",
              "--device must be cpu or cuda (got '{}')", device);
  ops::Context ctx;
  ctx.device = device == "cuda" ? Device::cuda : Device::cpu;
  ops::init_device(ctx.device);
  ctx.threads = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
  ops::set_cpu_threads(ctx.threads);
  return ctx;
}

// ---- Row bands ---------------------------------------------------------------------------

std::pair<int64_t, int64_t> matrix_dims(const Shape& s) {
  if (s.empty()) return {1, 1};
  if (s.size() == 1) return {1, s[0]};
  return {s[0], s[0] == 0 ? 0 : shape_numel(s) / s[0]};
}

int64_t band_rows(int64_t cols, int64_t align) {
  const int64_t a = std::max<int64_t>(1, align);
  const int64_t per = std::max<int64_t>(1, kBandElements / std::max<int64_t>(1, cols) / a);
  return per * a;
}

io::TensorView row_view(const io::TensorView& v, int64_t r0, int64_t r1) {
  const auto [rows, cols] = matrix_dims(v.shape);
  DS_CHECK(0 <= r0 && r0 <= r1 && r1 <= rows, "{}: rows [{}, {}) outside {}", v.name, r0, r1,
           rows);
  const size_t row_bytes = size_t(cols) * dtype_size(v.dtype);
  io::TensorView b;
  b.name = v.name;
  b.dtype = v.dtype;
  b.shape = {r1 - r0, cols};
  b.data = v.data + size_t(r0) * row_bytes;
  b.nbytes = size_t(r1 - r0) * row_bytes;
  return b;
}

Tensor rows_f32(const io::TensorView& v, int64_t r0, int64_t r1) {
  return io::to_f32(row_view(v, r0, r1));
}

Tensor dequantize_rows(const InputCheckpoint& in, const io::TensorView& w,
                       const io::TensorView& scale, int64_t r0, int64_t r1) {
  const int64_t bm = in.block_rows, bn = in.block_cols;
  const int64_t M = w.shape.at(0);
  DS_CHECK(r0 % bm == 0 && (r1 % bm == 0 || r1 == M), "{}: band [{}, {}) not aligned to {}",
           w.name, r0, r1, bm);
  const io::TensorView wb = row_view(w, r0, r1);
  const int64_t s0 = r0 / bm, s1 = (r1 + bm - 1) / bm;
  const size_t srow = size_t(scale.shape.at(1)) * dtype_size(scale.dtype);
  io::TensorView sb = scale;
  sb.shape = {s1 - s0, scale.shape[1]};
  sb.data = scale.data + size_t(s0) * srow;
  sb.nbytes = size_t(s1 - s0) * srow;
  Tensor out = Tensor::empty(wb.shape, DType::f32);
  try {   // a corrupt scale or code names its file
    if (out.numel() > 0) model::dequantize_fp8_blocks(wb, sb, bm, bn, out, r0);
  } catch (const FormatError& e) {   // (rows and blocks counted in the whole tensor)
    DS_THROW(FormatError, "{}: {}", in.st->file_of(w.name).string(), e.what());
  }
  return out;
}

}  // namespace ds::convert::detail
