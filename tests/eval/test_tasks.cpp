// Multiple-choice tasks: loading with each field mapping (choice fields, choices array,
// gold field, labels file), errors naming file:line and field, seeded k-shot selection,
// the request text layout, tokenised scored ranges, accuracy / byte-normalised accuracy;
// with the shared data: PIQA valid loads 1838 labelled items.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "ds/core/error.hpp"
#include "ds/eval/tasks.hpp"
#include "eval_test_util.hpp"

using namespace ds::eval;
using ds::eval::testing::TempDir;

namespace {
const char* kPiqaLike =
    "{\"goal\": \"Open a jar\", \"sol1\": \"twist the lid\", \"sol2\": \"eat the lid\"}\n"
    "\n"
    "{\"goal\": \"Dry hands\", \"sol1\": \"use water\", \"sol2\": \"use a towel\"}\n";
}

TEST_CASE("PIQA-style loading with a labels file") {
  TempDir d;
  const auto data = d.write("valid.jsonl", kPiqaLike);
  d.write("valid-labels.lst", "0\n1\n");
  CHECK(default_labels_path(data) == d.path() / "valid-labels.lst");
  const auto items = load_mc(data, piqa_spec());
  REQUIRE(items.size() == 2);
  CHECK(items[0].context == "Question: Open a jar\nAnswer:");
  CHECK(items[0].choices == std::vector<std::string>{"twist the lid", "eat the lid"});
  CHECK(items[0].gold == 0);
  CHECK(items[1].gold == 1);
  CHECK(items[1].line == 3);   // the blank line is skipped but counted

  d.write("valid-labels.lst", "0\n");
  CHECK_THROWS_WITH_AS(load_mc(data, piqa_spec()), doctest::Contains("1 labels for 2 items"),
                       ds::FormatError);
  d.write("valid-labels.lst", "0\n2\n");
  CHECK_THROWS_WITH_AS(load_mc(data, piqa_spec()), doctest::Contains("valid-labels.lst:2"),
                       ds::FormatError);
  // a blank line would shift the labels after it; trailing blank lines are fine
  d.write("valid-labels.lst", "0\n\n1\n");
  CHECK_THROWS_WITH_AS(load_mc(data, piqa_spec()), doctest::Contains("valid-labels.lst:2: blank"),
                       ds::FormatError);
  d.write("valid-labels.lst", "0\n1\n\n\n");
  CHECK(load_mc(data, piqa_spec()).size() == 2);
  CHECK_THROWS_AS(builtin_mc_spec("hellaswag"), ds::UsageError);
  CHECK(builtin_mc_spec("piqa").choice_fields.size() == 2);
}

TEST_CASE("choices array, dotted fields, gold as letter / index") {
  TempDir d;
  const auto data = d.write(
      "arc.jsonl",
      R"({"q": "Sky?", "choices": {"text": ["red", "blue", "green"]}, "answerKey": "B"})" "\n"
      R"({"q": "Grass?", "choices": {"text": ["red", "blue", "green"]}, "answerKey": 3})" "\n");
  McSpec s;
  s.name = "arc";
  s.context_field = "q";
  s.choices_field = "choices.text";
  s.gold_field = "answerKey";
  s.gold_base = 1;   // numeric answers are 1-based here; letters are always A = 0
  const auto items = load_mc(data, s);
  REQUIRE(items.size() == 2);
  CHECK(items[0].gold == 1);
  CHECK(items[1].gold == 2);
  CHECK(items[0].context == "Sky?");
  CHECK(items[1].choices.size() == 3);
}

