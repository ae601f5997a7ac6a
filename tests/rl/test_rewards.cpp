// Rule-based rewards of ds-rl: \boxed{} extraction with nested braces, answers after "####",
// which marker wins, negative / decimal / thousands-separated numbers, gold answers of
// references, the format and regex rewards, reward-term flags and the weighted sum.
#include <doctest/doctest.h>

#include "ds/core/error.hpp"
#include "ds/rl/rewards.hpp"

using namespace ds::rl;

TEST_CASE("extract_boxed: last complete box, nested braces, unclosed boxes ignored") {
  CHECK(extract_boxed("so \\boxed{42}.") == "42");
  CHECK(extract_boxed("\\boxed{1} then \\boxed{2}") == "2");
  CHECK(extract_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}");
  CHECK(extract_boxed("\\boxed{{a}{b{c}}} tail") == "{a}{b{c}}");
  CHECK(extract_boxed("\\boxed{7} and \\boxed{8") == "7");       // the unclosed one is ignored
  CHECK_FALSE(extract_boxed("\\boxed{never closed").has_value());
  CHECK_FALSE(extract_boxed("no box here {}").has_value());
  CHECK(extract_boxed("\\boxed{}") == "");
}

TEST_CASE("extract_answer: #### and \\boxed{}, the later marker wins, numbers normalised") {
  CHECK(extract_answer("Natalia sold 48 + 24 = 72 clips.\n#### 72") == "72");
  CHECK(extract_answer("#### -3.50") == "-3.5");
  CHECK(extract_answer("####1,000") == "1000");
  CHECK(extract_answer("#### $18") == "18");
  CHECK(extract_answer("#### \\$ 18.00 dollars") == "18");
  CHECK(extract_answer("The answer is \\boxed{-0.25}") == "-0.25");
  CHECK(extract_answer("\\boxed{1{,}234}") == "1234");
  CHECK(extract_answer("#### 5 but finally \\boxed{6}") == "6");
  CHECK(extract_answer("\\boxed{6} then\n#### 5") == "5");
  CHECK(extract_answer("\\boxed{x+1}") == "x+1");                  // non-numeric: trimmed text
  CHECK(extract_answer("#### nothing numeric \\boxed{9}") == "9");
  CHECK_FALSE(extract_answer("#### no number").has_value());
  CHECK_FALSE(extract_answer("The answer is 72").has_value());      // no marker, no answer
  CHECK(extract_answer("#### +7") == "7");
  CHECK(extract_answer("#### .5") == "0.5");
  CHECK(extract_answer("#### -0") == "0");
}

TEST_CASE("reference_answer: #### first, then \\boxed{}, then the whole text") {
  CHECK(reference_answer("She has 3 + 4 = 7 apples.\n#### 7") == "7");
  CHECK(reference_answer("\\boxed{12}") == "12");
  CHECK(reference_answer(" 0042 ") == "42");
  CHECK(reference_answer("Paris") == "Paris");
  CHECK_FALSE(reference_answer("   ").has_value());
}

TEST_CASE("exact and format rewards") {
  CHECK(exact_reward("... #### 72", "72") == 1.0);
  CHECK(exact_reward("... \\boxed{72.0}", "72") == 1.0);
  CHECK(exact_reward("... \\boxed{-72}", "72") == 0.0);
  CHECK(exact_reward("72", "72") == 0.0);               // needs a marker
  CHECK(exact_reward("\\boxed{}", "") == 0.0);          // an empty answer never matches
  CHECK(format_reward("\\boxed{3}") == 1.0);
  CHECK(format_reward("\\boxed{ }") == 0.0);
  CHECK(format_reward("\\boxed{3") == 0.0);
  CHECK(format_reward("#### 3") == 1.0);
  CHECK(format_reward("#### three") == 0.0);
  CHECK(format_reward("plain text") == 0.0);
}

