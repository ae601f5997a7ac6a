// Tokenizer unit tests on small hand-written tokenizer.json texts: merges in string and
// pair form, merge order against a naive reference BPE (short and long pieces), added
// tokens (longest match, lstrip/rstrip/single_word, special, raw-before-normalized), and
// every rejected component as a FormatError naming the JSON path.
// reference: spec §8.2-8.5; HF tokenizers JSON layout.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <random>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

using nlohmann::json;
using ds::tok::TokenId;
using ds::tok::Tokenizer;

namespace {

// A tokenizer.json whose vocab holds the 256 byte tokens (id = byte value) plus the
// results of `merges` (ids 256.. in merge order); pre-tokenizer: ByteLevel only.
json make_json(const std::vector<std::pair<std::string, std::string>>& merges,
               bool pair_form = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ds::tok::byte_to_unicode(static_cast<unsigned char>(b))] = b;
  json m = json::array();
  int next = 256;
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
    if (pair_form) m.push_back(json::array({a, b}));
    else m.push_back(a + " " + b);
  }
  return json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer",
               {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
              {"post_processor", {{"type", "ByteLevel"}, {"trim_offsets", false}}},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model",
               {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
                {"merges", m}}}};
}

Tokenizer load(const json& j) { return Tokenizer::from_json(j.dump(), "unit.json"); }

std::vector<std::string> tokens_of(const Tokenizer& t, const std::vector<TokenId>& ids) {
  std::vector<std::string> out;
  for (TokenId id : ids) out.push_back(t.id_to_token(id));
  return out;
}

// Naive BPE: repeatedly merge the leftmost adjacent pair of lowest rank.
std::vector<std::string> naive_bpe(const std::string& text,
                                   const std::vector<std::pair<std::string, std::string>>& merges) {
  std::vector<std::string> sym;
  for (char c : text) sym.push_back(std::string(1, c));
  while (true) {
    size_t best_rank = merges.size(), best_pos = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i)
      for (size_t r = 0; r < best_rank; ++r)
        if (merges[r].first == sym[i] && merges[r].second == sym[i + 1]) {
          best_rank = r;
          best_pos = i;
          break;
        }
    if (best_rank == merges.size()) return sym;
    sym[best_pos] += sym[best_pos + 1];
    sym.erase(sym.begin() + long(best_pos) + 1);
  }
}

// Expects a FormatError whose message names `what` and the source, on one line.
void expect_format_error(const json& j, const std::string& what) {
  CAPTURE(what);
  try {
    load(j);
    FAIL("no FormatError for: " << what);
  } catch (const ds::FormatError& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(msg.find(what) != std::string::npos);
    CHECK(msg.find("unit.json") != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
}

}  // namespace

TEST_CASE("bpe: string and pair merge forms give the same result") {
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"a", "b"}, {"ab", "c"}, {"Ġ", "ab"}};
  for (bool pair_form : {false, true}) {
    const Tokenizer t = load(make_json(merges, pair_form));
    CHECK(tokens_of(t, t.encode("abc")) == std::vector<std::string>{"abc"});
    CHECK(tokens_of(t, t.encode("abx")) == std::vector<std::string>{"ab", "x"});
    CHECK(tokens_of(t, t.encode(" ab")) == std::vector<std::string>{"Ġab"});
    CHECK(t.decode(t.encode(" abcab x")) == " abcab x");
    CHECK(t.vocab_size() == 259);
  }
}

TEST_CASE("bpe: merge rank order and leftmost tie breaking") {
  {
    const Tokenizer t = load(make_json({{"b", "c"}, {"a", "b"}}));
    CHECK(tokens_of(t, t.encode("abc")) == std::vector<std::string>{"a", "bc"});
  }
  {
    const Tokenizer t = load(make_json({{"a", "b"}, {"b", "c"}}));
    CHECK(tokens_of(t, t.encode("abc")) == std::vector<std::string>{"ab", "c"});
  }
  {
    const Tokenizer t = load(make_json({{"a", "a"}}));
    CHECK(tokens_of(t, t.encode("aaa")) == std::vector<std::string>{"aa", "a"});
  }
}