TEST_CASE("loading errors name file:line and field") {
  TempDir d;
  McSpec s;
  s.name = "t";
  s.context_field = "ctx";
  s.choice_fields = {"a", "b"};
  s.gold_field = "label";
  const auto bad_json =
      d.write("x.jsonl", "{\"ctx\":\"c\",\"a\":\"1\",\"b\":\"2\",\"label\":0}\n{oops\n");
  CHECK_THROWS_WITH_AS(load_mc(bad_json, s), doctest::Contains("x.jsonl:2: invalid JSON"),
                       ds::FormatError);
  const auto missing = d.write("m.jsonl", "{\"ctx\":\"c\",\"a\":\"1\",\"label\":0}\n");
  CHECK_THROWS_WITH_AS(load_mc(missing, s), doctest::Contains("m.jsonl:1: missing field 'b'"),
                       ds::FormatError);
  const auto typed = d.write("t.jsonl", "{\"ctx\":5,\"a\":\"1\",\"b\":\"2\",\"label\":0}\n");
  CHECK_THROWS_WITH_AS(load_mc(typed, s), doctest::Contains("field 'ctx' is not a string"),
                       ds::FormatError);
  const auto range = d.write("r.jsonl", "{\"ctx\":\"c\",\"a\":\"1\",\"b\":\"2\",\"label\":2}\n");
  CHECK_THROWS_WITH_AS(load_mc(range, s), doctest::Contains("r.jsonl:1: field 'label'"),
                       ds::FormatError);
  // integers that cannot name a choice, however large (and before --gold-base is applied)
  McSpec one_based = s;
  one_based.gold_base = 1;
  for (const char* label : {"-9223372036854775808", "18446744073709551615", "4294967297"}) {
    const auto huge = d.write("h.jsonl", std::string("{\"ctx\":\"c\",\"a\":\"1\",\"b\":\"2\","
                                                     "\"label\":") + label + "}\n");
    CHECK_THROWS_WITH_AS(load_mc(huge, one_based), doctest::Contains("outside the 2 choices"),
                         ds::FormatError);
  }
  const auto empty = d.write("e.jsonl", "\n  \n");
  CHECK_THROWS_WITH_AS(load_mc(empty, s), doctest::Contains("e.jsonl: no records"),
                       ds::FormatError);
  CHECK_THROWS_AS(load_mc(d.path() / "absent.jsonl", s), ds::IoError);
  McSpec both = s;
  both.choices_field = "cs";
  CHECK_THROWS_AS(load_mc(range, both), ds::UsageError);
}

TEST_CASE("k-shot selection is seeded, distinct, and never the item itself") {
  for (uint64_t item = 0; item < 50; ++item) {
    const auto a = select_shots(20, 5, item % 20, 7, item);
    CHECK(a == select_shots(20, 5, item % 20, 7, item));
    std::set<size_t> u(a.begin(), a.end());
    CHECK(u.size() == 5);
    CHECK(u.count(item % 20) == 0);
    for (size_t x : a) CHECK(x < 20);
  }
  CHECK(select_shots(20, 5, 3, 7, 1) != select_shots(20, 5, 3, 8, 1));
  CHECK(select_shots(6, 5, 2, 1, 0).size() == 5);   // the whole pool but the item
  CHECK_THROWS_AS(select_shots(6, 6, 2, 1, 0), ds::UsageError);
  CHECK(select_shots(6, 6, size_t(-1), 1, 0).size() == 6);   // separate pool: no exclusion
}

TEST_CASE("request layout and scored continuations") {
  McItem shot{1, "Question: A\nAnswer:", {"x", "y"}, 1};
  McItem item{2, "Question: B\nAnswer:", {"p", "qq"}, 0};
  const McRequest r = build_mc_request(item, std::span<const McItem>(&shot, 1));
  CHECK(r.prompt == "Question: A\nAnswer: y\n\nQuestion: B\nAnswer:");
  CHECK(r.continuations == std::vector<std::string>{" p", " qq"});
  CHECK(build_mc_request(item, {}).prompt == "Question: B\nAnswer:");
}

TEST_CASE("scoring: accuracy and length-normalised accuracy") {
  const std::vector<double> ll = {-4.0, -3.0};
  const std::vector<size_t> bytes = {2, 4};
  McOutcome o = score_mc(ll, bytes, 0);
  CHECK(o.pred == 1);
  CHECK(o.pred_norm == 1);   // -2.0 vs -0.75 per byte
  // Choice 1 has the higher total log-likelihood, choice 0 the higher per byte.
  o = score_mc(std::vector<double>{-4.0, -3.0}, std::vector<size_t>{8, 2}, 0);
  CHECK(o.pred == 1);
  CHECK(o.pred_norm == 0);   // -0.5 vs -1.5
  CHECK_FALSE(o.correct);
  CHECK(o.correct_norm);
  CHECK(score_mc(std::vector<double>{-1.0, -1.0}, std::vector<size_t>{1, 1}, 1).pred == 0);
  const std::vector<McOutcome> all = {o, o, score_mc(ll, bytes, 1)};
  const McMetrics m = aggregate_mc(all);
  CHECK(m.acc.value == doctest::Approx(1.0 / 3));
  CHECK(m.acc_norm.value == doctest::Approx(1.0));
  CHECK(m.acc_norm.stderr_ == 0);
  CHECK(m.acc.stderr_ == doctest::Approx(std::sqrt((1.0 / 3) * (2.0 / 3) / 3)));
}

