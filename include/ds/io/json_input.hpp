// The checks on a JSON text read from a user's file or stream, before it is parsed: the
// nesting limit (json_depth.hpp) and unique keys. nlohmann, like Python's json, keeps the last
// of two equal keys, so {"prompt": "a", "prompt": "b"} was read as "b" without a word; here
// it is a FormatError naming the key. (Not for tokenizer.json: a duplicate there is left to its
// reader's own checks.)
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/io/json_depth.hpp"

namespace ds::io {

// A SAX pass that accepts every event and stops at the first syntax error (the parser that
// follows reports it); a pass overrides the events it looks at.
struct JsonSaxPass : nlohmann::json_sax<nlohmann::json> {
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }
};

namespace detail {

// One set of keys per open object (and an empty one per array, to keep the stack aligned).
struct DuplicateKeys : JsonSaxPass {
  std::vector<std::unordered_set<std::string>> open;
  std::string duplicate;   // the first key seen twice
  bool start_object(std::size_t) override { return open.emplace_back(), true; }
  bool key(string_t& k) override {
    if (open.back().insert(k).second) return true;
    duplicate = k;
    return false;
  }
  bool end_object() override { return open.pop_back(), true; }
  bool start_array(std::size_t) override { return open.emplace_back(), true; }
  bool end_array() override { return open.pop_back(), true; }
};

}  // namespace detail

// FormatError "WHERE: JSON nested deeper than 256 levels", "WHERE: key "K" appears twice in
// one object" or "WHERE: a NUL byte at byte N of the line" (JSON text has none, and nlohmann
// takes one for the end of the input: the rest of the line was dropped without a word).
inline void check_json_input(std::string_view text, std::string_view where) {
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    DS_THROW(FormatError, "{}: a NUL byte at byte {} of the line (not JSON text)", where, nul);
  check_json_depth(text, where);
  detail::DuplicateKeys keys;
  nlohmann::json::sax_parse(text, &keys);
  if (!keys.duplicate.empty())
    DS_THROW(FormatError, "{}: key \"{}\" appears twice in one object", where, keys.duplicate);
}

}  // namespace ds::io
