// Generation tasks: number normalisation, gold extraction after "####", prediction
// extraction (default and regex), prompt layout (plain and chat, rendered with the DeepSeek-V3
// template), exact match, loading errors; with the
// shared data: every GSM8K train answer extracts as an integer (7473 lines).
#include <doctest/doctest.h>

#include "ds/core/error.hpp"
#include "ds/eval/gen_tasks.hpp"
#include "ds/infer/chat_template.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "eval_test_util.hpp"

using namespace ds::eval;
using ds::eval::testing::TempDir;
namespace fs = std::filesystem;

TEST_CASE("number normalisation") {
  CHECK(normalize_number("72") == "72");
  CHECK(normalize_number(" 1,234 ") == "1234");
  CHECK(normalize_number("$5.50") == "5.5");
  CHECK(normalize_number("72.0") == "72");
  CHECK(normalize_number("72.") == "72");
  CHECK(normalize_number("007") == "7");
  CHECK(normalize_number("-0") == "0");
  CHECK(normalize_number("+3") == "3");
  CHECK(normalize_number("-12.500") == "-12.5");
  CHECK(normalize_number(".5") == "0.5");
  CHECK(normalize_number("abc").empty());
  CHECK(normalize_number("1.2.3").empty());
  CHECK(normalize_number("").empty());
  CHECK(normalize_number("-").empty());
}

TEST_CASE("gold and prediction extraction") {
  CHECK(extract_gold("48/2 = 24\n#### 72") == "72");
  CHECK(extract_gold("#### 1,000") == "1000");
  CHECK_FALSE(extract_gold("no marker 5").has_value());
  CHECK_FALSE(extract_gold("#### many").has_value());

  const AnswerExtractor def;
  CHECK(def(" She has 3 apples and 4 pears, so 7 in total.") == "7");
  CHECK(def(" 3 + 4 = 7\n#### 7\n\nThen 99") == "7");   // "####" wins over the last number
  CHECK(def(" It costs $1,250.00.") == "1250");
  CHECK(def(" The answer is -4.") == "-4");
  CHECK_FALSE(def(" no numbers here").has_value());

  const AnswerExtractor re("The answer is (\\d+)");
  CHECK(re("So The answer is 12. The answer is 13") == "12");
  CHECK_FALSE(re("nothing").has_value());
  const AnswerExtractor word("answer: ([a-z]+)");
  CHECK(word("final answer: yes ") == "yes");
  const AnswerExtractor either("answer is (\\d+)|#### (\\d+)");   // the group that matched
  CHECK(either("so #### 42") == "42");
  CHECK(either("the answer is 7") == "7");
  CHECK_THROWS_AS(AnswerExtractor("(unclosed"), ds::UsageError);

  CHECK(exact_match(std::string("72.0"), "72"));
  CHECK(exact_match(std::string("1,000"), "1000"));
  CHECK_FALSE(exact_match(std::string("71"), "72"));
  CHECK_FALSE(exact_match(std::nullopt, "72"));
  CHECK(exact_match(std::string(" yes"), "yes"));
}

TEST_CASE("k-shot prompt layout") {
  GenItem a{1, "What is 1+1?", "1+1=2\n#### 2", "2"};
  GenItem b{2, "What is 2+3?", "#### 5", "5"};
  GenItem q{3, "What is 4+4?", "#### 8", "8"};
  const std::vector<GenItem> shots = {a, b};
  CHECK(build_gen_prompt(q, shots) ==
        "Question: What is 1+1?\nAnswer: 1+1=2\n#### 2\n\n"
        "Question: What is 2+3?\nAnswer: #### 5\n\n"
        "Question: What is 4+4?\nAnswer:");
  CHECK(build_gen_prompt(q, {}) == "Question: What is 4+4?\nAnswer:");
  CHECK(kGenStopStrings == std::vector<std::string>{"Question:"});
}