TEST_CASE("bpe: short, cached and long pieces agree with a naive reference") {
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"a", "b"}, {"b", "a"}, {"a", "a"}, {"ab", "a"}, {"aa", "aa"}, {"c", "ab"},
      {"ba", "c"}, {"aaaa", "b"}, {"b", "b"}, {"cab", "ab"}, {"bb", "bb"}, {"a", "c"}};
  const Tokenizer t = load(make_json(merges));
  std::mt19937 rng(99);
  for (int trial = 0; trial < 600; ++trial) {
    const size_t len = trial < 300 ? 1 + rng() % 40 : 60 + rng() % 400;   // both paths
    std::string s;
    for (size_t i = 0; i < len; ++i) s.push_back("abc"[rng() % 3]);
    const auto want = naive_bpe(s, merges);
    CAPTURE(s);
    CHECK(tokens_of(t, t.encode(s)) == want);
    CHECK(tokens_of(t, t.encode(s)) == want);   // second time from the cache
  }
}

TEST_CASE("bpe: ignore_merges uses a whole-piece vocab hit") {
  json j = make_json({{"a", "b"}, {"b", "c"}, {"a", "bc"}});
  const Tokenizer plain = load(j);
  CHECK(tokens_of(plain, plain.encode("abc")) == std::vector<std::string>{"ab", "c"});
  j["model"]["ignore_merges"] = true;
  const Tokenizer direct = load(j);
  CHECK(tokens_of(direct, direct.encode("abc")) == std::vector<std::string>{"abc"});
}

TEST_CASE("added tokens: longest match, flags, special, phases") {
  json j = make_json({{"a", "b"}});
  auto add = [&](int id, const std::string& content, json flags) {
    json t = {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
              {"rstrip", false}, {"normalized", false}, {"special", false}};
    if (flags.is_object()) t.update(flags);
    j["added_tokens"].push_back(t);
  };
  add(300, "<a", {});
  add(301, "<ab>", {{"special", true}});
  add(302, "<l>", {{"lstrip", true}});
  add(303, "<r>", {{"rstrip", true}});
  add(304, "tok", {{"single_word", true}});
  add(305, "xyzw", {{"normalized", true}});
  add(306, "yz", {});
  const Tokenizer t = load(j);
  CHECK(t.vocab_size() == 307);
  CHECK(t.encode("<ab>") == std::vector<TokenId>{301});
  CHECK(t.encode("<ax") == std::vector<TokenId>{300, 'x'});
  CHECK(t.encode("q  <l>z") == std::vector<TokenId>{'q', 302, 'z'});
  CHECK(t.encode("q<r> \t z") == std::vector<TokenId>{'q', 303, 'z'});
  CHECK(t.encode("a tok b") == std::vector<TokenId>{'a', ' ', 304, ' ', 'b'});
  CHECK(t.encode("atok") == std::vector<TokenId>{'a', 't', 'o', 'k'});
  CHECK(t.encode("tok_") == std::vector<TokenId>{'t', 'o', 'k', '_'});
  CHECK(t.encode("\xC3\xA9tok") == std::vector<TokenId>{0xC3, 0xA9, 't', 'o', 'k'});   // é
  // Raw (normalized=false) tokens are extracted before normalized ones.
  CHECK(t.encode("xyzw") == std::vector<TokenId>{'x', 306, 'w'});
  CHECK(t.encode("<ab>", false) == std::vector<TokenId>{'<', 256, '>'});
  CHECK(t.decode(std::vector<TokenId>{'q', 301, 302}, true) == "q<l>");
  CHECK(t.decode(std::vector<TokenId>{'q', 301, 302}) == "q<ab><l>");
  CHECK(t.token_to_id("<ab>") == TokenId(301));
  CHECK(t.added_tokens().size() == 7);
  CHECK(t.added_tokens()[1].special);
}

