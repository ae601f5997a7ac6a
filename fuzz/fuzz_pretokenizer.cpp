// libFuzzer target: arbitrary bytes (valid UTF-8 or not) through the DeepSeek-V3
// pre-tokenizer and a small embedded byte-level tokenizer (all 256 byte tokens, a few
// merges, two added tokens). Checks: pieces are non-empty and cover the input exactly;
// the token bytes concatenate back to the input; decode of valid UTF-8 is the input.
// reference: spec §8.3-8.5.
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "ds/tokenizer/utf8.hpp"

namespace {

// tokenizer.json: bytes -> ids 0..255, merges "Ġ t", "Ġt h", "e r", DeepSeek pre-tokenizer.
ds::tok::Tokenizer make_tokenizer() {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ds::tok::byte_to_unicode(static_cast<unsigned char>(b))] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"Ġ", "t"}, {"Ġt", "h"}, {"e", "r"}, {"Ġth", "er"}};
  json m = json::array();
  int next = 256;
  for (const auto& [a, b] : merges) {
    vocab[a + b] = next++;
    m.push_back(a + " " + b);
  }
  json added = json::array({{{"id", 300}, {"content", "<s>"}, {"special", true}},
                            {{"id", 301},
                             {"content", "<t>"},
                             {"lstrip", true},
                             {"rstrip", true},
                             {"single_word", true}}});
  json j = {{"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer", json::parse(ds::tok::PreTokenizer::deepseek_v3().to_json())},
            {"post_processor", nullptr},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", m}}}};
  return ds::tok::Tokenizer::from_json(j.dump(), "fuzz-embedded.json");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ds::tok::PreTokenizer pre = ds::tok::PreTokenizer::deepseek_v3();
  static const ds::tok::Tokenizer tok = make_tokenizer();
  const std::string input(reinterpret_cast<const char*>(data), size);

  std::vector<std::string_view> pieces;
  pre.split(input, pieces);
  size_t pos = 0;
  for (std::string_view p : pieces) {
    if (p.empty() || p.data() != input.data() + pos) __builtin_trap();
    pos += p.size();
  }
  if (pos != input.size()) __builtin_trap();

  const bool valid = !ds::tok::first_invalid_utf8(input).has_value();
  for (bool match_added : {true, false}) {
    const auto ids = tok.encode(input, match_added);
    std::string bytes;
    for (auto id : ids) bytes += tok.token_bytes(id);
    // lstrip/rstrip of <t> drops whitespace around it, so only the plain path is exact.
    if (!match_added && bytes != input) __builtin_trap();
    const std::string text = tok.decode(ids);
    if (ds::tok::first_invalid_utf8(text)) __builtin_trap();
    if (valid && !match_added && text != input) __builtin_trap();
  }
  return 0;
}
