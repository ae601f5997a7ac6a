// Fixtures of the ds-convert-fp8 tests: a temporary directory, model checkpoints written with
// the library (save_model: our F32/BF16 layout, optionally sharded) for the tiny preset, a
// "wide" configuration whose matrices exceed 128 in both dims with partial edge blocks, and
// the micro one; helpers to read tensors back and to compare directories byte for byte.
// reference: tests/model/hf_checkpoint_util.hpp (Hugging Face FP8 layout, tokenizer).
#pragma once
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

#include "../model/hf_checkpoint_util.hpp"
#include "../temp_dir.hpp"
#include "../model/model_test_util.hpp"
#include "ds/io/file.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/checkpoint_io.hpp"
#include "ds/model/config.hpp"
#include "ds/model/transformer.hpp"

namespace ds::convert::testing {

namespace fs = std::filesystem;

// A temporary directory (tests/temp_dir.hpp).
class TempDir : public ds::testing::TempDir {
 public:
  TempDir() : ds::testing::TempDir("convert") {}
};

// Matrices larger than 128 in both dims, none a multiple of 128 in at least one dim:
// q_a (144, 160), kv_a (144, 160), dense gate/up (272, 160), down (160, 272), experts (136, 160).
inline model::ModelArgs wide_args() {
  model::ModelArgs a;
  a.vocab_size = 300; a.dim = 160; a.inter_dim = 272; a.moe_inter_dim = 136;
  a.n_layers = 2; a.n_dense_layers = 1; a.n_heads = 2;
  a.n_routed_experts = 4; a.n_shared_experts = 1; a.n_activated_experts = 2;
  a.n_expert_groups = 2; a.n_limited_groups = 1;
  a.q_lora_rank = 144; a.kv_lora_rank = 136;
  a.qk_nope_head_dim = 16; a.qk_rope_head_dim = 8; a.v_head_dim = 16;
  a.yarn = false; a.max_seq_len = 64; a.n_mtp_layers = 1; a.init_std = 0.05;
  return a;
}

// A checkpoint directory written by save_model (F32 or BF16 parameters, F32 router biases),
// randomly initialised (router biases too), with the tiny test tokenizer. Returns the store.
inline void write_model(const fs::path& dir, const model::ModelArgs& a, uint64_t seed,
                        bool bf16 = false,
                        uint64_t max_shard_bytes = model::kDefaultMaxShardBytes) {
  model::ParamStore ps;
  model::Transformer m(a, ps);
  ps.init(seed);
  float sign = 1.0f;
  for (auto& [name, t] : ps.buffers())
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = (sign = -sign) * 0.01f * float(i % 7);
  fs::create_directories(dir);
  model::ModelArgs with_ids = a;   // the tiny tokenizer's BOS/EOS, as the loader checks
  with_ids.bos_token_id = model::testing::kTinyBos;
  with_ids.eos_token_id = model::testing::kTinyEos;
  model::save_model(ps, with_ids, dir, bf16, max_shard_bytes);
  std::ofstream(dir / "tokenizer.json") << model::testing::tiny_tokenizer_json();
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"tokenizer_class": "PreTrainedTokenizerFast"})";
}

// Every regular file below `dir` (relative path -> bytes).
inline std::map<std::string, std::string> dir_bytes(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = io::read_file(e.path());
  return out;
}

// Entries of `parent` (names), to check that a failed conversion left nothing behind.
inline std::vector<std::string> entries(const fs::path& parent) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(parent)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// An F8_E4M3 weight dequantised by the spec §3.3 rule, written out independently of the
// library: W[i, j] = e4m3(q[i, j]) * s[i / b, j / b] in FP32.
inline std::vector<float> dequant_ref(const io::TensorView& q, const io::TensorView& s, int64_t b) {
  const int64_t M = q.shape[0], N = q.shape[1], sn = s.shape[1];
  const Tensor sf = io::to_f32(s);
  std::vector<float> out(size_t(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      out[size_t(i * N + j)] = e4m3_to_f32(q.data[i * N + j]) * sf.f32()[(i / b) * sn + j / b];
  return out;
}

}  // namespace ds::convert::testing
