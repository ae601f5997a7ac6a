// Loading a pretrained model directory for inference and evaluation: our own checkpoints and
// Hugging Face DeepSeek-V3 directories (config.json with an optional FP8 quantization_config,
// model.safetensors or shards + model.safetensors.index.json, tokenizer.json,
// tokenizer_config.json). FP8 e4m3 weights are dequantised to F32 tensor by tensor from the
// mmap (spec §3.3); BF16/F16 become F32. The MTP layer is optional; the HF MTP copies of the
// embedding and head are accepted and compared with the main tensors (the main ones are used).
// reference: spec §1.13, §3.3, §8.6; include/ds/model/checkpoint_io.hpp.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ds/infer/chat_template.hpp"
#include "ds/model/checkpoint_io.hpp"
#include "ds/model/config.hpp"
#include "ds/model/params.hpp"
#include "ds/model/transformer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::model {

// quantization_config of config.json (absent: fp8 = false).
struct QuantConfig {
  bool fp8 = false;                 // quant_method "fp8", fmt "e4m3"
  int64_t block_rows = 128, block_cols = 128;   // weight_block_size
  // scale_fmt "ue8m0" (DeepSeek-V3.1): the scales ds computes (quantised weights added by
  // ds-convert-fp8) are powers of two; stored weight scales are taken as they are (the
  // released V3.1's o_proj scales are not powers of two)
  bool pow2_scales = false;
};
// ConfigError naming the file and key for anything but fp8 / e4m3 / two positive block sizes /
// scale_fmt "ue8m0" or absent (null counts as absent).
QuantConfig read_quant_config(const std::filesystem::path& config_json);

struct PretrainedOptions {
  bool load_mtp = true;             // false: skip the MTP layer(s) even when present
  bool need_tokenizer = true;       // false: tokenizer.json may be absent (tokenizer empty)
  Device device = Device::cpu;      // where the weights are placed (ops::init_device first)
};

struct Pretrained {
  std::filesystem::path dir;        // the checkpoint directory actually loaded
  ModelArgs args;                   // n_mtp_layers = MTP layers actually loaded
  std::unique_ptr<ParamStore> store;
  std::unique_ptr<Transformer> model;   // over *store
  std::optional<tok::Tokenizer> tokenizer;
  // tokenizer_config.json's template, or the built-in V3 one when the file is absent; empty
  // (with chat_template_error set) when the file's template is not DeepSeek-V3's.
  std::optional<infer::ChatTemplate> chat_template;
  std::string chat_template_error;
  // tokenizer_config.json's add_bos_token (true when absent, the default of transformers'
  // Llama tokenizer classes; DeepSeek-V3's file says true): whether a plain text (a prompt, a
  // document to score) starts with BOS.
  // ds-pretrain writes it as its data had BOS before every document or not.
  bool add_bos_token = true;
  std::string fingerprint;          // XXH64 over config.json, the index and shard headers
  QuantConfig quant;
  LoadStats stats;
  int64_t mtp_layers_in_file = 0;   // MTP layers present in the weights
};

// `dir` is a checkpoint directory or a ds-pretrain run directory (its newest step-* is used).
// Errors: IoError / FormatError naming `dir` when it is not a model checkpoint (no config.json
// or no safetensors); the single load_model FormatError listing every tensor problem;
// FormatError when the tokenizer does not fit the model's vocabulary.
Pretrained load_pretrained(const std::filesystem::path& dir, const PretrainedOptions& opt = {});

// The directory holding the weights: `dir` itself when it has a config.json, else the newest
// step-* checkpoint of a run directory. IoError / FormatError naming `dir` otherwise.
std::filesystem::path resolve_checkpoint_dir(const std::filesystem::path& dir);

// XXH64 (16 hex digits) over config.json, model.safetensors.index.json (if any) and the
// JSON header of every safetensors file (sorted by name): identifies the weights' layout
// without hashing them (every checkpoint of one run has the same).
std::string checkpoint_fingerprint(const std::filesystem::path& dir);

// XXH64 (16 hex digits) over the bytes of every safetensors file of checkpoint `dir` (sorted by
// name): identifies the weights themselves. Reads them all (IoError naming a file it cannot).
std::string checkpoint_weights_hash(const std::filesystem::path& dir);

}  // namespace ds::model
