// Pre-tokenizer and byte-level helpers: GPT-2 byte alphabet, DeepSeek-V3 splits (digits
// in threes, CJK runs, punctuation/newline pieces, Unicode White_Space for \s), exact
// coverage on random bytes (valid or not), JSON round trip, and the UTF-8 helpers.
// reference: spec §8.3-8.4; Unicode §3.9 (maximal subparts).
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <random>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/utf8.hpp"
#include "../../lib/tokenizer/regex.hpp"

using ds::tok::PreTokenizer;

namespace {

std::vector<std::string> split(const PreTokenizer& p, std::string_view text) {
  std::vector<std::string_view> pieces;
  p.split(text, pieces);
  return {pieces.begin(), pieces.end()};
}

using V = std::vector<std::string>;

}  // namespace

TEST_CASE("byte-level alphabet") {
  CHECK(ds::tok::byte_to_unicode(' ') == "Ġ");
  CHECK(ds::tok::byte_to_unicode('\n') == "Ċ");
  CHECK(ds::tok::byte_to_unicode('!') == "!");
  CHECK(ds::tok::byte_to_unicode(0x00) == "Ā");
  CHECK(ds::tok::byte_to_unicode(0xAD) == "Ń");
  CHECK(ds::tok::byte_to_unicode(0xFF) == "ÿ");
  std::string all;
  for (int b = 0; b < 256; ++b) all += ds::tok::byte_to_unicode(static_cast<unsigned char>(b));
  std::string bytes;
  REQUIRE(ds::tok::unicode_to_bytes(all, bytes));
  REQUIRE(bytes.size() == 256);
  for (int b = 0; b < 256; ++b) CHECK(static_cast<unsigned char>(bytes[size_t(b)]) == b);
  std::string out = "keep";
  CHECK_FALSE(ds::tok::unicode_to_bytes("a\xE2\x82\xAC", out));   // € is outside
  CHECK(out == "keep");
  CHECK_FALSE(ds::tok::unicode_to_bytes("\xFF", out));
}

TEST_CASE("deepseek-v3 pre-tokenizer splits") {
  const PreTokenizer p = PreTokenizer::deepseek_v3();
  CHECK(split(p, "0123456789") == V{"012", "345", "678", "9"});
  CHECK(split(p, "Hello World!") == V{"Hello", " World", "!"});
  CHECK(split(p, "def f(a):\n    return a.b\n") ==
        V{"def", " f", "(a", "):\n", "   ", " return", " a", ".b", "\n"});
  CHECK(split(p, "你好，世界！") == V{"你好", "，", "世界", "！"});
  CHECK(split(p, "I've") == V{"I", "'ve"});
  CHECK(split(p, "x  \n\n y") == V{"x", "  \n\n", " y"});
  // \s is Unicode White_Space (as Oniguruma): U+0085 is, U+180E is not.
  CHECK(split(p, "\xC2\x85\n") == V{"\xC2\x85\n"});
  CHECK(split(p, "\xE1\xA0\x8E\n") == V{"\xE1\xA0\x8E", "\n"});
  CHECK(split(p, "").empty());
}

// Characters assigned after Unicode 14.0 (PCRE2 10.42's tables) split as HF tokenizers
// (Unicode 16.0) splits them; as unassigned code points they would not.
TEST_CASE("deepseek-v3 pre-tokenizer: Unicode 16.0 categories") {
  const PreTokenizer p = PreTokenizer::deepseek_v3();
  CHECK(split(p, " \U0001FAE8") == V{" \U0001FAE8"});   // So (15.0): one punctuation piece
  CHECK(split(p, " \U00031350\U00031351") == V{" \U00031350\U00031351"});   // Lo (CJK ext. H)
  CHECK(split(p, "a\u1C89b") == V{"a\u1C89b"});   // Lu (16.0) inside a word
  CHECK(split(p, "x\u0CF3") == V{"x\u0CF3"});     // Mc (15.0) continues the word
  // Nd (15.0): digits in threes
  CHECK(split(p, "\U0001E4F0\U0001E4F1\U0001E4F2\U0001E4F3") ==
        V{"\U0001E4F0\U0001E4F1\U0001E4F2", "\U0001E4F3"});
  // still unassigned in 16.0: neither letter nor symbol
  CHECK(split(p, " \U0001FAFF") == V{" ", "\U0001FAFF"});
}