// single_word tests the neighbours with the Rust regex crate's \w (Alphabetic, marks, Nd,
// Pc, the joiners), rstrip's whitespace can hold the next added token's start: as HF.
TEST_CASE("added tokens: HF's word characters and rstrip overlaps") {
  json j = make_json({});
  auto add = [&](int id, const std::string& content, json flags) {
    json t = {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
              {"rstrip", false}, {"normalized", false}, {"special", false}};
    if (flags.is_object()) t.update(flags);
    j["added_tokens"].push_back(t);
  };
  add(256, "tok", {{"single_word", true}});
  add(257, "<s>", {{"rstrip", true}});
  add(258, " sp", {});
  const Tokenizer t = load(j);
  using V = std::vector<TokenId>;
  CHECK(t.encode("\xCC\x81tok") == V{0xCC, 0x81, 't', 'o', 'k'});            // U+0301, Mn
  CHECK(t.encode("\xE2\x80\x8Dtok") == V{0xE2, 0x80, 0x8D, 't', 'o', 'k'});   // U+200D
  CHECK(t.encode("\xE2\x80\xBFtok") == V{0xE2, 0x80, 0xBF, 't', 'o', 'k'});   // U+203F, Pc
  CHECK(t.encode("\xE1\xB2\x89tok") == V{0xE1, 0xB2, 0x89, 't', 'o', 'k'});   // U+1C89 (16.0)
  CHECK(t.encode("\xC2\xB2tok") == V{0xC2, 0xB2, 256});                       // ², No
  CHECK(t.encode("tok\xC2\xBD") == V{256, 0xC2, 0xBD});                       // ½, No
  CHECK(t.encode("<s> sp") == V{257, 258});
  CHECK(t.encode("<s>  sp") == V{257, 258});
  CHECK(t.encode("<s> x") == V{257, 'x'});
}

TEST_CASE("decode: invalid UTF-8 from arbitrary ids becomes U+FFFD; bytes stay raw") {
  const Tokenizer t = load(make_json({}));
  CHECK(t.decode(std::vector<TokenId>{0xE4, 'x'}) == "\xEF\xBF\xBDx");
  CHECK(t.decode(std::vector<TokenId>{0xE4, 0xB8, 0xAD}) == "\xE4\xB8\xAD");
  CHECK(t.token_bytes(0xE4) == "\xE4");
  CHECK_THROWS_AS(t.decode(std::vector<TokenId>{256}), ds::FormatError);
}

TEST_CASE("fingerprint is xxh64 of the bytes") {
  const std::string a = make_json({{"a", "b"}}).dump();
  const std::string b = make_json({{"a", "b"}}).dump(1);
  const Tokenizer ta = Tokenizer::from_json(a, "a"), tb = Tokenizer::from_json(b, "b");
  CHECK(ta.fingerprint().size() == 16);
  CHECK(ta.fingerprint() != tb.fingerprint());
  CHECK(ta.fingerprint() == Tokenizer::from_json(a, "a2").fingerprint());
  CHECK(ta.source_name() == "a");
}

