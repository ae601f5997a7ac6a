// A nesting limit for JSON read from files and streams, checked before parsing. nlohmann's
// parser itself is iterative, but dump(), copies and comparisons recurse once per level, so a
// 300 KB line of '[' crashed a tool with a stack overflow. The project's inputs (JSONL records,
// config.json, tokenizer.json, safetensors headers) nest a few levels deep.
#pragma once

#include <string_view>

#include "ds/core/error.hpp"

namespace ds::io {

inline constexpr int kMaxJsonDepth = 256;

// Whether `text` never opens more than kMaxJsonDepth arrays or objects at once (strings
// skipped, escapes honoured). Malformed text is left to the parser.
inline bool json_depth_ok(std::string_view text) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

// FormatError "WHERE: JSON nested deeper than 256 levels" unless json_depth_ok(text).
inline void check_json_depth(std::string_view text, std::string_view where) {
  if (!json_depth_ok(text))
    DS_THROW(FormatError, "{}: JSON nested deeper than {} levels", where, kMaxJsonDepth);
}

}  // namespace ds::io
