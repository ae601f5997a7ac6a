// Conformance of the tokenizer with the real DeepSeek-V3 tokenizer.json: the 269 golden
// encodings (HF tokenizers output), the 12 vectors of spec §8.7, decode(encode(x)) == x on
// random valid UTF-8 and on the shared corpora. Skipped (MESSAGE) without the shared data.
// reference: spec §8.7; shared/data/deepseek_v3_tokenizer/golden-encodings.jsonl.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "ds/tokenizer/utf8.hpp"

namespace fs = std::filesystem;
using ds::tok::TokenId;
using ds::tok::Tokenizer;

namespace {

fs::path data_dir() { return fs::path(DS_SHARED_DATA); }
fs::path ds_json() { return data_dir() / "deepseek_v3_tokenizer" / "tokenizer.json"; }

// The DeepSeek-V3 tokenizer, loaded once; nullptr when the shared data is absent.
const Tokenizer* deepseek() {
  static const std::unique_ptr<Tokenizer> tok = []() -> std::unique_ptr<Tokenizer> {
    if (!fs::exists(ds_json())) return nullptr;
    return std::make_unique<Tokenizer>(Tokenizer::from_file(ds_json()));
  }();
  return tok.get();
}

#define REQUIRE_DEEPSEEK()                                                   \
  const Tokenizer* tok = deepseek();                                         \
  if (!tok) {                                                                \
    MESSAGE("skipped: no shared data at " << ds_json().string());            \
    return;                                                                  \
  }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Random valid UTF-8 mixing ASCII, Latin-1, CJK, emoji, combining marks, whitespace
// (including U+0085 and U+3000) and control characters.
std::string random_text(std::mt19937& rng, size_t n_chars) {
  static const char32_t kPool[] = {
      U'a', U'Z', U'q', U'0', U'7', U' ', U' ', U'\t', U'\n', U'\r', U'.', U',', U'!', U'(',
      U'\'', U'"', U'-', U'_', U'é', U'ß', U'ñ', U'\u0301', U'\u00A0', U'\u0085', U'\u3000',
      U'中', U'文', U'の', U'カ', U'한', U'\U0001F30D', U'\U0001F600', U'\x01', U'\x7F',
      U'\u2028', U'\u200B', U'١', U'Ж', U'ה', U'\U00010348', U'<', U'|', U'\uFF5C'};
  std::string s;
  std::uniform_int_distribution<size_t> pick(0, std::size(kPool) - 1);
  for (size_t i = 0; i < n_chars; ++i) ds::tok::utf8_append(s, kPool[pick(rng)]);
  return s;
}

}  // namespace

TEST_CASE("deepseek-v3: golden encodings from HF tokenizers") {
  REQUIRE_DEEPSEEK();
  std::ifstream f(data_dir() / "deepseek_v3_tokenizer" / "golden-encodings.jsonl");
  std::string line;
  size_t n = 0, ok = 0;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    const std::string text = j["text"];
    const auto want = j["ids"].get<std::vector<TokenId>>();
    const auto got = tok->encode(text);
    ++n;
    if (got == want) ++ok;
    else FAIL_CHECK("golden line " << n << " differs: " << text.substr(0, 60));
    CHECK(tok->decode(got) == text);
  }
  CHECK(n == 269);
  CHECK(ok == n);
}

TEST_CASE("deepseek-v3: spec 8.7 vectors") {
  REQUIRE_DEEPSEEK();
  const std::vector<std::pair<std::string, std::vector<TokenId>>> cases = {
      {"hello world", {33310, 2058}},
      {"Hello World!", {19923, 4495, 3}},
      {" hello world ", {44388, 2058, 223}},
      {"0123456789", {16993, 18014, 27183, 27}},
      {"\tindented\twith\ttabs", {200, 655, 19686, 200, 6135, 17299, 10284}},
      {"def add(a, b):\n    return a + b\n",
       {3465, 1258, 6036, 14, 291, 3395, 361, 1354, 260, 940, 291, 201}},
      {"你好，世界！", {30594, 303, 3427, 1175}},
      {"日本語のテキストです。", {88768, 1576, 17383, 20367, 24552, 8262, 320}},
      {"   leading whitespace", {262, 6646, 37899, 5790}},
      {"I've got it, don't worry.", {43, 5270, 3557, 436, 14, 2090, 1664, 14129, 16}},
      {"Hello 🌍 World!", {19923, 73369, 238, 4495, 3}},
      {"안녕하세요 세계", {31404, 11939, 246, 4567, 73527, 76878}},
  };
  for (const auto& [text, ids] : cases) {
    CAPTURE(text);
    CHECK(tok->encode(text) == ids);
    CHECK(tok->decode(ids) == text);
  }
}

