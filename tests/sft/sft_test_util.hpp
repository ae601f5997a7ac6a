// Shared fixtures of the SFT tests: a small BPE tokenizer with the DeepSeek-V3 special and
// chat tokens trained here (no external data), the chat template ds-tokenize writes, the
// real DeepSeek-V3 tokenizer when ../shared/data holds it, JSONL scratch files, and a
// helper that turns target flags back into text runs.
#pragma once
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "ds/infer/chat_template.hpp"
#include "ds/sft/data.hpp"
#include "ds/tokenizer/bpe_trainer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds_sft_test {

namespace fs = std::filesystem;

inline const std::string kTrainText =
    "The user asks a question and the assistant answers it briefly. Who went up to the "
    "mountain? The king went up to the mountain. Answer briefly, please: 2 + 3 = 5. ";

struct TokKit {
  std::unique_ptr<ds::tok::Tokenizer> tok;
  std::unique_ptr<ds::infer::ChatTemplate> tmpl;
};

// Tokenizer with BOS/EOS/pad + FIM + User/Assistant tokens (ds-tokenize's default set).
inline const TokKit& small_kit() {
  static const TokKit kit = [] {
    ds::tok::BpeTrainerOptions o;
    o.vocab_size = 340;
    o.min_frequency = 2;
    o.threads = 1;
    ds::tok::BpeTrainer trainer(o);
    for (int i = 0; i < 20; ++i) trainer.add_text(kTrainText);
    TokKit k;
    k.tok = std::make_unique<ds::tok::Tokenizer>(
        ds::tok::Tokenizer::from_json(trainer.train(), "small tokenizer.json"));
    k.tmpl = std::make_unique<ds::infer::ChatTemplate>(
        ds::infer::ChatTemplate::from_config_json(trainer.tokenizer_config_json(), "small config"));
    return k;
  }();
  return kit;
}

// The released DeepSeek-V3 tokenizer and its chat template; tok is null when absent.
inline const TokKit& deepseek_kit() {
  static const TokKit kit = [] {
    TokKit k;
    const fs::path d = fs::path(DS_SHARED_DATA) / "deepseek_v3_tokenizer";
    if (!fs::exists(d / "tokenizer.json") || !fs::exists(d / "tokenizer_config.json")) return k;
    k.tok =
        std::make_unique<ds::tok::Tokenizer>(ds::tok::Tokenizer::from_file(d / "tokenizer.json"));
    k.tmpl = std::make_unique<ds::infer::ChatTemplate>(
        ds::infer::ChatTemplate::from_tokenizer_config(d / "tokenizer_config.json"));
    return k;
  }();
  return kit;
}

inline fs::path scratch_dir(const std::string& name) {
  const fs::path d = fs::path(DS_BINARY_DIR) / "tests" / "sft" / "scratch" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

inline std::string write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

// The decoded text of every maximal run of target tokens, in order.
inline std::vector<std::string> target_runs(const ds::sft::Sample& s,
                                            const ds::tok::Tokenizer& tok) {
  std::vector<std::string> runs;
  bool in = false;
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    if (s.target[i]) {
      if (!in) runs.emplace_back();
      runs.back() += tok.token_bytes(uint32_t(s.tokens[i]));
    }
    in = s.target[i] != 0;
  }
  return runs;
}

}  // namespace ds_sft_test
