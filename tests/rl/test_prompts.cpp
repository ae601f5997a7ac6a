// RL prompt files (ds/rl/prompts.hpp): numeric answers keep the text they were written with,
// and errors name FILE:LINE.
#include <doctest/doctest.h>

#include <string>

#include "../temp_dir.hpp"
#include "ds/core/error.hpp"
#include "ds/rl/prompts.hpp"
#include "ds/rl/rewards.hpp"

TEST_CASE("load_prompts: a numeric answer is its JSON text, not a double's") {
  ds::testing::TempDir tmp("rl_prompts");
  const auto f = tmp.write("p.jsonl",
                           "{\"prompt\": \"a\", \"answer\": 12345678901234567890123}\n"
                           "{\"prompt\": \"b\", \"answer\": 3.14159265358979323846}\n"
                           "{\"prompt\": \"c\", \"answer\": 1E2}\n"
                           "{\"prompt\": \"d\", \"reference\": 72}\n"
                           "{\"prompt\": \"e\", \"answer\": -0.5, \"x\": {\"answer\": 9.5}}\n"
                           "{\"prompt\": \"f\", \"answer\": 1.5, \"l\": [2.5]}\n"
                           "{\"l\": [7.25], \"prompt\": \"g\", \"answer\": 2.0}\n");
  const auto p = ds::rl::load_prompts(f);
  REQUIRE(p.size() == 7);
  CHECK(p[0].reference == "12345678901234567890123");
  CHECK(p[1].reference == "3.14159265358979323846");
  CHECK(p[2].reference == "100.0");   // an exponent: the double's text, gold 100
  CHECK(ds::rl::reference_answer(*p[2].reference) == "100");
  CHECK(p[3].reference == "72");
  CHECK(p[4].reference == "-0.5");   // the top-level field, not the nested one
  CHECK(p[5].reference == "1.5");    // not a number of an array after it
  CHECK(p[6].reference == "2.0");    // nor of one before it
  // the big integer's gold matches a completion that writes it out
  const auto gold = ds::rl::reference_answer(*p[0].reference);
  CHECK(gold == ds::rl::extract_answer("#### 12345678901234567890123"));
}