TEST_CASE("chat layout: system, shots as turns, the question, the generation prompt") {
  GenItem a{1, "What is 1 + 1?", "1 + 1 = 2. #### 2", "2"};
  GenItem q{3, "What is 4 + 4?", "4 + 4 = 8. #### 8", "8"};
  const std::string bos(ds::tok::special::kBos), eos(ds::tok::special::kEos);
  const std::string user(ds::tok::special::kUser), asst(ds::tok::special::kAssistant);
  const auto tpl = ds::infer::ChatTemplate::deepseek_v3();

  // Zero-shot, no system message: one user turn and the generation prompt.
  const auto m0 = build_chat_messages(q, {});
  REQUIRE(m0.size() == 1);
  CHECK(m0[0].role == "user");
  CHECK(m0[0].content == "What is 4 + 4?");
  CHECK(tpl.render(m0, true).text == bos + user + "What is 4 + 4?" + asst);

  // A system message and one shot: the shot's reference answer is a finished assistant turn.
  const std::vector<GenItem> shots = {a};
  const auto m1 = build_chat_messages(q, shots, "Answer with #### N.");
  REQUIRE(m1.size() == 4);
  CHECK(m1[0].role == "system");
  CHECK(m1[2].role == "assistant");
  CHECK(tpl.render(m1, true).text == bos + "Answer with #### N." + user + "What is 1 + 1?" + asst +
                                         "1 + 1 = 2. #### 2" + eos + user + "What is 4 + 4?" +
                                         asst);
}

TEST_CASE("loading GSM8K-style files and errors") {
  TempDir d;
  const auto ok = d.write("g.jsonl", "{\"question\": \"q1\", \"answer\": \"x\\n#### 1,200\"}\n"
                                     "{\"question\": \"q2\", \"answer\": \"#### 3\"}\n");
  const auto items = load_gen(ok);
  REQUIRE(items.size() == 2);
  CHECK(items[0].gold == "1200");
  CHECK(items[1].line == 2);
  const auto no_gold = d.write("n.jsonl", "{\"question\": \"q\", \"answer\": \"no answer\"}\n");
  CHECK_THROWS_WITH_AS(load_gen(no_gold), doctest::Contains("n.jsonl:1: field 'answer'"),
                       ds::FormatError);
  GenSpec other;
  other.question_field = "problem";
  CHECK_THROWS_WITH_AS(load_gen(ok, other), doctest::Contains("missing field 'problem'"),
                       ds::FormatError);
  const auto bad = d.write("b.jsonl", "[1, 2]\n");
  CHECK_THROWS_WITH_AS(load_gen(bad), doctest::Contains("b.jsonl:1: record is not"),
                       ds::FormatError);
  CHECK_THROWS_AS(load_gen(d.write("e.jsonl", "")), ds::FormatError);
}

TEST_CASE("real GSM8K train answers extract as integers") {
  const auto p = ds::eval::testing::shared_data() / "gsm8k" / "train.jsonl";
  if (!fs::exists(p)) {
    MESSAGE("skipped: no shared data at " << p.string());
    return;
  }
  const auto items = load_gen(p);
  CHECK(items.size() == 7473);
  size_t integers = 0;
  for (const GenItem& it : items) {
    const bool integer = !it.gold.empty() && it.gold.find('.') == std::string::npos;
    integers += integer;
    if (!integer) MESSAGE("line " << it.line << ": " << it.gold);
    // The default extractor finds the gold in the reference answer itself.
    CHECK(AnswerExtractor()(it.answer) == it.gold);
  }
  CHECK(integers == items.size());
}

TEST_CASE("numbers in very long texts: no stack overflow") {
  const std::string digits(200000, '4');
  const ds::eval::AnswerExtractor plain;
  CHECK(plain("#### " + digits) == digits);
  CHECK(plain("x " + digits + " y 12,000.50 z") == "12000.5");
  CHECK(plain("a -$3 b") == "-3");
  const ds::eval::AnswerExtractor user("answer: ([0-9]+)");
  CHECK(user("answer: " + digits) == digits);
}

TEST_CASE("majority answer: normalised groups, missing predictions do not vote, first wins ties") {
  using P = std::optional<std::string>;
  const std::vector<P> a = {P("7"), P("7.0"), P("$1,000"), std::nullopt, P("1000")};
  CHECK(majority_answer(a) == "7");   // tie 2:2, "7" seen first
  const std::vector<P> b = {std::nullopt, P("1000"), P("7"), P(" 1,000 ")};
  CHECK(majority_answer(b) == "1000");
  const std::vector<P> c = {P(" yes"), P("no"), P("yes ")};   // text: trimmed
  CHECK(majority_answer(c) == " yes");
  CHECK(exact_match(majority_answer(c), "yes"));
  const std::vector<P> none = {std::nullopt, std::nullopt};
  CHECK_FALSE(majority_answer(none).has_value());
  CHECK_FALSE(majority_answer(std::vector<P>{}).has_value());
}
