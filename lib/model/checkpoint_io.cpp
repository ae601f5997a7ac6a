// Model weights <-> config.json + safetensors (see include/ds/model/checkpoint_io.hpp).
// reference: spec §1.13; HF `save_pretrained` directory layout.
#include "ds/model/checkpoint_io.hpp"

#include <nlohmann/json.hpp>
#include <unordered_set>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/safetensors.hpp"

namespace ds::model {

namespace fs = std::filesystem;

void save_model(const ParamStore& ps, const ModelArgs& args, const fs::path& dir, bool bf16,
                uint64_t max_shard_bytes) {
  DS_CHECK_AS(IoError, fs::is_directory(dir), "{}: not a directory", dir.string());
  for (const auto& e : fs::directory_iterator(dir)) {   // stale weights from an earlier save
    std::string n = e.path().filename().string();
    if (n.starts_with("model") && (n.ends_with(".safetensors") || n == io::kSafetensorsIndex))
      fs::remove(e.path());
  }
  auto cfg = nlohmann::json::parse(to_hf_json(args));
  cfg["torch_dtype"] = bf16 ? "bfloat16" : "float32";
  io::write_file_atomic(dir / "config.json", cfg.dump(2) + "\n");

  std::vector<io::TensorSource> src;
  const DType pdt = bf16 ? DType::bf16 : DType::f32;
  for (const Param& p : ps.params()) src.push_back(io::TensorSource::from_tensor(p.info.name, p.value, pdt));
  for (const auto& [name, t] : ps.buffers())
    src.push_back(io::TensorSource::from_tensor(name, t, DType::f32));
  io::write_safetensors_dir(dir, src, max_shard_bytes);
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

// "a, b, c (+N more)" — the first 40 entries of a problem list.
std::string join_capped(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < 40; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > 40) s += fmt::format(" (+{} more)", v.size() - 40);
  return s;
}

}  // namespace

void load_model(ParamStore& ps, const fs::path& dir, const std::vector<std::string>& allowed_extra) {
  io::SafetensorsDir st(dir);
  std::vector<std::pair<std::string, Tensor*>> wanted;   // every tensor the model owns
  for (Param& p : ps.params()) wanted.emplace_back(p.info.name, &p.value);
  for (auto& [name, t] : ps.buffers()) wanted.emplace_back(name, &t);

  std::vector<std::string> missing, shapes, dtypes, unexpected;
  std::unordered_set<std::string> known;
  for (auto& [name, t] : wanted) {
    known.insert(name);
    if (!st.contains(name)) { missing.push_back(name); continue; }
    const io::TensorView& v = st.get(name);
    if (v.shape != t->shape())
      shapes.push_back(fmt::format("{} {} (model {})", name, shape_str(v.shape), shape_str(t->shape())));
    else if (v.dtype != DType::f32 && v.dtype != DType::bf16 && v.dtype != DType::f16)
      dtypes.push_back(fmt::format("{} {}", name, dtype_name(v.dtype)));
  }
  for (const std::string& n : st.names())
    if (!known.count(n) && !allowed(n, allowed_extra)) unexpected.push_back(n);
  if (!missing.empty() || !shapes.empty() || !dtypes.empty() || !unexpected.empty()) {
    std::string msg;
    auto add = [&](const char* what, const std::vector<std::string>& v) {
      if (!v.empty()) msg += fmt::format("{}{} {}: {}", msg.empty() ? "" : "; ", v.size(), what, join_capped(v));
    };
    add("missing", missing);
    add("unexpected", unexpected);
    add("wrong-shaped", shapes);
    add("not loadable as F32 (dequantise first)", dtypes);
    DS_THROW(FormatError, "{}: checkpoint does not match the model: {}", dir.string(), msg);
  }
  for (auto& [name, t] : wanted) {
    Tensor v = io::to_f32(st.get(name));
    t->copy_from(v);
  }
}

}  // namespace ds::model
