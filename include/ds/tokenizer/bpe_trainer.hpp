// Byte-level BPE training: count pre-tokenized words (multi-threaded), then merge the most
// frequent adjacent pair repeatedly until the vocabulary is full. Deterministic: ties are
// broken by the pair's token strings, so the same input gives the same file for any
// number of threads. Output is a Hugging Face tokenizer.json (and tokenizer_config.json).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ds::tok {

class PreTokenizer;   // pretokenizer.hpp

struct BpeTrainerOptions {
  size_t vocab_size = 32000;            // total, special + added tokens included
  uint64_t min_frequency = 2;           // pairs seen fewer times are never merged
  std::vector<std::string> special_tokens;   // empty -> DeepSeek-V3's set (see .cpp)
  int threads = 0;                      // <= 0 -> all cores
  bool progress = false;                // progress on stderr (TTY only)
  std::shared_ptr<const PreTokenizer> pre_tokenizer;   // null -> PreTokenizer::deepseek_v3()
};

// The Jinja chat template ds writes into tokenizer_config.json: DeepSeek-V3's plain-chat
// rendering (spec §8.6), recognised by the chat-template reader of lib/infer.
std::string_view ds_chat_template();

class BpeTrainer {
 public:
  explicit BpeTrainer(BpeTrainerOptions opts);
  ~BpeTrainer();
  // Feeds one document (any size); thread-safe to call from one thread at a time; the
  // trainer parallelises counting internally.
  void add_text(std::string_view text);
  // Runs the merges; returns the tokenizer.json text.
  std::string train();
  // The matching tokenizer_config.json (bos/eos, DeepSeek-V3 chat template).
  std::string tokenizer_config_json() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ds::tok
