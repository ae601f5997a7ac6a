// Shared fixtures for the lib/tokenize unit tests: a small BPE tokenizer trained here on
// generated text (no external data), the DeepSeek-V3 tokenizer when ../shared/data holds
// it, tricky text around newlines, and a scratch directory under the build tree.
#pragma once
#include <filesystem>
#include <memory>
#include <string>

#include "ds/tokenizer/bpe_trainer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds_test {

namespace fs = std::filesystem;

// Deterministic mixed text: words, code, digits, CJK, punctuation + newlines, whitespace
// runs, CRLF, blank lines; every kind of line start (letter, space, digit, punct).
inline std::string tricky_text(size_t approx_bytes, uint64_t seed = 1) {
  static const char* const kPieces[] = {
      "Hello world", " the quick brown fox", "):\n", "def f(x):\n    return x\n",
      "\n", "\n\n", "  \n", "\t\n", " \nA", "123\nabc", "\xe4\xbd\xa0\xe5\xa5\xbd\n",
      "x", "!!\r\nq", "caf\xc3\xa9 ", "  leading", "word.", "\"quoted\"\n", "3.14159\n",
      "\xf0\x9f\x8c\x8d emoji\n", "-dash\n", "Line\n", "end.\n", ";\n", "\n  \n z", " ",
  };
  std::string s;
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  while (s.size() < approx_bytes) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    s += kPieces[x % (sizeof(kPieces) / sizeof(kPieces[0]))];
  }
  return s;
}

inline const ds::tok::Tokenizer& small_tokenizer() {
  static const std::unique_ptr<ds::tok::Tokenizer> tok = [] {
    ds::tok::BpeTrainerOptions o;
    o.vocab_size = 600;
    o.min_frequency = 2;
    o.threads = 1;
    ds::tok::BpeTrainer trainer(o);
    trainer.add_text(tricky_text(200000, 7));
    return std::make_unique<ds::tok::Tokenizer>(
        ds::tok::Tokenizer::from_json(trainer.train(), "small tokenizer.json"));
  }();
  return *tok;
}

// nullptr when the shared DeepSeek-V3 tokenizer is not there (tests then skip that part).
inline const ds::tok::Tokenizer* deepseek_tokenizer() {
  static const std::unique_ptr<ds::tok::Tokenizer> tok =
      []() -> std::unique_ptr<ds::tok::Tokenizer> {
    const fs::path p = fs::path(DS_SHARED_DATA) / "deepseek_v3_tokenizer" / "tokenizer.json";
    if (!fs::exists(p)) return nullptr;
    return std::make_unique<ds::tok::Tokenizer>(ds::tok::Tokenizer::from_file(p));
  }();
  return tok.get();
}

inline fs::path scratch_dir(const std::string& name) {
  const fs::path d = fs::path(DS_BINARY_DIR) / "tests" / "tokenize" / "scratch" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace ds_test