TEST_CASE("loader: every unsupported or malformed component is a FormatError") {
  const json base = make_json({{"a", "b"}});
  auto with = [&](const std::string& ptr, json v) {
    json j = base;
    j[json::json_pointer(ptr)] = std::move(v);
    return j;
  };
  auto without = [&](const std::string& key) {
    json j = base;
    j.erase(key);
    return j;
  };
  CHECK_THROWS_AS(Tokenizer::from_json("{\"model\": ", "unit.json"), ds::FormatError);
  expect_format_error(json::array(), "expected a JSON object");
  expect_format_error(without("model"), "model: missing");
  expect_format_error(with("/model/type", "WordPiece"), "model: unsupported type 'WordPiece'");
  expect_format_error(with("/model/merges", json::array({"a q"})),
                      "model.merges[0]: unknown token");
  expect_format_error(with("/model/merges", json::array({"x y"})),
                      "model.merges[0]: unknown token \"xy\"");
  expect_format_error(with("/model/merges", json::array({"ab"})), "model.merges[0]");
  expect_format_error(with("/model/merges", json::array({42})), "model.merges[0]");
  expect_format_error(with("/model/vocab/ab", 3), "model.vocab: id 3 used by both");
  expect_format_error(with("/model/vocab/ab", -1), "model.vocab[\"ab\"]");
  expect_format_error(with("/model/vocab/ab", "x"), "model.vocab[\"ab\"]");
  {
    json j = base;
    j["model"]["vocab"].erase("A");   // byte 0x41's token
    expect_format_error(j, "model.vocab: no token for byte 0x41 (\"A\")");
  }
  expect_format_error(with("/model/byte_fallback", true), "model.byte_fallback");
  expect_format_error(with("/model/dropout", 0.1), "model.dropout");
  expect_format_error(with("/model/unk_token", "<unk>"), "model.unk_token");
  expect_format_error(with("/model/continuing_subword_prefix", "##"),
                      "model.continuing_subword_prefix");
  expect_format_error(with("/model/end_of_word_suffix", "</w>"), "model.end_of_word_suffix");
  expect_format_error(with("/normalizer", {{"type", "NFC"}}), "normalizer: unsupported type 'NFC'");
  expect_format_error(
      with("/normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}}}}),
      "normalizer.normalizers[0]: unsupported type 'NFKC'");
  expect_format_error(with("/pre_tokenizer", {{"type", "Whitespace"}}),
                      "pre_tokenizer: unsupported type 'Whitespace'");
  expect_format_error(
      with("/pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Removed"}}}}}),
      "pre_tokenizer.pretokenizers[0].behavior");
  expect_format_error(with("/pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}},
                                              {"behavior", "Isolated"}}),
                      "pre_tokenizer.pattern: invalid regex");
  expect_format_error(with("/pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "a"}}},
                                              {"behavior", "Isolated"}, {"invert", true}}),
                      "pre_tokenizer.invert");
  expect_format_error(with("/pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", true}}),
                      "pre_tokenizer.add_prefix_space");
  expect_format_error(with("/pre_tokenizer", nullptr), "pre_tokenizer: must end with");
  expect_format_error(with("/pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "a"}}},
                                              {"behavior", "Isolated"}}),
                      "pre_tokenizer: must end with");
  expect_format_error(
      with("/pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers",
           {{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}},
            {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Isolated"}}}}}),
      "pre_tokenizer: must end with");
  expect_format_error(without("decoder"), "decoder: missing");
  expect_format_error(with("/decoder", {{"type", "WordPiece"}}),
                      "decoder: unsupported type 'WordPiece'");
  expect_format_error(with("/post_processor", {{"type", "TemplateProcessing"}}),
                      "post_processor: unsupported type 'TemplateProcessing'");
  expect_format_error(with("/truncation", {{"max_length", 5}}), "truncation");
  expect_format_error(with("/added_tokens", {{{"id", 1}, {"content", ""}}}),
                      "added_tokens[0].content");
  expect_format_error(with("/added_tokens", {{{"id", "x"}, {"content", "<x>"}}}),
                      "added_tokens[0].id");
  expect_format_error(with("/added_tokens", {{{"id", 300}, {"content", "<x>"}},
                                             {{"id", 300}, {"content", "<y>"}}}),
                      "added_tokens[1].id: duplicate");
  expect_format_error(with("/added_tokens", {{{"id", 300}, {"content", "<x>"}},
                                             {{"id", 301}, {"content", "<x>"}}}),
                      "added_tokens[1].content: duplicate");
  expect_format_error(with("/added_tokens", {{{"id", 300}, {"content", "<x>"}, {"lstrip", 1}}}),
                      "added_tokens[0].lstrip");
  // an added token disagreeing with the vocabulary (its text under another id, its id another
  // token's): Hugging Face warns and encodes the vocabulary's id
  expect_format_error(with("/added_tokens", {{{"id", 300}, {"content", "ab"}}}),
                      "added_tokens[0]: \"ab\" has id 256 in model.vocab, not 300");
  expect_format_error(with("/added_tokens", {{{"id", 256}, {"content", "<x>"}}}),
                      "added_tokens[0].id: 256 is model.vocab's \"ab\", not \"<x>\"");
}

TEST_CASE("loader: accepted variants") {
  json j = make_json({{"a", "b"}});
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array()}};
  j["post_processor"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  const Tokenizer t = load(j);
  // GPT-2 regex split: "ab" and " ab" are separate pieces, "'s" splits off.
  std::vector<std::string_view> pieces;
  t.pre_tokenizer().split("ab's x", pieces);
  CHECK(pieces == std::vector<std::string_view>{"ab", "'s", " x"});
  CHECK(tokens_of(t, t.encode("ab's")) == std::vector<std::string>{"ab", "'", "s"});
  CHECK(t.decode(t.encode("it's ab  ab\n")) == "it's ab  ab\n");
  CHECK_THROWS_AS(Tokenizer::from_file("/nonexistent/tokenizer.json"), ds::IoError);
}
