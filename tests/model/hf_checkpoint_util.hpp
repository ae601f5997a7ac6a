// Test fixture: writes a DeepSeek-V3-format Hugging Face checkpoint directory the way the
// released weights are laid out -- several shards + model.safetensors.index.json, BF16
// non-quantised tensors, FP8 e4m3 weights with F32 weight_scale_inv for exactly the
// parameters the release quantises (ParamInfo::fp8: attention projections and every
// expert/dense FFN projection, the MTP layer's included), the MTP layer's copies of the
// embedding and head, config.json with quantization_config, and a small byte-level
// tokenizer.json. Quantisation: per block amax/448, RNE saturating e4m3 (ds::f32_to_e4m3).
// reference: spec §1.13, §3.3 (producer side); tests/model/test_pretrained.cpp.
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/config.hpp"
#include "ds/model/params.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::model::testing {

namespace fs = std::filesystem;

// Byte-level tokenizer: ids 0..255 are bytes, merges 256..260, BOS 261 / EOS 262 (vocab 263).
inline constexpr int64_t kTinyBos = 261, kTinyEos = 262;   // config.json's ids with it
inline std::string tiny_tokenizer_json() {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[tok::byte_to_unicode(static_cast<unsigned char>(b))] = b;
  const std::string sp = tok::byte_to_unicode(' ');
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"t", "h"}, {"th", "e"}, {sp, "the"}, {"a", "n"}, {sp, "a"}};
  json m = json::array();
  int next = 256;
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
    m.push_back(a + " " + b);
  }
  auto added = [](const std::string_view s, int id) {
    return json{{"id", id}, {"content", std::string(s)}, {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  return json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       json::array({added(tok::special::kBos, int(kTinyBos)),
                    added(tok::special::kEos, int(kTinyEos))})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
      {"post_processor", {{"type", "ByteLevel"}, {"trim_offsets", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", m}}}}
      .dump();
}

struct HfWriteOptions {
  bool fp8 = true;                      // quantise ParamInfo::fp8 weights
  int64_t block = 128;                  // weight_block_size (square)
  bool mtp_copies = true;               // write model.layers.{L}.embed_tokens / shared_head.head
  uint64_t max_shard_bytes = 4096;      // small: several shards
  bool tokenizer = true;
  // Edits the tensor list before writing (delete / add / reshape entries for error tests).
  std::function<void(std::vector<io::TensorSource>&)> mutate;
};

// Owns the converted bytes referenced by the TensorSources.
struct HfTensors {
  std::deque<std::vector<uint8_t>> bytes;
  std::deque<std::vector<float>> floats;
  std::vector<io::TensorSource> src;
};

// Quantises w (M, N) into e4m3 bytes + scales [ceil(M/b), ceil(N/b)] (zero-padded blocks).
inline void quantize_fp8(const float* w, int64_t M, int64_t N, int64_t b, std::vector<uint8_t>& q,
                         std::vector<float>& s) {
  const int64_t sm = (M + b - 1) / b, sn = (N + b - 1) / b;
  q.assign(size_t(M * N), 0);
  s.assign(size_t(sm * sn), 0.0f);
  for (int64_t bi = 0; bi < sm; ++bi)
    for (int64_t bj = 0; bj < sn; ++bj) {
      float amax = 0;
      for (int64_t i = bi * b; i < std::min(M, (bi + 1) * b); ++i)
        for (int64_t j = bj * b; j < std::min(N, (bj + 1) * b); ++j)
          amax = std::max(amax, std::fabs(w[i * N + j]));
      const float scale = amax > 0 ? amax / kE4M3Max : 1.0f;
      s[size_t(bi * sn + bj)] = scale;
      for (int64_t i = bi * b; i < std::min(M, (bi + 1) * b); ++i)
        for (int64_t j = bj * b; j < std::min(N, (bj + 1) * b); ++j)
          q[size_t(i * N + j)] = f32_to_e4m3(w[i * N + j] / scale);
    }
}

inline HfTensors hf_tensors(const ParamStore& ps, const ModelArgs& a, const HfWriteOptions& o) {
  HfTensors t;
  for (const Param& p : ps.params()) {
    if (o.fp8 && p.info.fp8) {
      auto& q = t.bytes.emplace_back();
      auto& s = t.floats.emplace_back();
      quantize_fp8(p.value.f32(), p.info.shape[0], p.info.shape[1], o.block, q, s);
      t.src.push_back(io::TensorSource::raw(p.info.name, DType::f8_e4m3, p.info.shape, q.data()));
      const Shape ss{(p.info.shape[0] + o.block - 1) / o.block,
                     (p.info.shape[1] + o.block - 1) / o.block};
      t.src.push_back(io::TensorSource::raw(p.info.name + "_scale_inv", DType::f32, ss, s.data()));
    } else {
      t.src.push_back(io::TensorSource::from_tensor(p.info.name, p.value, DType::bf16));
    }
  }
  for (const auto& [name, v] : ps.buffers())
    t.src.push_back(io::TensorSource::from_tensor(name, v, DType::f32));
  for (int64_t k = 0; o.mtp_copies && k < a.n_mtp_layers; ++k) {
    const std::string pre = "model.layers." + std::to_string(a.n_layers + k) + ".";
    t.src.push_back(io::TensorSource::from_tensor(
        pre + "embed_tokens.weight", ps.find("model.embed_tokens.weight")->value, DType::bf16));
    t.src.push_back(io::TensorSource::from_tensor(pre + "shared_head.head.weight",
                                                  ps.find("lm_head.weight")->value, DType::bf16));
  }
  return t;
}

// Writes the directory (created if needed). The in-memory values of `ps` are the masters.
inline void write_hf_checkpoint(const fs::path& dir, const ParamStore& ps, const ModelArgs& a,
                                const HfWriteOptions& o = {}) {
  fs::create_directories(dir);
  HfTensors t = hf_tensors(ps, a, o);
  if (o.mutate) o.mutate(t.src);
  io::write_safetensors_dir(dir, t.src, o.max_shard_bytes);
  auto cfg = nlohmann::json::parse(to_hf_json(a));
  cfg["torch_dtype"] = "bfloat16";
  if (o.tokenizer) {   // the loader checks them against the tokenizer
    cfg["bos_token_id"] = kTinyBos;
    cfg["eos_token_id"] = kTinyEos;
  }
  if (o.fp8)
    cfg["quantization_config"] = {{"activation_scheme", "dynamic"},
                                  {"fmt", "e4m3"},
                                  {"quant_method", "fp8"},
                                  {"weight_block_size", {o.block, o.block}}};
  std::ofstream(dir / "config.json") << cfg.dump(2) << "\n";
  if (o.tokenizer) std::ofstream(dir / "tokenizer.json") << tiny_tokenizer_json();
}

}  // namespace ds::model::testing