TEST_CASE("reward terms: parsing and errors") {
  auto t = parse_reward_terms({"exact", "format=0.25", "regex=-1"});
  REQUIRE(t.size() == 3);
  CHECK(t[1].name == "format");
  CHECK(t[1].weight == 0.25);
  CHECK(t[2].weight == -1.0);
  CHECK_THROWS_AS(parse_reward_terms({}), ds::UsageError);
  CHECK_THROWS_AS(parse_reward_terms({"bleu"}), ds::UsageError);
  CHECK_THROWS_AS(parse_reward_terms({"exact=x"}), ds::UsageError);
  CHECK_THROWS_AS(parse_reward_terms({"exact=inf"}), ds::UsageError);
  CHECK_THROWS_AS(parse_reward_terms({"exact", "exact=2"}), ds::UsageError);
  CHECK_THROWS_AS(RewardSet({parse_reward_terms({"regex"}), "", "", 0}), ds::UsageError);
  CHECK_THROWS_AS(RewardSet({parse_reward_terms({"regex"}), "(", "", 0}), ds::UsageError);
  CHECK_THROWS_AS(RewardSet({parse_reward_terms({"command"}), "", "", 0}), ds::UsageError);
  // a pattern or command without its reward term (it used to be ignored without a word)
  CHECK_THROWS_WITH_AS(RewardSet({parse_reward_terms({"exact"}), "x", "", 0}),
                       doctest::Contains("add --reward regex"), ds::UsageError);
  CHECK_THROWS_WITH_AS(RewardSet({parse_reward_terms({"exact"}), "", "echo 1", 0}),
                       doctest::Contains("add --reward command"), ds::UsageError);
}

TEST_CASE("RewardSet: weighted sum, parts, accuracy, regex") {
  RewardSet rs({parse_reward_terms({"exact", "format=0.5", "regex=0.25"}), "[Tt]herefore", "", 0});
  const std::vector<RewardItem> items = {{"q", "Therefore #### 4", "#### 4"},
                                         {"q", "#### 5", "#### 4"},
                                         {"q", "no idea", "#### 4"}};
  const RewardScores s = rs.score(items, {"4", "4", "4"});
  REQUIRE(s.total.size() == 3);
  CHECK(s.total[0] == doctest::Approx(1.75));
  CHECK(s.total[1] == doctest::Approx(0.5));
  CHECK(s.total[2] == doctest::Approx(0.0));
  REQUIRE(s.parts.size() == 3);
  CHECK(s.parts[2] == std::vector<double>{1, 0, 0});
  CHECK(s.correct == std::vector<uint8_t>{1, 0, 0});
  RewardSet fmt_only({parse_reward_terms({"format"}), "", "", 0});
  CHECK(fmt_only.score(items, {"", "", ""}).correct.empty());   // no exact term: no accuracy
}

TEST_CASE("answers after a very long run: no stack overflow, the same numbers") {
  // std::regex recursed per character: 32,600 digits or spaces after "####" crashed ds-rl
  const std::string digits(200000, '7'), spaces(200000, ' ');
  CHECK(extract_answer("#### " + digits) == digits);
  CHECK(extract_answer("####" + spaces + "5") == "5");
  CHECK(reference_answer("#### " + digits) == digits);
  CHECK(format_reward("####" + spaces + "12") == 1.0);
  CHECK(extract_answer("#### +.5") == "0.5");
  CHECK(extract_answer("#### \\$-3") == "-3");
  CHECK_FALSE(extract_answer("#### \\ 5").has_value());
  CHECK_FALSE(extract_answer("#### x").has_value());
  // a user pattern over a long completion runs on a big enough stack
  RewardConfig cfg{parse_reward_terms({"regex"}), "(7+)$", "", 0};
  RewardSet set(cfg);
  const RewardScores s = set.score({{"p", digits, ""}}, {""});
  CHECK(s.total.at(0) == 1.0);
}

TEST_CASE("a weighted sum that overflows is an error, not an infinite reward") {
  RewardConfig cfg{parse_reward_terms({"regex=1e308", "format=1e308"}), "7", "", 0};
  RewardSet set(cfg);
  CHECK_THROWS_AS(set.score({{"p", "#### 7", ""}}, {""}), ds::NumericsError);   // 2e308
  CHECK(set.score({{"p", "none", ""}}, {""}).total.at(0) == 0.0);
}

TEST_CASE("unusable_reference: #### without a plain number after it") {
  CHECK(unusable_reference("so 72 clips\n#### 72") == "");
  CHECK(unusable_reference("#### 1,000.") == "");
  CHECK(unusable_reference("#### 18 dollars") == "");
  CHECK(unusable_reference("\\boxed{\\frac{1}{2}}") == "");   // no ####: the box is the gold
  CHECK(unusable_reference("plain text") == "");
  CHECK(unusable_reference("#### forty-two").find("no number") != std::string::npos);
  CHECK(unusable_reference("####").find("no number") != std::string::npos);
  CHECK(unusable_reference("#### 1/2").find("goes on as '1/2' but would be read as 1") !=
        std::string::npos);
  // no number after ####, but a box: the box is the gold (a markdown heading, a boxed answer)
  CHECK(unusable_reference("#### \\boxed{42}") == "");
  CHECK(unusable_reference("#### Step 1\nso \\boxed{7}") == "");
  CHECK(reference_answer("#### \\boxed{42}") == "42");
  CHECK(unusable_reference("#### 5x").find("goes on as") != std::string::npos);
}
