// BpeTrainer: hand-computed merges and tie-breaks, agreement with a naive reference BPE
// (recount every pair each step) on synthetic corpora, vocab_size / min_frequency limits,
// identical output for 1/2/4 threads, safe chunking, token layout (specials, bytes,
// merges, added tokens), and loading the result with Tokenizer (round trip, encodings).
// reference: spec §8.4-8.6; lib/tokenizer/bpe_trainer_internal.hpp for the rules.
#include <doctest/doctest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../../lib/tokenizer/bpe_trainer_internal.hpp"
#include "ds/core/error.hpp"
#include "ds/tokenizer/bpe_trainer.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

using ds::tok::BpeTrainer;
using ds::tok::BpeTrainerOptions;
using nlohmann::json;

namespace {

std::string train(const std::vector<std::string>& docs, size_t vocab, uint64_t min_freq,
                  int threads = 1, std::vector<std::string> specials = {}) {
  BpeTrainerOptions o;
  o.vocab_size = vocab;
  o.min_frequency = min_freq;
  o.threads = threads;
  o.special_tokens = std::move(specials);
  BpeTrainer t(o);
  for (const auto& d : docs) t.add_text(d);
  return t.train();
}

std::vector<std::string> merges_of(const std::string& tokenizer_json) {
  return json::parse(tokenizer_json)["model"]["merges"].get<std::vector<std::string>>();
}

std::string mapped(std::string_view bytes) {
  std::string s;
  for (unsigned char c : bytes) s += ds::tok::byte_to_unicode(c);
  return s;
}

// Deterministic synthetic text: syllable words, spaces, punctuation, digits, newlines,
// tabs, accented letters and CJK, so the pre-tokenizer's branches all occur.
std::string synthetic(size_t bytes, uint32_t seed) {
  static const char* syl[] = {"ka", "ro", "mi", "te", "su", "an", "the", "ing", "er", "qu",
                              "\xC3\xA9t\xC3\xA9", "\xE6\x97\xA5\xE6\x9C\xAC", "zz"};
  static const char* sep[] = {" ", " ", " ", ", ", ". ", "\n", "\n\n", "  ", "\t", "!\n",
                              " (", ") ", "\r\n", "  \n", " 12", "3456 ", "'s "};
  std::mt19937 rng(seed);
  std::string s;
  while (s.size() < bytes) {
    int n = 1 + int(rng() % 3);
    for (int i = 0; i < n; ++i) s += syl[rng() % (sizeof(syl) / sizeof(*syl))];
    s += sep[rng() % (sizeof(sep) / sizeof(*sep))];
  }
  return s;
}

// Naive reference: count all pairs every step, same tie-break and duplicate rule.
std::vector<std::string> naive_merges(const std::vector<std::string>& docs, size_t n_merges,
                                      uint64_t min_freq) {
  auto pre = ds::tok::PreTokenizer::deepseek_v3();
  std::map<std::string, uint64_t> counts;
  std::vector<std::string_view> pieces;
  for (const auto& d : docs) {
    pieces.clear();
    pre.split(d, pieces);
    for (auto p : pieces) ++counts[std::string(p)];
  }
  std::vector<std::pair<std::vector<std::string>, uint64_t>> words;
  std::set<std::string> known;
  for (int b = 0; b < 256; ++b) known.insert(ds::tok::byte_to_unicode((unsigned char)b));
  for (const auto& [w, c] : counts) {
    std::vector<std::string> syms;
    for (unsigned char ch : w) syms.push_back(ds::tok::byte_to_unicode(ch));
    words.push_back({syms, c});
  }
  std::set<std::pair<std::string, std::string>> banned;
  std::vector<std::string> out;
  while (out.size() < n_merges) {
    std::map<std::pair<std::string, std::string>, uint64_t> pc;
    for (const auto& [s, c] : words)
      for (size_t i = 0; i + 1 < s.size(); ++i) pc[{s[i], s[i + 1]}] += c;
    const std::pair<std::string, std::string>* best = nullptr;
    uint64_t best_c = 0;
    for (const auto& [p, c] : pc)   // map order = string order: first max wins ties
      if (!banned.count(p) && c > best_c) { best = &p; best_c = c; }
    if (!best || best_c < std::max<uint64_t>(min_freq, 1)) break;
    auto [a, b] = *best;
    if (!known.insert(a + b).second) { banned.insert({a, b}); continue; }
    out.push_back(a + " " + b);
    for (auto& [s, c] : words) {
      std::vector<std::string> t;
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) { t.push_back(a + b); i += 2; }
        else t.push_back(s[i++]);
      }
      s = std::move(t);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("bpe trainer: hand-computed merges and min_frequency") {
  // Words: "ab" x1, " ab" x2, " abc" x1 -> (a,b)=4, (Ġ,a)=3, (b,c)=1; then (Ġ,ab)=3;
  // then (Ġab,c)=1, merged only when min_frequency <= 1.
  std::vector<std::string> docs = {"ab ab ab abc"};
  CHECK(merges_of(train(docs, 1000, 2)) == std::vector<std::string>{"a b", "\xC4\xA0 ab"});
  CHECK(merges_of(train(docs, 1000, 1)) ==
        std::vector<std::string>{"a b", "\xC4\xA0 ab", "\xC4\xA0" "ab c"});
  CHECK(merges_of(train(docs, 1000, 0)) == merges_of(train(docs, 1000, 1)));
  CHECK(merges_of(train(docs, 1000, 4)) == std::vector<std::string>{"a b"});
  CHECK(merges_of(train(docs, 1000, 5)).empty());
}

TEST_CASE("bpe trainer: ties go to the smallest (left, right) token strings") {
  // "xy" x1, " xy" x1, " zw" x2: (x,y)=2, (z,w)=2, (Ġ,z)=2 tie; 'x' < 'z' < 'Ġ' (0xC4..).
  // After x y: (z,w)=2 beats (Ġ,z)=2; then (Ġ,zw)=2; (Ġ,xy)=1 is below min_frequency 2.
  std::vector<std::string> docs = {"xy xy zw zw"};
  CHECK(merges_of(train(docs, 1000, 2)) ==
        std::vector<std::string>{"x y", "z w", "\xC4\xA0 zw"});
}

TEST_CASE("bpe trainer: same merges as a naive reference BPE") {
  for (uint32_t seed : {1u, 2u}) {
    std::vector<std::string> docs = {synthetic(150000, seed), synthetic(3000, seed + 10),
                                     "x", "", synthetic(20000, seed + 20)};
    for (uint64_t minf : {2u, 40u}) {
      auto ours = merges_of(train(docs, 3 + 256 + 400 + 5, minf, 2));
      auto ref = naive_merges(docs, 400, minf);
      REQUIRE(ours.size() == ref.size());
      CHECK(ours == ref);
      if (minf == 40) CHECK(ours.size() < 400);   // stopped by min_frequency
      else CHECK(ours.size() == 400);             // stopped by vocab_size
    }
  }
}

TEST_CASE("bpe trainer: output does not depend on the thread count") {
  std::vector<std::string> docs;
  for (uint32_t i = 0; i < 40; ++i) docs.push_back(synthetic(2000 + 500 * i, 100 + i));
  docs.push_back(synthetic(1200000, 7));   // counted in place, in chunks
  std::string one = train(docs, 2000, 2, 1);
  CHECK(train(docs, 2000, 2, 2) == one);
  CHECK(train(docs, 2000, 2, 4) == one);
  CHECK(merges_of(one).size() == 2000 - 3 - 256 - 5);
}

TEST_CASE("bpe trainer: chunks cut where pre-tokenization is unchanged") {
  auto pre = ds::tok::PreTokenizer::deepseek_v3();
  std::string text = synthetic(60000, 3);
  std::vector<std::string_view> whole, parts;
  pre.split(text, whole);
  auto chunks = ds::tok::detail::split_safe_chunks(text, 7);
  CHECK(chunks.size() > 100);
  size_t covered = 0;
  for (auto c : chunks) {
    CHECK(c.data() == text.data() + covered);
    covered += c.size();
    pre.split(c, parts);
  }
  CHECK(covered == text.size());
  REQUIRE(parts.size() == whole.size());
  for (size_t i = 0; i < whole.size(); ++i) CHECK(parts[i] == whole[i]);
  CHECK(ds::tok::detail::split_safe_chunks("no newline here", 3).size() == 1);
  CHECK(ds::tok::detail::split_safe_chunks("", 3).size() == 1);
}

TEST_CASE("bpe trainer: vocabulary layout and size") {
  std::vector<std::string> docs = {synthetic(50000, 9)};
  const size_t vocab = 300;
  json j = json::parse(train(docs, vocab, 2));
  const auto& v = j["model"]["vocab"];
  CHECK(v.size() == vocab - 5);
  CHECK(j["model"]["merges"].size() == vocab - 3 - 256 - 5);
  CHECK(v[std::string(ds::tok::special::kBos)] == 0);
  CHECK(v[std::string(ds::tok::special::kEos)] == 1);
  CHECK(v[std::string(ds::tok::special::kPad)] == 2);
  CHECK(v["!"] == 3);
  CHECK(v["\xC4\xA0"] == 223);   // space, as in DeepSeek-V3
  CHECK(v["\xC4\x8A"] == 201);   // newline
  auto merges = j["model"]["merges"].get<std::vector<std::string>>();
  for (size_t r = 0; r < merges.size(); ++r) {   // id = 259 + rank
    auto sp = merges[r].find(' ');
    CHECK(v[merges[r].substr(0, sp) + merges[r].substr(sp + 1)] == 259 + r);
  }
  const auto& added = j["added_tokens"];
  REQUIRE(added.size() == 8);
  std::vector<std::string_view> back = {ds::tok::special::kFimHole, ds::tok::special::kFimBegin,
                                        ds::tok::special::kFimEnd, ds::tok::special::kUser,
                                        ds::tok::special::kAssistant};
  for (size_t i = 0; i < 3; ++i) CHECK(added[i]["special"] == true);
  for (size_t i = 0; i < 5; ++i) {
    CHECK(added[3 + i]["content"] == std::string(back[i]));
    CHECK(added[3 + i]["id"] == vocab - 5 + i);
    CHECK(added[3 + i]["special"] == false);
  }
  CHECK(j["version"] == "1.0");
  CHECK(j["decoder"]["type"] == "ByteLevel");
  CHECK(j["pre_tokenizer"] == json::parse(ds::tok::PreTokenizer::deepseek_v3().to_json()));
}

TEST_CASE("bpe trainer: custom special tokens go first") {
  std::vector<std::string> docs = {"ab ab ab abc"};
  json j = json::parse(train(docs, 1000, 2, 1, {"<s>", "</s>"}));
  CHECK(j["model"]["vocab"]["<s>"] == 0);
  CHECK(j["model"]["vocab"]["</s>"] == 1);
  CHECK(j["model"]["vocab"]["!"] == 2);
  CHECK(j["model"]["vocab"]["ab"] == 258);
  CHECK(j["added_tokens"].size() == 2);
  CHECK_THROWS_AS(train(docs, 1000, 2, 1, {"<s>", "<s>"}), ds::UsageError);
}

TEST_CASE("bpe trainer: vocab_size below the fixed tokens is a usage error") {
  BpeTrainerOptions o;
  o.vocab_size = 263;   // 3 + 256 + 5 = 264 needed
  try {
    BpeTrainer t(o);
    FAIL("no error");
  } catch (const ds::UsageError& e) {
    CHECK(std::string(e.what()).find("--vocab-size") != std::string::npos);
  }
  o.vocab_size = 264;   // exactly the fixed tokens: no merges
  BpeTrainer t(o);
  t.add_text("aaaa aaaa");
  CHECK(json::parse(t.train())["model"]["merges"].empty());
}

TEST_CASE("bpe trainer: added-token strings in the text are never merged") {
  std::string u(ds::tok::special::kUser), a(ds::tok::special::kAssistant);
  std::string doc;
  for (int i = 0; i < 200; ++i) doc += u + "hello there" + a + "general kenobi\n";
  json j = json::parse(train({doc}, 2000, 2));
  // Without the cut, "<" + the bar's bytes would be among the first merges.
  for (auto& m : j["model"]["merges"]) {
    std::string s = m;
    CHECK(s.find(mapped("\xBD")) == std::string::npos);
    CHECK(s.find('<') == std::string::npos);
  }
  CHECK(j["model"]["merges"].size() > 10);
}

TEST_CASE("bpe trainer: result loads in Tokenizer, encodes and round-trips") {
  auto tok = ds::tok::Tokenizer::from_json(train({"ab ab ab abc"}, 1000, 1), "trained");
  CHECK(tok.encode(" abc") == std::vector<ds::tok::TokenId>{261});
  CHECK(tok.encode("ab ab") == std::vector<ds::tok::TokenId>{259, 260});
  CHECK(tok.bos_id() == 0u);
  CHECK(tok.eos_id() == 1u);
  CHECK(tok.vocab_size() == 3 + 256 + 3 + 5);
  CHECK(tok.token_to_id(ds::tok::special::kAssistant) == 3 + 256 + 3 + 4u);

  std::vector<std::string> docs = {synthetic(80000, 5)};
  auto big = ds::tok::Tokenizer::from_json(train(docs, 1000, 2, 2), "trained");
  CHECK(big.vocab_size() == 1000);
  std::string held = synthetic(5000, 77) + " caf\xC3\xA9 \xF0\x9F\x8C\x8D\n\n\t x=1234567; " +
                     std::string(ds::tok::special::kUser) + "hi";
  auto ids = big.encode(held);
  CHECK(ids.size() < held.size() / 2);   // merges are actually used
  CHECK(big.decode(ids) == held);
}

TEST_CASE("bpe trainer: tokenizer_config.json") {
  BpeTrainer t(BpeTrainerOptions{});
  json c = json::parse(t.tokenizer_config_json());
  CHECK(c["bos_token"] == std::string(ds::tok::special::kBos));
  CHECK(c["eos_token"] == std::string(ds::tok::special::kEos));
  CHECK(c["pad_token"] == std::string(ds::tok::special::kPad));
  CHECK(c["tokenizer_class"] == "PreTrainedTokenizerFast");
  std::string tpl = c["chat_template"];
  CHECK(tpl.find(std::string(ds::tok::special::kUser)) != std::string::npos);
  CHECK(tpl.find("add_generation_prompt") != std::string::npos);
}
