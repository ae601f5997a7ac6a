// The punctuation + line-break token split (spec §4.1): which tokens count as joined, that a
// split keeps the text and replaces the token by the encodings of its two parts, the rate,
// and that a decision depends only on (seed, document, byte offset), so encoding a document
// in pieces gives the same tokens.
// reference: include/ds/tokenize/punct_split.hpp.
#include <doctest/doctest.h>

#include <cctype>

#include "ds/core/error.hpp"
#include "ds/tokenize/punct_split.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

using namespace ds::tokenize;
using ds::tok::Tokenizer;

namespace {

bool ascii(const std::string& b) {
  for (const char c : b)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

// For ASCII bytes, the rule ` ?[^\s\p{L}\p{N}]+[\r\n]+` written out by hand (ASCII White_Space:
// tab to CR, U+001C to U+001F and space).
bool looks_joined(const std::string& b) {
  const auto space = [](unsigned char c) { return (c >= 9 && c <= 13) || (c >= 28 && c <= 32); };
  const auto alnum = [](unsigned char c) { return std::isalnum(c) != 0; };
  size_t i = b.size() > 0 && b[0] == ' ' ? 1 : 0;
  const size_t head = i;
  while (i < b.size() && !space(uint8_t(b[i])) && !alnum(uint8_t(b[i]))) ++i;
  if (i == head || i == b.size()) return false;
  for (; i < b.size(); ++i)
    if (b[i] != '\r' && b[i] != '\n') return false;
  return true;
}

void check_tokenizer(const Tokenizer& tok) {
  const PunctNewlineSplitter all(tok, 1, 1.0);
  size_t joined = 0;
  for (uint32_t id = 0; id < tok.vocab_size(); ++id) {
    if (tok.id_to_token(id).empty()) continue;
    const bool added = [&] {
      for (const auto& a : tok.added_tokens())
        if (a.id == id) return true;
      return false;
    }();
    const std::string b = tok.token_bytes(id);
    INFO(id);
    if (all.split_point(id) > 0) {
      CHECK(all.split_point(id) == b.find_first_of("\r\n"));
      joined++;
    }
    if (added || !ascii(b)) {   // non-ASCII: the examples in the test case below
      CHECK((all.split_point(id) > 0) == (!added && ds::tok::joins_punctuation_and_line_break(b)));
      continue;
    }
    CHECK((all.split_point(id) > 0) == looks_joined(b));
  }
  CHECK(all.joined_tokens() == joined);
  REQUIRE(joined > 0);

  // rate 1: every joined token becomes the encodings of its parts; the text is unchanged
  const std::string text = ds_test::tricky_text(60000, 3);
  const std::vector<uint32_t> base = tok.encode(text);
  std::vector<uint32_t> split = base, want;
  uint64_t seen = 0, n = 0;
  all.apply(0, 0, split, seen, n);
  for (const uint32_t id : base) {
    const uint32_t cut = all.split_point(id);
    if (cut == 0) {
      want.push_back(id);
      continue;
    }
    const std::string b = tok.token_bytes(id);
    tok.encode(std::string_view(b).substr(0, cut), want, false);
    tok.encode(std::string_view(b).substr(cut), want, false);
  }
  CHECK(seen > 100);
  CHECK(n == seen);
  CHECK(split == want);
  CHECK(tok.decode(split) == text);
  for (const uint32_t id : split) CHECK(all.split_point(id) == 0);

  // rate 0.3: about 30% split; the same decisions for the same (seed, document, offset), and
  // for the token list handled in two parts with their byte offsets
  const PunctNewlineSplitter some(tok, 7, 0.3);
  std::vector<uint32_t> a = base;
  seen = n = 0;
  some.apply(4, 100, a, seen, n);
  CHECK(double(n) / double(seen) == doctest::Approx(0.3).epsilon(0.1));
  CHECK(tok.decode(a) == text);
  const size_t half = base.size() / 2;
  std::vector<uint32_t> p1(base.begin(), base.begin() + std::ptrdiff_t(half));
  std::vector<uint32_t> p2(base.begin() + std::ptrdiff_t(half), base.end());
  uint64_t off2 = 100;   // bytes before the second part
  for (const uint32_t id : p1) off2 += tok.token_bytes(id).size();
  uint64_t s2 = 0, n2 = 0;
  some.apply(4, 100, p1, s2, n2);
  some.apply(4, off2, p2, s2, n2);
  p1.insert(p1.end(), p2.begin(), p2.end());
  CHECK(p1 == a);
  CHECK(n2 == n);
  std::vector<uint32_t> other_doc = base, other_seed = base;
  some.apply(5, 100, other_doc, s2, n2);
  PunctNewlineSplitter(tok, 8, 0.3).apply(4, 100, other_seed, s2, n2);
  CHECK(other_doc != a);
  CHECK(other_seed != a);
}

}  // namespace

TEST_CASE("punct + newline split: which text joins punctuation and line breaks") {
  using ds::tok::joins_punctuation_and_line_break;
  for (const char* yes : {".\n", "):\n\n", " {\r\n", "\xe3\x80\x82\n" /* 。 */,
                          "\xe2\x80\x94\n" /* em dash */, "\xf0\x9f\x98\x80\n" /* emoji */,
                          "\xcc\x81\n" /* combining acute: a mark, not a letter */}) {
    INFO(yes);
    CHECK(joins_punctuation_and_line_break(yes));
  }
  for (const char* no : {"", ".", "\n", "\n.", ".\n.", "  .\n", "a.\n", "3.\n", "\t.\n",
                         "\xc2\xa0\n" /* no-break space */,
                         "\xe3\x80\x80\n" /* ideographic space */, "\xc3\xa9\n" /* é */,
                         "\xe4\xbd\xa0\n" /* 你 */, "\xd9\xa3\n" /* Arabic 3 */,
                         "\x82\n" /* the tail of a character */}) {
    INFO(no);
    CHECK_FALSE(joins_punctuation_and_line_break(no));
  }
}

TEST_CASE("punct + newline split: a tokenizer trained here") {
  check_tokenizer(ds_test::small_tokenizer());
  CHECK_THROWS_AS(PunctNewlineSplitter(ds_test::small_tokenizer(), 1, 1.5), ds::UsageError);
}

TEST_CASE("punct + newline split: the DeepSeek-V3 tokenizer") {
  const Tokenizer* tok = ds_test::deepseek_tokenizer();
  if (!tok) {
    MESSAGE("skipped: ../shared/data/deepseek_v3_tokenizer is absent");
    return;
  }
  check_tokenizer(*tok);
  const PunctNewlineSplitter s(*tok, 1, 0.5);
  MESSAGE("DeepSeek-V3 tokens joining punctuation and line breaks: " << s.joined_tokens());
  for (const char* t : {".\n", "):\n", ".\n\n"}) {
    const std::vector<uint32_t> ids = tok->encode(t);
    INFO(t);
    REQUIRE(ids.size() == 1);
    CHECK(s.split_point(ids[0]) > 0);
  }
}
