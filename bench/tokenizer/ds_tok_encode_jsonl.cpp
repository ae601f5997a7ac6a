// Test helper for tests/tokenizer/hf_compare.py: reads JSON lines {"text": ...} on stdin
// and writes {"ids": [...]} lines (no BOS) encoded with the given tokenizer.json.
// Usage: ds_tok_encode_jsonl TOKENIZER_JSON < in.jsonl > out.jsonl
// (ds-tokenize encode --jsonl replaces it once that tool exists; same line format.)
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <string>

#include "ds/core/error.hpp"
#include "ds/tokenizer/tokenizer.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s TOKENIZER_JSON < in.jsonl > out.jsonl\n", argv[0]);
    return 2;
  }
  try {
    const auto tok = ds::tok::Tokenizer::from_file(argv[1]);
    std::ios::sync_with_stdio(false);
    std::string line, out;
    std::vector<ds::tok::TokenId> ids;
    size_t line_no = 0;
    while (std::getline(std::cin, line)) {
      ++line_no;
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("text") || !j["text"].is_string()) {
        std::fprintf(stderr, "stdin:%zu: expected {\"text\": string}\n", line_no);
        return 1;
      }
      ids.clear();
      tok.encode(j["text"].get_ref<const std::string&>(), ids);
      out = "{\"ids\":[";
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out += ',';
        out += std::to_string(ids[i]);
      }
      out += "]}\n";
      std::cout << out;
    }
    return 0;
  } catch (const ds::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.exit_code();
  }
}
