// FIM (PSM) unit tests: the per-document RNG is a pure function of (seed, index), the rate
// is honoured, split points fall on character boundaries, and the PSM layout is exact.
// reference: spec/deepseek-v3.md §4.2; include/ds/tokenize/fim.hpp.
#include <doctest/doctest.h>

#include <cmath>

#include "ds/tokenize/fim.hpp"
#include "ds/tokenizer/utf8.hpp"
#include "test_util.hpp"

using namespace ds::tokenize;

TEST_CASE("DocRng is a pure function of (seed, doc index)") {
  DocRng a(42, 7), b(42, 7), c(42, 8), d(43, 7);
  const uint64_t a1 = a.next(), a2 = a.next();
  CHECK(a1 == b.next());
  CHECK(a2 == b.next());
  CHECK(a1 != a2);
  CHECK(a1 != c.next());
  CHECK(a1 != d.next());
  DocRng e(1, 1);
  for (int i = 0; i < 1000; ++i) {
    const double u = e.uniform();
    CHECK((u >= 0.0 && u < 1.0));
    CHECK(e.below(5) < 5);
  }
}

TEST_CASE("fim_selected honours the rate and depends only on (seed, index)") {
  const int n = 20000;
  for (double rate : {0.0, 0.1, 0.5, 1.0}) {
    int hits = 0;
    for (int i = 0; i < n; ++i) hits += fim_selected(3, uint64_t(i), rate);
    const double sigma = std::sqrt(n * rate * (1 - rate));
    CHECK(std::fabs(hits - n * rate) <= 5 * sigma + 1e-9);
  }
  // Order of evaluation does not matter (no hidden state).
  CHECK(fim_selected(9, 123, 0.5) == fim_selected(9, 123, 0.5));
  int differ = 0;
  for (int i = 0; i < 200; ++i) differ += fim_selected(1, i, 0.5) != fim_selected(2, i, 0.5);
  CHECK(differ > 50);
}

TEST_CASE("fim_split picks sorted character boundaries") {
  const std::string text = "a\xc3\xa9\xe4\xbd\xa0\xf0\x9f\x8c\x8d z\n";  // 1-, 2-, 3-, 4-byte chars
  bool saw_inner = false;
  for (uint64_t doc = 0; doc < 500; ++doc) {
    const FimSplit s = fim_split(11, doc, text);
    REQUIRE(s.lo <= s.hi);
    REQUIRE(s.hi <= text.size());
    for (size_t cut : {s.lo, s.hi}) {
      CHECK(!ds::tok::first_invalid_utf8(std::string_view(text).substr(0, cut)));
      CHECK(!ds::tok::first_invalid_utf8(std::string_view(text).substr(cut)));
    }
    saw_inner |= s.lo > 0 && s.hi < text.size() && s.lo < s.hi;
    const FimSplit again = fim_split(11, doc, text);
    CHECK((again.lo == s.lo && again.hi == s.hi));
  }
  CHECK(saw_inner);
  const FimSplit e = fim_split(1, 1, "");
  CHECK((e.lo == 0 && e.hi == 0));
}

TEST_CASE("encode_psm lays out <fim_begin> prefix <fim_hole> suffix <fim_end> middle <eos>") {
  const auto& tok = ds_test::small_tokenizer();
  const FimIds ids = FimIds::from(tok);
  const std::string text = "def add(a, b):\n    return a + b\n";
  const FimSplit split{4, 15};
  std::vector<uint32_t> out;
  encode_psm(tok, ids, text, split, true, out);
  std::vector<uint32_t> want{ids.begin};
  tok.encode(text.substr(0, 4), want);
  want.push_back(ids.hole);
  tok.encode(text.substr(15), want);
  want.push_back(ids.end);
  tok.encode(text.substr(4, 11), want);
  want.push_back(ids.eos);
  CHECK(out == want);
  // Decoding gives the three parts in PSM order.
  const std::string dec = tok.decode(out);
  const std::string expect = std::string(ds::tok::special::kFimBegin) + "def " +
                             std::string(ds::tok::special::kFimHole) + text.substr(15) +
                             std::string(ds::tok::special::kFimEnd) + text.substr(4, 11) +
                             std::string(ds::tok::special::kEos);
  CHECK(dec == expect);
}
