// Model weights <-> config.json + safetensors (see include/ds/model/checkpoint_io.hpp).
// FP8 e4m3 weights are dequantised per 128x128 block (spec §3.3) when LoadOptions::fp8, by
// ops::fp8_dequantize (dequantize_fp8_blocks, shared with ds-convert-fp8).
// reference: spec §1.13, §3.3; HF `save_pretrained` directory layout.
#include "ds/model/checkpoint_io.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "ds/core/dtype.hpp"
#include "ds/core/error.hpp"
#include "ds/core/name_list.hpp"
#include "ds/io/file.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/ops/fp8.hpp"

namespace ds::model {

namespace fs = std::filesystem;

void save_model_config(const ModelArgs& args, const fs::path& dir, bool bf16) {
  auto cfg = nlohmann::json::parse(to_hf_json(args));
  cfg["torch_dtype"] = bf16 ? "bfloat16" : "float32";
  io::write_file_atomic(dir / "config.json", cfg.dump(2) + "\n");
}

std::vector<io::TensorSource> model_tensor_sources(
    const ParamStore& ps, bool bf16, const std::function<bool(const std::string& name)>& keep) {
  std::vector<io::TensorSource> src;
  const DType pdt = bf16 ? DType::bf16 : DType::f32;
  for (const Param& p : ps.params())
    if (keep(p.info.name)) src.push_back(io::TensorSource::from_tensor(p.info.name, p.value, pdt));
  for (const auto& [name, t] : ps.buffers())
    if (keep(name)) src.push_back(io::TensorSource::from_tensor(name, t, DType::f32));
  return src;
}

void save_model(const ParamStore& ps, const ModelArgs& args, const fs::path& dir, bool bf16,
                uint64_t max_shard_bytes) {
  DS_CHECK_AS(IoError, io::is_directory(dir), "{}: not a directory", dir.string());
  for (const auto& e : fs::directory_iterator(dir)) {   // stale weights from an earlier save
    std::string n = e.path().filename().string();
    if (n.starts_with("model") && (n.ends_with(".safetensors") || n == io::kSafetensorsIndex))
      fs::remove(e.path());
  }
  save_model_config(args, dir, bf16);
  io::write_safetensors_dir(dir,
                            model_tensor_sources(ps, bf16, [](const std::string&) { return true; }),
                            max_shard_bytes);
}

namespace {

bool allowed(const std::string& name, const std::vector<std::string>& extra) {
  for (const std::string& e : extra) {
    if (!e.empty() && e.back() == '*') {
      if (name.compare(0, e.size() - 1, e, 0, e.size() - 1) == 0) return true;
    } else if (name == e) {
      return true;
    }
  }
  return false;
}


}  // namespace

namespace {

bool loadable_plain(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Every problem of a checkpoint against the model, by category (in message order).
struct Problems {
  bool fp8 = false;
  std::vector<std::string> missing, unexpected, shapes, dtypes, no_scale, orphan_scale,
      scale_shapes;
  bool empty() const {
    return missing.empty() && unexpected.empty() && shapes.empty() && dtypes.empty() &&
           no_scale.empty() && orphan_scale.empty() && scale_shapes.empty();
  }
  std::string message() const {
    std::string msg;
    auto add = [&](const char* what, const std::vector<std::string>& v) {
      if (!v.empty())
        msg += fmt::format("{}{} {}: {}", msg.empty() ? "" : "; ", v.size(), what, name_list(v, 40));
    };
    add("missing", missing);
    add("unexpected", unexpected);
    add("wrong-shaped", shapes);
    add(fp8 ? "of an unsupported dtype" : "not loadable as F32 (dequantise first)", dtypes);
    add("FP8 without weight_scale_inv", no_scale);
    add("weight_scale_inv without an FP8 weight", orphan_scale);
    add("wrong-shaped weight_scale_inv", scale_shapes);
    return msg;
  }
};

// Checks one model tensor present in the file; returns true when it is an FP8 weight.
bool check_tensor(const io::SafetensorsDir& st, const std::string& name, const Tensor& t,
                  const LoadOptions& opt, Problems& pr) {
  const io::TensorView& v = st.get(name);
  if (v.shape != t.shape()) {
    pr.shapes.push_back(
        fmt::format("{} {} (model {})", name, shape_str(v.shape), shape_str(t.shape())));
    return false;
  }
  if (loadable_plain(v.dtype)) return false;
  if (!opt.fp8 || v.dtype != DType::f8_e4m3 || v.shape.size() != 2) {
    pr.dtypes.push_back(fmt::format("{} {}", name, dtype_name(v.dtype)));
    return false;
  }
  const std::string sname = scale_inv_name(name);
  if (sname.empty() || !st.contains(sname)) {
    pr.no_scale.push_back(name);
    return true;
  }
  const io::TensorView& s = st.get(sname);
  const Shape want{ceil_div(v.shape[0], opt.block_rows), ceil_div(v.shape[1], opt.block_cols)};
  if (s.shape != want || (s.dtype != DType::f32 && s.dtype != DType::bf16))
    pr.scale_shapes.push_back(fmt::format("{} {} {} (expected F32 {})", sname, dtype_name(s.dtype),
                                          shape_str(s.shape), shape_str(want)));
  return true;
}

// Compares each present copy with its model tensor (shape problems go to pr.shapes).
void check_copies(const io::SafetensorsDir& st, const LoadOptions& opt, Problems& pr,
                  LoadStats& stats) {
  for (const auto& [copy, orig] : opt.copies) {
    if (!st.contains(copy)) continue;
    const io::TensorView& c = st.get(copy);
    if (!st.contains(orig)) { stats.copies_differ.push_back(copy); continue; }
    const io::TensorView& o = st.get(orig);
    if (c.shape != o.shape) {
      pr.shapes.push_back(fmt::format("{} {} (copy of {} {})", copy, shape_str(c.shape), orig,
                                      shape_str(o.shape)));
      continue;
    }
    const bool same = c.dtype == o.dtype && c.nbytes == o.nbytes &&
                      std::memcmp(c.data, o.data, c.nbytes) == 0;
    (same ? stats.copies_equal : stats.copies_differ).push_back(copy);
  }
}

}  // namespace

std::string scale_inv_name(const std::string& w) {
  static const std::string suffix = ".weight";
  if (w.size() < suffix.size() || w.compare(w.size() - suffix.size(), suffix.size(), suffix) != 0)
    return "";
  return w + "_scale_inv";
}

Tensor check_fp8_blocks(const io::TensorView& w, const io::TensorView& s, int64_t bm,
                        int64_t bn, int64_t first_row) {
  DS_CHECK_AS(FormatError, w.dtype == DType::f8_e4m3 && w.shape.size() == 2,
              "{}: not a 2-D F8_E4M3 weight", w.name);
  const int64_t M = w.shape[0], N = w.shape[1], sm = ceil_div(M, bm), sn = ceil_div(N, bn);
  DS_CHECK_AS(FormatError,
              s.shape == Shape({sm, sn}) && (s.dtype == DType::f32 || s.dtype == DType::bf16),
              "{}: scale must be F32 or BF16 {}, got {} {}", s.name, shape_str({sm, sn}),
              dtype_name(s.dtype), shape_str(s.shape));
  Tensor scale = io::to_f32(s);   // a copy: the mapped F32 scale may be misaligned
  const float* sc = scale.f32();
  // A NaN, zero, negative or huge scale, or an E4M3 NaN code (0x7f, 0xff; the format has no
  // infinities) is a corrupt file; with them excluded every weight comes out finite.
  constexpr float kMaxScale = std::numeric_limits<float>::max() / 448.0f;
  for (int64_t b = 0; b < sm * sn; ++b)
    if (!(std::isfinite(sc[b]) && sc[b] > 0 && sc[b] <= kMaxScale))
      DS_THROW(FormatError,
               "{}: block ({}, {}) is {} (scales must be positive and at most FLT_MAX/448)",
               s.name, first_row / bm + b / sn, b % sn, sc[b]);
  unsigned nan_code = 0;   // a branch-free pass (vectorised); the position only on failure
  for (int64_t i = 0; i < M * N; ++i) nan_code |= unsigned((w.data[i] & 0x7f) == 0x7f);
  for (int64_t i = 0; nan_code && i < M * N; ++i)
    if ((w.data[i] & 0x7f) == 0x7f)
      DS_THROW(FormatError, "{}: E4M3 NaN code 0x{:02x} at row {} column {}", w.name, w.data[i],
               first_row + i / N, i % N);
  return scale;
}

void dequantize_fp8_blocks(const io::TensorView& w, const io::TensorView& s, int64_t bm,
                           int64_t bn, Tensor& out, int64_t first_row) {
  const Tensor scale = check_fp8_blocks(w, s, bm, bn, first_row);
  DS_CHECK(out.dtype() == DType::f32 && out.shape() == w.shape, "{}: bad output tensor", w.name);
  const int64_t M = w.shape[0], N = w.shape[1], sn = ceil_div(N, bn);
  if (M * N == 0) return;
  const float* sc = scale.f32();
  if (bm == ops::kFp8Block && bn == ops::kFp8Block) {   // the released format: the ops layer's
    const Tensor q = Tensor::borrow(const_cast<uint8_t*>(w.data), w.shape, DType::f8_e4m3);
    ops::fp8_dequantize(ops::Context{}, q, scale, ops::Fp8Group::block_128x128, out);
  } else {   // other block sizes (configs may declare any weight_block_size): by hand
    float lut[256];
    for (int b = 0; b < 256; ++b) lut[b] = e4m3_to_f32(uint8_t(b));
    float* o = out.f32();
    for (int64_t i = 0; i < M; ++i) {
      const uint8_t* row = w.data + i * N;
      const float* srow = sc + (i / bm) * sn;
      float* orow = o + i * N;
      for (int64_t j = 0; j < N; ++j) orow[j] = lut[row[j]] * srow[j / bn];
    }
  }
}

LoadStats load_model(ParamStore& ps, const io::SafetensorsDir& st, const std::string& source,
                     const LoadOptions& opt) {
  std::vector<std::pair<std::string, Tensor*>> wanted;   // every tensor the model owns
  for (Param& p : ps.params()) wanted.emplace_back(p.info.name, &p.value);
  for (auto& [name, t] : ps.buffers()) wanted.emplace_back(name, &t);

  Problems pr;
  pr.fp8 = opt.fp8;
  LoadStats stats;
  std::unordered_set<std::string> known, fp8_weights;
  for (auto& [name, t] : wanted) {
    known.insert(name);
    if (!st.contains(name)) { pr.missing.push_back(name); continue; }
    if (check_tensor(st, name, *t, opt, pr)) fp8_weights.insert(name);
  }
  for (const auto& [copy, orig] : opt.copies) known.insert(copy);
  check_copies(st, opt, pr, stats);
  static const std::string sfx = "_scale_inv";
  for (const std::string& n : st.names()) {
    if (known.count(n)) continue;
    const bool is_scale = opt.fp8 && n.size() > sfx.size() && n.ends_with(".weight" + sfx);
    if (is_scale && fp8_weights.count(n.substr(0, n.size() - sfx.size()))) continue;
    if (allowed(n, opt.allowed_extra)) { stats.ignored.push_back(n); continue; }
    if (opt.subset) continue;   // another rank's tensor
    (is_scale ? pr.orphan_scale : pr.unexpected).push_back(n);
  }
  if (!pr.empty())
    DS_THROW(FormatError, "{}: checkpoint does not match the model: {}", source, pr.message());
  // a corrupt scale or code names its file
  auto dequantize = [&](const io::TensorView& v, Tensor& out) {
    try {
      dequantize_fp8_blocks(v, st.get(scale_inv_name(v.name)), opt.block_rows, opt.block_cols,
                            out);
    } catch (const FormatError& e) {
      DS_THROW(FormatError, "{}: {}", st.file_of(v.name).string(), e.what());
    }
  };
  for (auto& [name, t] : wanted) {
    const io::TensorView& v = st.get(name);
    if (fp8_weights.count(name) && t->device() != Device::cpu) {   // dequantised on the host
      Tensor host = Tensor::empty(t->shape());
      dequantize(v, host);
      t->copy_from(host);
      ++stats.fp8_dequantised;
    } else if (fp8_weights.count(name)) {
      dequantize(v, *t);
      ++stats.fp8_dequantised;
    } else {
      // a NaN or infinite weight is a corrupt file: let through, it surfaced much later as
      // "logit 0 is NaN", naming no file or tensor
      if (const auto bad = io::first_nonfinite(v))
        DS_THROW(FormatError, "{}: {}: a non-finite value (NaN or infinity) at element {} of {}",
                 st.file_of(name).string(), name, *bad, shape_str(v.shape));
      Tensor f = io::to_f32(v);
      t->copy_from(f);
    }
    ++stats.tensors;
  }
  return stats;
}

void load_model(ParamStore& ps, const fs::path& dir,
                const std::vector<std::string>& allowed_extra) {
  io::SafetensorsDir st(dir);
  LoadOptions opt;
  opt.allowed_extra = allowed_extra;
  load_model(ps, st, dir.string(), opt);
}

}  // namespace ds::model
