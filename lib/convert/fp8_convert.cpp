// ds-convert-fp8 quantize / dequantize: the planners. Every input tensor is checked before
// anything is written (dtypes, scales, shapes against config.json's registry), then the plan
// goes to the streaming executor (execute.cpp). Output files mirror the input files (same
// names, tensors in the same order; a new scale follows its weight, dropped scales vanish).
// reference: spec §1.13 (which tensors are FP8), §3.3 (format, dequantisation rule);
// DeepSeek-V3 inference/fp8_cast_bf16.py (dequantisation; here a missing scale is an error).
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "convert_internal.hpp"
#include "ds/core/error.hpp"
#include "ds/core/name_list.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/checkpoint_io.hpp"
#include "ds/model/transformer.hpp"

namespace ds::convert {

using namespace detail;

std::string ConvertStats::to_json() const {
  const double mb = double(bytes_in) / 1e6;
  return nlohmann::ordered_json{{"command", command},
                                {"tensors_in", tensors_in},
                                {"tensors_out", tensors_out},
                                {"quantized", quantized},
                                {"dequantized", dequantized},
                                {"copied", copied},
                                {"missing_scale", missing_scale},
                                {"files", files},
                                {"bytes_in", bytes_in},
                                {"bytes_out", bytes_out},
                                {"seconds", seconds},
                                {"mb_per_s", seconds > 0 ? mb / seconds : 0.0}}
      .dump();
}

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string where(const InputCheckpoint& in, const std::string& name) {
  return in.st->file_of(name).string();
}

bool is_float(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

bool check_scale(const InputCheckpoint& in, const io::TensorView& w) {
  return find_scale(in, w) != nullptr;
}

// FP8 weight without a scale: an error unless --allow-missing-scale (then copied, warned).
void missing_scale(const InputCheckpoint& in, const std::string& name, const ConvertOptions& opt,
                   ConvertStats& st) {
  DS_CHECK_AS(FormatError, opt.allow_missing_scale,
              "{}: tensor {} is F8_E4M3 but {} is missing (--allow-missing-scale copies it as is)",
              where(in, name), name, scale_name(name).empty() ? "its scale" : scale_name(name));
  spdlog::warn("{}: tensor {} is F8_E4M3 without a scale: copied unchanged (--allow-missing-scale)",
               where(in, name), name);
  ++st.missing_scale;
}

void check_dtype(const InputCheckpoint& in, const io::TensorView& v) {
  DS_CHECK_AS(FormatError, v.dtype != DType::f8_e5m2,
              "{}: tensor {}: F8_E5M2 is not supported (DeepSeek-V3 stores E4M3 only)",
              where(in, v.name), v.name);
}

// A tensor copied through unchanged, checked as its loaders check it: a NaN or infinite float
// value, or an FP8 weight whose scale or codes are corrupt, would be published with exit 0
// and fail only in the tool that loads the output.
OutTensor copy_of(const InputCheckpoint& in, const io::TensorView& v) {
  // (an F8_E4M3 weight and its scale: checked below; scales' dtypes by check_fp8_blocks)
  DS_CHECK_AS(FormatError,
              v.dtype == DType::f32 || v.dtype == DType::bf16 || v.dtype == DType::f16 ||
                  v.dtype == DType::f8_e4m3 || !weight_of_scale(v.name).empty(),
              "{}: tensor {}: dtype {} is not one the loaders read (F32, BF16, F16, F8_E4M3)",
              where(in, v.name), v.name, dtype_name(v.dtype));
  if (const auto bad = io::first_nonfinite_released(v))
    DS_THROW(FormatError, "{}: tensor {}: a non-finite value (NaN or infinity) at element {}",
             where(in, v.name), v.name, *bad);
  if (v.dtype == DType::f8_e4m3) {
    if (const io::TensorView* s = find_scale(in, v)) {
      try {
        // (scale_fmt ue8m0 rules the scales ds computes, not the weights' stored ones: the
        // released DeepSeek-V3.1 has o_proj scales that are not powers of two)
        model::check_fp8_blocks(v, *s, in.block_rows, in.block_cols);
      } catch (const FormatError& e) {
        DS_THROW(FormatError, "{}: {}", where(in, v.name), e.what());
      }
      io::release_mapped_pages(v);   // its codes were all read (the chunked copy reads them again)
    }
  }
  return OutTensor{io::TensorDecl{v.name, v.dtype, v.shape}, Op::copy, v.name, ""};
}

// A "<...>.weight_scale_inv" whose weight is not an F8_E4M3 tensor of the input.
void orphan_scale(const InputCheckpoint& in, const std::string& name, const std::string& weight) {
  const bool fp8 = in.st->contains(weight) && in.st->get(weight).dtype == DType::f8_e4m3;
  DS_CHECK_AS(FormatError, fp8, "{}: tensor {} is a scale without an F8_E4M3 weight {}",
              where(in, name), name, weight);
}

// The input holds every tensor of config.json's model and nothing else but FP8 scales (checked
// by the plans) and the MTP layers' copies of the embedding and the head. An MTP layer may be
// absent as a whole (the loaders run without it), and an MTP layer (one with eh_proj) past
// num_nextn_predict_layers is copied as the loaders ignore it; other layers are unexpected.
// Without this a checkpoint missing a tensor converted to an incomplete model with exit 0.
void check_complete(const InputCheckpoint& in) {
  model::ParamStore store;
  store.set_allocate(false);   // names and shapes only
  model::Transformer model(in.args, store);
  std::vector<std::string> names;   // the model's tensors, which must be present
  std::unordered_map<std::string, Shape> shape_of;   // of every tensor config.json implies
  for (const model::Param& p : store.params()) {
    names.push_back(p.info.name);
    shape_of.emplace(p.info.name, p.info.shape);
  }
  for (const auto& [name, t] : store.buffers()) {
    names.push_back(name);
    shape_of.emplace(name, t.shape());
  }
  std::set<int64_t> mtp_present;   // MTP layers of which the input holds a tensor
  for (int64_t k = 0; k < in.args.n_mtp_layers; ++k) {
    const std::string p = fmt::format("model.layers.{}.", in.args.n_layers + k);
    shape_of.emplace(p + "embed_tokens.weight", Shape{in.args.vocab_size, in.args.dim});
    shape_of.emplace(p + "shared_head.head.weight", Shape{in.args.vocab_size, in.args.dim});
    for (const std::string& n : in.st->names())
      if (n.starts_with(p)) { mtp_present.insert(k); break; }
  }
  std::vector<std::string> missing, unexpected;
  for (const std::string& n : names) {
    if (in.st->contains(n)) continue;
    const int64_t l = n.starts_with("model.layers.") ? std::atoll(n.c_str() + 13) : -1;
    if (l >= in.args.n_layers && !mtp_present.count(l - in.args.n_layers)) continue;
    missing.push_back(n);
  }
  auto undeclared_mtp = [&](const std::string& n) {
    if (!n.starts_with("model.layers.")) return false;
    const int64_t l = std::atoll(n.c_str() + 13);
    return l >= in.args.n_layers + in.args.n_mtp_layers &&
           in.st->contains(fmt::format("model.layers.{}.eh_proj.weight", l));
  };
  std::vector<std::string> wrong_shape;   // copied tensors too: the output would not load
  for (const std::string& n : in.st->names()) {
    if (!shape_of.count(n) && weight_of_scale(n).empty() && !undeclared_mtp(n))
      unexpected.push_back(n);
    const auto it = shape_of.find(n);
    if (it != shape_of.end() && in.st->get(n).shape != it->second)
      wrong_shape.push_back(fmt::format("{} {} (config.json implies {})", n,
                                        shape_str(in.st->get(n).shape), shape_str(it->second)));
  }
  if (missing.empty() && unexpected.empty() && wrong_shape.empty()) return;
  std::string why;
  auto add = [&](const std::vector<std::string>& v, const char* what) {
    if (v.empty()) return;
    why += fmt::format("{}{} {}: {}", why.empty() ? "" : "; ", v.size(), what, name_list(v));
  };
  add(missing, "missing");
  add(unexpected, "unexpected");
  add(wrong_shape, "wrong-shaped");
  DS_THROW(FormatError, "{}: the weights do not match config.json: {}", in.source.string(), why);
}

Plan plan_quantize(const InputCheckpoint& in, const ConvertOptions& opt) {
  check_complete(in);
  DS_CHECK_AS(FormatError, !in.quant_config || (in.block_rows == kBlock && in.block_cols == kBlock),
              "{}/config.json: already FP8 with weight_block_size [{}, {}]; dequantize it first",
              in.dir.string(), in.block_rows, in.block_cols);
  std::unordered_set<std::string> fp8_names;   // (their shapes: checked by check_complete)
  for (const model::ParamInfo& p : model::describe_params(in.args))
    if (p.fp8) fp8_names.insert(p.name);
  Plan plan;
  plan.indexed = in.indexed;
  ConvertStats& st = plan.stats;
  st.command = "quantize";
  for (const InputFile& f : in.files) {
    OutFile out{f.name, {}};
    for (const std::string& name : f.tensors) {
      const io::TensorView& v = in.st->get(name);
      ++st.tensors_in;
      check_dtype(in, v);
      if (const std::string w = weight_of_scale(name); !w.empty()) {
        orphan_scale(in, name, w);   // the scale of an F8 weight: copied with it
        out.tensors.push_back(copy_of(in, v));
        ++st.copied;
        continue;
      }
      if (v.dtype == DType::f8_e4m3) {   // already quantised: copied with its scale
        if (!check_scale(in, v)) missing_scale(in, name, opt, st);
        out.tensors.push_back(copy_of(in, v));
        ++st.copied;
        continue;
      }
      if (!fp8_names.count(name)) {
        out.tensors.push_back(copy_of(in, v));
        ++st.copied;
        continue;
      }
      DS_CHECK_AS(FormatError, is_float(v.dtype),
                  "{}: tensor {}: cannot quantise {} (F32, BF16 or F16 only)", where(in, name),
                  name, dtype_name(v.dtype));
      const std::string sn = scale_name(name);
      DS_CHECK_AS(FormatError, !in.st->contains(sn), "{}: tensor {} exists although {} is {}",
                  where(in, sn), sn, name, dtype_name(v.dtype));
      out.tensors.push_back(
          {io::TensorDecl{name, DType::f8_e4m3, v.shape}, Op::quantize, name, ""});
      const Shape ss{ceil_div(v.shape[0], kBlock), ceil_div(v.shape[1], kBlock)};
      out.tensors.push_back({io::TensorDecl{sn, DType::f32, ss}, Op::scale, name, ""});
      ++st.quantized;
    }
    plan.files.push_back(std::move(out));
  }
  return plan;
}

Plan plan_dequantize(const InputCheckpoint& in, const ConvertOptions& opt) {
  check_complete(in);
  Plan plan;
  plan.indexed = in.indexed;
  ConvertStats& st = plan.stats;
  st.command = "dequantize";
  for (const InputFile& f : in.files) {
    OutFile out{f.name, {}};
    for (const std::string& name : f.tensors) {
      const io::TensorView& v = in.st->get(name);
      ++st.tensors_in;
      check_dtype(in, v);
      if (const std::string w = weight_of_scale(name); !w.empty()) {
        orphan_scale(in, name, w);   // consumed by its weight: dropped
        continue;
      }
      if (v.dtype != DType::f8_e4m3) {
        out.tensors.push_back(copy_of(in, v));
        ++st.copied;
        continue;
      }
      if (!check_scale(in, v)) {
        missing_scale(in, name, opt, st);
        out.tensors.push_back(copy_of(in, v));
        ++st.copied;
        continue;
      }
      out.tensors.push_back({io::TensorDecl{name, DType::bf16, v.shape}, Op::dequantize, name,
                             scale_name(name)});
      ++st.dequantized;
    }
    plan.files.push_back(std::move(out));
  }
  if (st.dequantized > 0 && !in.quant_config)
    spdlog::warn("{}/config.json: FP8 weights without a quantization_config (block {}x{} assumed)",
                 in.dir.string(), in.block_rows, in.block_cols);
  return plan;
}

void log_done(const ConvertStats& st, const fs::path& out) {
  spdlog::info("{}: {} tensors -> {} ({} quantised, {} dequantised, {} copied) in {} file(s), "
               "{:.1f} MB -> {:.1f} MB in {:.2f} s",
               st.command, st.tensors_in, out.string(), st.quantized, st.dequantized, st.copied,
               st.files, double(st.bytes_in) / 1e6, double(st.bytes_out) / 1e6, st.seconds);
}

}  // namespace

ConvertStats quantize(const ConvertOptions& opt) {
  const fs::path out = check_output(opt);
  const InputCheckpoint in = open_input(opt.model, /*need_config=*/true);
  Plan plan = plan_quantize(in, opt);
  nlohmann::ordered_json config = in.config;
  // an FP8 input keeps its quantization_config as written (scale_fmt, activation_scheme): its
  // FP8 weights are copied, and any other it gets are quantised to match (open_input)
  if (!in.quant_config) config["quantization_config"] = official_quant_config();
  const ConvertStats st = execute(in, std::move(plan), config, opt, out);
  log_done(st, out);
  return st;
}

ConvertStats dequantize(const ConvertOptions& opt) {
  const fs::path out = check_output(opt);
  const InputCheckpoint in = open_input(opt.model, /*need_config=*/true);
  Plan plan = plan_dequantize(in, opt);
  nlohmann::ordered_json config = in.config;
  config.erase("quantization_config");
  const ConvertStats st = execute(in, std::move(plan), config, opt, out);
  log_done(st, out);
  return st;
}

}  // namespace ds::convert