TEST_CASE("real PIQA validation set and DeepSeek tokenizer") {
  const auto dir = ds::eval::testing::shared_data();
  if (!fs::exists(dir / "piqa" / "valid.jsonl")) {
    MESSAGE("skipped: no shared data at " << dir.string());
    return;
  }
  const auto items = load_mc(dir / "piqa" / "valid.jsonl", piqa_spec());
  CHECK(items.size() == 1838);
  size_t ones = 0;
  for (const McItem& it : items) {
    REQUIRE(it.choices.size() == 2);
    ones += it.gold;
  }
  CHECK(ones > 800);   // labels are roughly balanced
  CHECK(ones < 1038);
  const auto tokfile = dir / "deepseek_v3_tokenizer" / "tokenizer.json";
  if (!fs::exists(tokfile)) return;
  const auto tok = ds::tok::Tokenizer::from_file(tokfile);
  const McRequest r = build_mc_request(items[0], {});
  const auto seqs = tokenize_mc(tok, r, 0u);
  REQUIRE(seqs.size() == 2);
  for (size_t c = 0; c < 2; ++c) {
    const auto& s = seqs[c];
    CHECK(s.tokens[0] == 0);
    const std::vector<uint32_t> cont(s.tokens.begin() + ptrdiff_t(s.score_begin), s.tokens.end());
    CHECK(tok.decode(cont) == r.continuations[c]);
    CHECK(s.norm_len == items[0].choices[c].size());   // ASCII: characters = bytes
  }
  // Left truncation keeps the BOS and the whole continuation.
  const auto cut = tokenize_mc(tok, r, 0u, seqs[0].tokens.size() - 3);
  CHECK(cut[0].tokens.size() == seqs[0].tokens.size() - 3);
  CHECK(cut[0].tokens[0] == 0);
  CHECK(cut[0].tokens.size() - cut[0].score_begin == seqs[0].tokens.size() - seqs[0].score_begin);
  CHECK_THROWS_AS(tokenize_mc(tok, r, 0u, 2), ds::FormatError);
  // Without BOS (add_bos_token false): the prompt's tokens first; a cut keeps at least one of
  // them before the continuation; an empty context has nothing to condition on.
  const auto plain = tokenize_mc(tok, r, std::nullopt);
  CHECK(std::vector<uint32_t>(plain[0].tokens) ==
        std::vector<uint32_t>(seqs[0].tokens.begin() + 1, seqs[0].tokens.end()));
  CHECK(plain[0].score_begin == seqs[0].score_begin - 1);
  const size_t n_cont = seqs[0].tokens.size() - seqs[0].score_begin;
  const auto tight = tokenize_mc(tok, r, std::nullopt, n_cont + 1);
  CHECK(tight[0].score_begin == 1);
  CHECK(tight[0].tokens[0] == plain[0].tokens[plain[0].score_begin - 1]);
  CHECK_THROWS_AS(tokenize_mc(tok, r, std::nullopt, n_cont), ds::FormatError);
  McRequest empty = r;
  empty.prompt.clear();
  CHECK_THROWS_WITH_AS(tokenize_mc(tok, empty, std::nullopt), doctest::Contains("no BOS"),
                       ds::FormatError);
  CHECK(tokenize_mc(tok, empty, 0u)[0].score_begin == 1);
  // acc_norm divides by the choice's characters (code points), not its UTF-8 bytes
  McRequest accents = r;
  accents.continuations[0] = std::string(" ") + "\u00e9t\u00e9";
  accents.continuations[1] = std::string(" ") + "no";
  CHECK(tokenize_mc(tok, accents, 0u)[0].norm_len == 3);
  CHECK(tokenize_mc(tok, accents, 0u)[1].norm_len == 2);
}
