// Pretrained checkpoint loading (see include/ds/model/pretrained.hpp): config + quantization
// config, MTP detection, FP8-aware weight loading through load_model, tokenizer and chat
// template, checkpoint fingerprint.
// reference: spec §1.13 (tensor list, MTP copies), §3.3 (dequantisation), §8.6 (template).
#include "ds/model/pretrained.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <tuple>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"
#include "ds/io/safetensors.hpp"

namespace ds::model {

namespace fs = std::filesystem;
using nlohmann::json;

QuantConfig read_quant_config(const fs::path& config_json) {
  const std::string src = config_json.string();
  const std::string config_text = io::read_file(config_json);
  io::check_json_input(config_text, src);
  json j;
  try {
    j = json::parse(config_text);
  } catch (const json::exception& e) {
    DS_THROW(ConfigError, "{}: not valid JSON: {}", src, e.what());
  }
  QuantConfig q;
  if (!j.is_object() || !j.contains("quantization_config") || j["quantization_config"].is_null())
    return q;
  const json& c = j["quantization_config"];
  if (!c.is_object()) DS_THROW(ConfigError, "{}: quantization_config must be an object", src);
  // a string member of quantization_config, `def` when absent
  auto text = [&](const char* key, const char* def) {
    auto it = c.find(key);
    if (it == c.end()) return std::string(def);
    if (!it->is_string())
      DS_THROW(ConfigError, "{}: quantization_config.{} must be a string", src, key);
    return it->get<std::string>();
  };
  const std::string method = text("quant_method", "");
  if (method != "fp8")
    DS_THROW(ConfigError, "{}: quantization_config.quant_method '{}' is not supported (only fp8)",
             src, method);
  const std::string fmt_ = text("fmt", "e4m3");
  if (fmt_ != "e4m3")
    DS_THROW(ConfigError, "{}: quantization_config.fmt '{}' is not supported (only e4m3)", src,
             fmt_);
  q.fp8 = true;
  if (c.contains("weight_block_size")) {
    const json& b = c["weight_block_size"];
    auto ok = [](const json& v) {   // a block no larger than any tensor dimension (< 2^31)
      return v.is_number_unsigned() && v.get<uint64_t>() > 0 && v.get<uint64_t>() <= INT32_MAX;
    };
    if (!b.is_array() || b.size() != 2 || !ok(b[0]) || !ok(b[1]))
      DS_THROW(ConfigError,
               "{}: quantization_config.weight_block_size must be two positive integers", src);
    q.block_rows = b[0].get<int64_t>();
    q.block_cols = b[1].get<int64_t>();
  }
  if (auto it = c.find("scale_fmt"); it != c.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>() != "ue8m0")
      DS_THROW(ConfigError,
               "{}: quantization_config.scale_fmt {} is not supported (\"ue8m0\", or absent for "
               "FP32 scales)", src, it->dump());
    q.pow2_scales = true;
  }
  return q;
}

namespace {

// The JSON header of one safetensors file (the n bytes after the 8-byte length).
std::string safetensors_header(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  uint8_t len[8];
  if (!f.read(reinterpret_cast<char*>(len), 8))
    DS_THROW(IoError, "{}: cannot read header", p.string());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n > (uint64_t(1) << 30))
    DS_THROW(FormatError, "{}: header length {} is implausible", p.string(), n);
  std::string h(n, '\0');
  if (!f.read(h.data(), std::streamsize(n))) DS_THROW(IoError, "{}: truncated header", p.string());
  return h;
}

std::string fingerprint_of(const fs::path& dir, const io::SafetensorsDir& st) {
  Xxh64Stream h;
  auto add = [&](const std::string& tag, const std::string& bytes) {
    h.update(tag.data(), tag.size() + 1);   // includes the terminating NUL as a separator
    h.update(bytes.data(), bytes.size());
  };
  add("config.json", io::read_file(dir / "config.json"));
  if (io::exists(dir / io::kSafetensorsIndex))
    add("index", io::read_file(dir / io::kSafetensorsIndex));
  std::set<std::string> files;
  for (const std::string& n : st.names()) files.insert(st.file_of(n).filename().string());
  for (const std::string& f : files) add(f, safetensors_header(dir / f));
  return hex64(h.digest());
}

// Number of MTP layers whose tensors appear in the file (consecutive from n_layers).
int64_t count_mtp_layers(const io::SafetensorsDir& st, const ModelArgs& a) {
  std::set<int64_t> present;
  for (const std::string& n : st.names()) {
    if (!n.starts_with("model.layers.")) continue;
    const int64_t l = std::atoll(n.c_str() + 13);
    if (l >= a.n_layers) present.insert(l);
  }
  int64_t k = 0;
  while (present.count(a.n_layers + k)) ++k;
  return std::max<int64_t>(k, int64_t(present.size()));   // gaps show up as load errors
}

