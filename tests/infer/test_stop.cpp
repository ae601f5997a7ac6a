// Stop conditions (stop ids, max new tokens, stop strings across token boundaries) and the
// streaming UTF-8 decoder (pieces concatenate to utf8_repair of the whole; partial
// characters and possible stop-string prefixes are held back).
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/infer/stop.hpp"
#include "ds/tokenizer/utf8.hpp"

using namespace ds::infer;

TEST_CASE("utf8 stream: holds partial characters, concatenation equals repair") {
  Utf8StreamDecoder d;
  const std::string globe = "\xF0\x9F\x8C\x8D";   // U+1F30D
  CHECK(d.push(std::string("a").append(globe, 0, 1)) == "a");
  CHECK(d.pending() == 1);
  CHECK(d.push(globe.substr(1, 2)).empty());
  CHECK(d.push(globe.substr(3) + "b") == globe + "b");
  CHECK(d.pending() == 0);
  CHECK(d.push("\xE4\xBD").empty());
  CHECK(d.flush() == "\xEF\xBF\xBD");   // truncated at the end: one U+FFFD

  std::mt19937 rng(5);
  const std::vector<std::string> pieces = {"a", "\xC3\xA9", "\xE4\xBD\xA0", globe, "\x80",
                                           "\xC3", "\xF0\x9F", "\xED\xA0\x80", "\xFF", " "};
  for (int trial = 0; trial < 500; ++trial) {
    std::string all;
    for (int i = 0; i < 12; ++i) all += pieces[rng() % pieces.size()];
    Utf8StreamDecoder s;
    std::string out;
    size_t pos = 0;
    while (pos < all.size()) {
      const size_t n = std::min<size_t>(all.size() - pos, rng() % 4);
      const std::string part = s.push(all.substr(pos, n));
      CHECK(!ds::tok::first_invalid_utf8(part));
      out += part;
      pos += n;
    }
    out += s.flush();
    REQUIRE_MESSAGE(out == ds::tok::utf8_repair(all), "trial " << trial);
  }
}

TEST_CASE("stop id ends with finish_reason stop and drops its text") {
  StopChecker c({.stop_ids = {1}, .max_new_tokens = 10, .stop_strings = {}});
  CHECK_FALSE(c.push(5, "Hel"));
  CHECK_FALSE(c.push(6, "lo"));
  CHECK(c.push(1, "<eos>"));
  CHECK(c.done());
  CHECK(to_string(c.finish_reason()) == "stop");
  CHECK(c.text() == "Hello");
  CHECK(c.tokens() == std::vector<uint32_t>{5, 6, 1});
  CHECK_THROWS_AS(c.push(7, "x"), ds::InternalError);
}

TEST_CASE("max new tokens ends with finish_reason length") {
  StopChecker c({.stop_ids = {1}, .max_new_tokens = 3, .stop_strings = {}});
  CHECK_FALSE(c.push(10, "a"));
  CHECK_FALSE(c.push(11, "b"));
  CHECK(c.push(12, "\xE4\xBD"));   // a partial character at the end is repaired
  CHECK(to_string(c.finish_reason()) == "length");
  CHECK(c.text() == "ab\xEF\xBF\xBD");
  StopChecker zero({.stop_ids = {}, .max_new_tokens = 0, .stop_strings = {}});
  CHECK(zero.done());
}

TEST_CASE("the U+FFFD a finished completion's partial character becomes is matched too") {
  const std::string fffd = "\xEF\xBF\xBD";
  for (const bool by_eos : {false, true}) {
    StopChecker c({.stop_ids = {1}, .max_new_tokens = by_eos ? 10u : 2u,
                   .stop_strings = {"the" + fffd}});
    std::string streamed;
    CHECK_FALSE(c.push(10, " of the"));
    streamed += c.take_stream();
    CHECK(c.push(11, "\xC3") != by_eos);   // half of "\xC3\xA9"; ends the max-2 run
    if (by_eos) CHECK(c.push(1, ""));
    streamed += c.take_stream();
    INFO("by_eos ", by_eos);
    CHECK(to_string(c.finish_reason()) == "stop");
    CHECK(c.matched_stop_string() == 0);
    CHECK(c.text() == " of ");
    CHECK(streamed == c.text());
  }
}

TEST_CASE("stop strings spanning token boundaries truncate the completion") {
  StopChecker c({.stop_ids = {1}, .max_new_tokens = 100, .stop_strings = {"\n\nQ:", "END"}});
  std::string streamed;
  const std::vector<std::string> toks = {"The answer", " is 4", ".\n", "\nQ", ": next"};
  size_t i = 0;
  for (; i < toks.size(); ++i) {
    const bool stop = c.push(uint32_t(100 + i), toks[i]);
    streamed += c.take_stream();
    if (stop) break;
  }
  CHECK(i == 4);
  CHECK(to_string(c.finish_reason()) == "stop");
  CHECK(c.matched_stop_string() == 0);
  CHECK(c.text() == "The answer is 4.");
  CHECK(streamed == c.text());   // the held-back "\n" / "\n\nQ" was never streamed
  CHECK(c.tokens().size() == 5);
}

TEST_CASE("streaming holds back only possible stop-string prefixes") {
  StopChecker c({.stop_ids = {}, .max_new_tokens = 100, .stop_strings = {"ENDX"}});
  c.push(1, "abcE");
  CHECK(c.take_stream() == "abc");
  c.push(2, "N");
  CHECK(c.take_stream().empty());
  c.push(3, "Dy");          // "ENDy" is not the stop string: release it
  CHECK(c.take_stream() == "ENDy");
  CHECK_FALSE(c.done());
  // Earliest match wins; several stop strings in one token.
  StopChecker d({.stop_ids = {}, .max_new_tokens = 100, .stop_strings = {"cd", "b"}});
  CHECK(d.push(1, "abcd"));
  CHECK(d.text() == "a");
  CHECK(d.matched_stop_string() == 1);
}

TEST_CASE("stop strings must be non-empty UTF-8") {
  CHECK_THROWS_AS(StopChecker({.stop_ids = {}, .max_new_tokens = 1, .stop_strings = {""}}),
                  ds::UsageError);
  CHECK_THROWS_AS(
      StopChecker({.stop_ids = {}, .max_new_tokens = 1, .stop_strings = {"\xC3"}}),
      ds::UsageError);
}