TEST_CASE("pattern rewrite: properties widened to Unicode 16.0, the rest kept") {
  using ds::tok::detail::rewrite_escapes;
  using ds::tok::detail::unicode_added_ranges;
  const std::string l = unicode_added_ranges("L");
  REQUIRE(!l.empty());
  CHECK(l.find("\\x{31350}-\\x{323AF}") != std::string::npos);   // CJK ext. H
  CHECK(unicode_added_ranges("Lo").size() < l.size());
  CHECK(unicode_added_ranges("S").find("\\x{1FAE8}") != std::string::npos);
  CHECK(unicode_added_ranges("Greek").empty());
  CHECK(unicode_added_ranges("C").empty());
  for (const char* cased : {"L&", "LC"}) {   // Lu/Ll/Lt: U+1C89 (Lu, new in 16.0), not Lo
    CHECK(unicode_added_ranges(cased).find("\\x{1C89}") != std::string::npos);
    CHECK(unicode_added_ranges(cased).find("\\x{31350}") == std::string::npos);
  }
  CHECK(rewrite_escapes(R"(\p{L}+)") == "[\\p{L}" + l + "]+");
  CHECK(rewrite_escapes(R"(\pL)") == "[\\p{L}" + l + "]");
  CHECK(rewrite_escapes(R"(\P{L})") == "[^\\p{L}" + l + "]");
  CHECK(rewrite_escapes(R"(\p{^L})") == "[^\\p{L}" + l + "]");
  CHECK(rewrite_escapes(R"([^\p{L}x])") == "[^\\p{L}" + l + "x]");
  CHECK(rewrite_escapes(R"([\P{L}x])") == R"([\P{L}x])");   // negated inside a class: kept
  CHECK(rewrite_escapes(R"(\p{Greek}\\p{L})") == R"(\p{Greek}\\p{L})");
  // what the widened classes match, through PCRE2
  const ds::tok::detail::Regex sym(R"(\P{S}+)", false, "t");
  size_t mb = 0, me = 0;
  REQUIRE(sym.find("ab\U0001FAE8", 0, mb, me));
  CHECK(mb == 0);
  CHECK(me == 2);
}

TEST_CASE("pre-tokenizer pieces cover any byte string exactly") {
  const PreTokenizer p = PreTokenizer::deepseek_v3();
  std::mt19937 rng(5);
  const std::string alphabet = "ab 1\n\t.,!\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x8C\x8D\x80\xFF";
  for (int trial = 0; trial < 3000; ++trial) {
    std::string s;
    const size_t len = rng() % 60;
    for (size_t i = 0; i < len; ++i) s.push_back(alphabet[rng() % alphabet.size()]);
    std::vector<std::string_view> pieces;
    p.split(s, pieces);
    size_t pos = 0;
    bool ok = true;
    for (auto v : pieces) {
      ok = ok && !v.empty() && v.data() == s.data() + pos;
      pos += v.size();
    }
    if (!ok || pos != s.size()) FAIL_CHECK("pieces do not cover trial " << trial);
  }
}

TEST_CASE("pre-tokenizer JSON round trip and errors") {
  const PreTokenizer p = PreTokenizer::deepseek_v3();
  const std::string js = p.to_json();
  const PreTokenizer q = PreTokenizer::from_json(js, "t");
  CHECK(q.to_json() == js);
  const auto j = nlohmann::json::parse(js);
  CHECK(j["type"] == "Sequence");
  CHECK(j["pretokenizers"].size() == 4);
  CHECK(j["pretokenizers"][3]["type"] == "ByteLevel");
  CHECK(j["pretokenizers"][3]["use_regex"] == false);
  const std::string lit =
      R"({"type":"Split","pattern":{"String":"."},"behavior":"Isolated","invert":false})";
  const PreTokenizer l = PreTokenizer::from_json(lit, "t");
  CHECK(split(l, "a.b..") == V{"a", ".", "b", ".", "."});
  CHECK(nlohmann::json::parse(l.to_json()) == nlohmann::json::parse(lit));
  // An empty-matching pattern must not loop.
  const PreTokenizer e = PreTokenizer::from_json(
      R"({"type":"Split","pattern":{"Regex":"x*"},"behavior":"Isolated"})", "t");
  CHECK(split(e, "abxxc") == V{"ab", "xx", "c"});
  CHECK_THROWS_AS(PreTokenizer::from_json("{", "t"), ds::FormatError);
  CHECK_THROWS_AS(PreTokenizer::from_json(R"({"type":"Digits"})", "t"), ds::FormatError);
  CHECK(PreTokenizer::from_json("null", "t").to_json() == "null");
}

TEST_CASE("utf8 helpers") {
  using ds::tok::first_invalid_utf8;
  using ds::tok::utf8_repair;
  CHECK(first_invalid_utf8("plain ascii text, long enough for the fast path") == std::nullopt);
  CHECK(first_invalid_utf8("h\xC3\xA9llo \xF0\x9F\x8C\x8D") == std::nullopt);
  CHECK(first_invalid_utf8("abcdefghij\xFFz") == size_t(10));
  CHECK(first_invalid_utf8("\xC0\x80") == size_t(0));          // overlong
  CHECK(first_invalid_utf8("ab\xED\xA0\x80") == size_t(2));    // surrogate
  CHECK(first_invalid_utf8("\xF4\x90\x80\x80") == size_t(0));  // > U+10FFFF
  CHECK(first_invalid_utf8("x\xE4\xB8") == size_t(1));         // truncated
  const std::string r = "\xEF\xBF\xBD";
  CHECK(utf8_repair("\xF0\x9F\x8C" "x") == r + "x");
  CHECK(utf8_repair("\xC0\x80") == r + r);
  CHECK(utf8_repair("\xED\xA0\x80") == r + r + r);
  CHECK(utf8_repair("a\xE4\xB8\xAD") == "a\xE4\xB8\xAD");
}