// The file's layers from n_layers on, of which config.json declares `declared` MTP layers: each
// of those present must be an MTP layer (its eh_proj: otherwise num_hidden_layers is smaller
// than the weights' decoder stack), and the ones not loaded are ignored. A layer past the
// declared ones is ignored too when it is an MTP layer (num_nextn_predict_layers lowered to run
// without MTP, as Hugging Face's loader allows); otherwise its tensors are unexpected.
LoadOptions load_options(const ModelArgs& a, int64_t in_file, int64_t declared,
                         const QuantConfig& q, const io::SafetensorsDir& st, const fs::path& dir) {
  LoadOptions o;
  o.fp8 = true;   // FP8 iff a weight_scale_inv sibling exists (spec §3.3), config or not
  o.block_rows = q.block_rows;
  o.block_cols = q.block_cols;
  for (int64_t k = 0; k < std::min(in_file, declared); ++k) {
    const std::string p = fmt::format("model.layers.{}.", a.n_layers + k);
    if (!st.contains(p + "eh_proj.weight"))
      DS_THROW(FormatError,
               "{}: {}* has no eh_proj.weight, so it is not an MTP layer: the weights hold more "
               "decoder layers than num_hidden_layers {} in config.json",
               dir.string(), p, a.n_layers);
    if (k >= a.n_mtp_layers) { o.allowed_extra.push_back(p + "*"); continue; }
    o.copies.emplace_back(p + "embed_tokens.weight", "model.embed_tokens.weight");
    o.copies.emplace_back(p + "shared_head.head.weight", "lm_head.weight");
  }
  for (int64_t k = declared; k < in_file; ++k) {
    const std::string p = fmt::format("model.layers.{}.", a.n_layers + k);
    if (!st.contains(p + "eh_proj.weight")) continue;
    spdlog::info("{}: {}* is an MTP layer past num_nextn_predict_layers {}: ignored",
                 dir.string(), p, declared);
    o.allowed_extra.push_back(p + "*");
  }
  return o;
}

void load_tokenizer_files(Pretrained& pt, const PretrainedOptions& opt) {
  const fs::path tj = pt.dir / "tokenizer.json";
  if (io::exists(tj)) {
    pt.tokenizer.emplace(tok::Tokenizer::from_file(tj));
    if (int64_t(pt.tokenizer->vocab_size()) > pt.args.vocab_size)
      DS_THROW(FormatError, "{}: tokenizer has {} ids but the model's vocab_size is {}",
               tj.string(), pt.tokenizer->vocab_size(), pt.args.vocab_size);
    // config.json's ids are the ones transformers' generate() starts with and stops at; ours
    // are the tokenizer's: a checkpoint where they differ would stop at another token there
    for (const auto& [key, id, own] :
         {std::tuple{"bos_token_id", pt.args.bos_token_id, pt.tokenizer->bos_id()},
          std::tuple{"eos_token_id", pt.args.eos_token_id, pt.tokenizer->eos_id()}})
      if (own && int64_t(*own) != id)
        DS_THROW(FormatError, "{}: {} {} is not the id of {}'s '{}' ({}): set it to {}",
                 (pt.dir / "config.json").string(), key, id, tj.string(),
                 pt.tokenizer->id_to_token(*own), *own, *own);
  } else if (opt.need_tokenizer) {
    DS_THROW(FormatError, "{}: no tokenizer.json in the checkpoint directory", pt.dir.string());
  }
  const fs::path tc = pt.dir / "tokenizer_config.json";
  pt.add_bos_token = io::add_bos_token_in(tc).value_or(true);
  if (!io::exists(tc)) {
    spdlog::info("{}: no tokenizer_config.json, using the built-in DeepSeek-V3 chat template",
                 pt.dir.string());
    pt.chat_template = infer::ChatTemplate::deepseek_v3();
    return;
  }
  try {
    pt.chat_template = infer::ChatTemplate::from_tokenizer_config(tc);
    if (pt.tokenizer) pt.chat_template->check_tokens(*pt.tokenizer, tc.string());
  } catch (const FormatError& e) {
    pt.chat_template.reset();
    pt.chat_template_error = e.what();   // only chat-formatted use fails
  }
}

}  // namespace