TEST_CASE("deepseek-v3: special tokens, ids and metadata") {
  REQUIRE_DEEPSEEK();
  CHECK(tok->vocab_size() == 128815);
  CHECK(tok->added_tokens().size() == 818);
  CHECK(tok->bos_id() == TokenId(0));
  CHECK(tok->eos_id() == TokenId(1));
  CHECK(tok->token_to_id(ds::tok::special::kUser) == TokenId(128803));
  CHECK(tok->token_to_id(ds::tok::special::kAssistant) == TokenId(128804));
  CHECK(tok->token_to_id("Ġ") == TokenId(223));
  CHECK(tok->id_to_token(201) == "Ċ");
  CHECK(tok->token_bytes(223) == " ");
  CHECK(tok->fingerprint().size() == 16);
  const std::string text = std::string(ds::tok::special::kBos) + "Hi" +
                           std::string(ds::tok::special::kUser) + "x<|EOT|>";
  const auto ids = tok->encode(text);
  REQUIRE(ids.size() >= 4);
  CHECK(ids.front() == 0);
  CHECK(ids[2] == 128803);
  CHECK(ids.back() == 128805);
  CHECK(tok->decode(ids) == text);
  // skip_special drops BOS and <|EOT|> (special) but keeps <｜User｜> (not special).
  CHECK(tok->decode(ids, true) == "Hi" + std::string(ds::tok::special::kUser) + "x");
  // Without added-token matching the markers are ordinary text.
  const auto plain = tok->encode(text, false);
  CHECK(std::find(plain.begin(), plain.end(), TokenId(0)) == plain.end());
  CHECK(tok->decode(plain) == text);
  CHECK_THROWS_AS(tok->decode(std::vector<TokenId>{200000}), ds::FormatError);
  CHECK_THROWS_AS(tok->token_bytes(128900), ds::FormatError);
}

TEST_CASE("deepseek-v3: pre-tokenizer matches the file's pre_tokenizer") {
  REQUIRE_DEEPSEEK();
  const auto file = nlohmann::json::parse(slurp(ds_json()));
  CHECK(nlohmann::json::parse(ds::tok::PreTokenizer::deepseek_v3().to_json()) ==
        file["pre_tokenizer"]);
  CHECK(nlohmann::json::parse(tok->pre_tokenizer().to_json()) == file["pre_tokenizer"]);
}

TEST_CASE("deepseek-v3: round trip on random valid UTF-8") {
  REQUIRE_DEEPSEEK();
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 2000; ++trial) {
    const std::string text = random_text(rng, 1 + rng() % 80);
    const auto ids = tok->encode(text);
    if (tok->decode(ids) != text) FAIL_CHECK("round trip failed for trial " << trial);
    const auto ids2 = tok->encode(text, false);
    if (tok->decode(ids2) != text) FAIL_CHECK("round trip (no added) failed " << trial);
  }
}

TEST_CASE("deepseek-v3: round trip and determinism on the shared corpora") {
  REQUIRE_DEEPSEEK();
  for (const char* rel : {"tinyshakespeare/input.txt", "gutenberg/11-0.txt",
                          "gutenberg/84-0.txt", "gsm8k/train.jsonl"}) {
    const fs::path p = data_dir() / rel;
    if (!fs::exists(p)) continue;
    const std::string text = slurp(p);
    CAPTURE(rel);
    const auto ids = tok->encode(text);
    CHECK(ids.size() * 2 < text.size());   // a real BPE compresses English text > 2x
    CHECK(tok->decode(ids) == text);
    // A second encode (now served from the per-thread piece cache) is identical.
    CHECK(tok->encode(text) == ids);
  }
}

TEST_CASE("deepseek-v3: invalid UTF-8 input never crashes and keeps the bytes") {
  REQUIRE_DEEPSEEK();
  const std::string bad =
      std::string("ab\xC3", 3) + "\xFF" + " x\xE2\x82" + "\xF0\x9F\x8C" + "\x80";
  const auto ids = tok->encode(bad);
  std::string bytes;
  for (TokenId id : ids) bytes += tok->token_bytes(id);
  CHECK(bytes == bad);
  CHECK(ds::tok::first_invalid_utf8(tok->decode(ids)) == std::nullopt);
}