fs::path resolve_checkpoint_dir(const fs::path& dir) {
  if (!io::is_directory(dir))
    DS_THROW(IoError, "{}: not a directory (expected a model checkpoint)", dir.string());
  const auto ckpt = io::checkpoint_in(dir);
  if (!ckpt) DS_THROW(FormatError, "{}: not a model checkpoint (no config.json)", dir.string());
  if (*ckpt != dir)
    spdlog::info("{}: run directory, using its newest checkpoint {}", dir.string(),
                 ckpt->string());
  return *ckpt;
}

std::string checkpoint_fingerprint(const fs::path& dir) {
  io::SafetensorsDir st(dir);
  return fingerprint_of(dir, st);
}

std::string checkpoint_weights_hash(const fs::path& dir) {
  io::SafetensorsDir st(dir);
  std::set<fs::path> files;
  for (const std::string& n : st.names()) files.insert(st.file_of(n));
  Xxh64Stream h;
  std::vector<char> buf(size_t(8) << 20);
  for (const fs::path& p : files) {
    const std::string name = p.filename().string();
    h.update(name.data(), name.size() + 1);   // includes the terminating NUL as a separator
    std::ifstream f(p, std::ios::binary);
    if (!f) DS_THROW(IoError, "{}: cannot open", p.string());
    while (f) {
      f.read(buf.data(), std::streamsize(buf.size()));
      h.update(buf.data(), size_t(f.gcount()));
    }
    if (f.bad()) DS_THROW(IoError, "{}: read error", p.string());
  }
  return hex64(h.digest());
}

Pretrained load_pretrained(const fs::path& dir_in, const PretrainedOptions& opt) {
  Pretrained pt;
  pt.dir = resolve_checkpoint_dir(dir_in);
  const fs::path cfg = pt.dir / "config.json";
  if (!io::exists(pt.dir / io::kSafetensorsIndex) && !io::exists(pt.dir / io::kSafetensorsSingle))
    DS_THROW(FormatError, "{}: not a model checkpoint (no {} or {})", pt.dir.string(),
             io::kSafetensorsSingle, io::kSafetensorsIndex);
  pt.args = load_config(cfg);
  pt.quant = read_quant_config(cfg);
  io::SafetensorsDir st(pt.dir);

  pt.mtp_layers_in_file = count_mtp_layers(st, pt.args);
  const int64_t declared_mtp = pt.args.n_mtp_layers;
  const int64_t want_mtp = opt.load_mtp ? declared_mtp : 0;
  if (pt.mtp_layers_in_file < want_mtp)
    spdlog::info("{}: config declares {} MTP layer(s), the weights hold {}: loading {}",
                 pt.dir.string(), want_mtp, pt.mtp_layers_in_file,
                 pt.mtp_layers_in_file == 0 ? "none (speculative decoding unavailable)"
                                            : "those");
  pt.args.n_mtp_layers = std::min(want_mtp, pt.mtp_layers_in_file);

  // A config.json describing a bigger model than the weights hold (a typo in
  // num_hidden_layers or hidden_size) fails here, before that model is allocated.
  const ParamCounts want = count_params(pt.args);
  int64_t held = 0;
  for (const std::string& n : st.names()) held += st.get(n).numel();
  if (want.total + want.mtp > held)
    DS_THROW(FormatError, "{}: describes a model of {} parameters, but the weights in {} hold "
             "{} values: config.json does not match the weights", cfg.string(),
             want.total + want.mtp, pt.dir.string(), held);

  pt.store = std::make_unique<ParamStore>();
  pt.store->set_device(opt.device);
  pt.model = std::make_unique<Transformer>(pt.args, *pt.store);
  const LoadOptions lo =
      load_options(pt.args, pt.mtp_layers_in_file, declared_mtp, pt.quant, st, pt.dir);
  pt.stats = load_model(*pt.store, st, pt.dir.string(), lo);
  if (pt.stats.fp8_dequantised > 0 && !pt.quant.fp8)
    spdlog::warn(
        "{}: FP8 weights without a quantization_config in config.json (block {}x{} assumed)",
        pt.dir.string(), pt.quant.block_rows, pt.quant.block_cols);
  for (const std::string& c : pt.stats.copies_differ)
    spdlog::warn("{}: {} differs from the main model's tensor; ignored (MTP shares the main one)",
                 pt.dir.string(), c);
  spdlog::info("loaded {}: {} tensors ({} FP8 dequantised), {} MTP layer(s)", pt.dir.string(),
               pt.stats.tensors, pt.stats.fp8_dequantised, pt.args.n_mtp_layers);
  pt.fingerprint = fingerprint_of(pt.dir, st);
  load_tokenizer_files(pt, opt);
  return pt;
}

}  // namespace ds::model
