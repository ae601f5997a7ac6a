// ds-eval generate with sampled completions (--samples, --temperature, --pass-k) on the tiny
// random checkpoint of eval_run_fixture.hpp: sample s of item i is what request i * N + s draws
// alone from its own sampler stream, at any batch size; the report's exact_match, pass@k and
// maj@N are what the logged samples give; the flag combinations that make no sense are usage
// errors; one greedy completion reports exact_match alone.
// reference: include/ds/eval/run.hpp (GenOptions); Chen et al. 2021 (pass@k).
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/eval/gen_tasks.hpp"
#include "ds/eval/metrics.hpp"
#include "ds/eval/run.hpp"
#include "ds/infer/generator.hpp"
#include "ds/io/file.hpp"
#include "eval_run_fixture.hpp"

using namespace ds;
using ds::eval::testing::Fixture;
using nlohmann::json;
namespace fs = std::filesystem;

TEST_CASE("ds-eval generate --samples: per-request streams, pass@k and maj@N from the samples") {
  Fixture fx;
  const std::vector<std::string> questions = {"the ant ran to", "an ant, a hen", "the sun set on"};
  auto write_data = [&](const std::string& name, const std::vector<std::string>& golds) {
    std::string text;
    for (size_t i = 0; i < 3; ++i)
      text += json({{"question", questions[i]}, {"answer", "so #### " + golds[i]}}).dump() + "\n";
    return fx.tmp.write(name, text);
  };
  eval::GenOptions o;
  o.shots = 0;
  o.max_new_tokens = 32;
  o.samples = 4;
  o.temperature = 1.5f;
  o.answer_regex = "([0-9])";   // the first digit: the random byte-level model emits a few
  o.pass_k = {4, 1, 2, 2};
  auto run = [&](size_t batch, const std::string& log) {
    o.common = fx.common(batch);
    o.common.log_samples = (fx.tmp.path() / log).string();
    return eval::eval_generate(fx.pt, o).to_json();
  };
  auto read_log = [&](const std::string& log) {
    std::ifstream in(fx.tmp.path() / log);
    std::vector<json> recs;
    for (std::string line; std::getline(in, line);) recs.push_back(json::parse(line));
    return recs;
  };
  // The prompts do not depend on the answers: a first run's predictions make golds that some
  // samples match (item i: its samples' majority digit, if they have one).
  o.task = write_data("s0.jsonl", {"100", "100", "100"}).string();
  run(8, "s0.log");
  const std::vector<json> first = read_log("s0.log");
  REQUIRE(first.size() == 12);
  std::vector<std::string> golds;
  for (size_t i = 0; i < 3; ++i) {
    std::vector<std::optional<std::string>> preds;
    for (size_t s = 0; s < 4; ++s)
      if (!first[i * 4 + s]["prediction"].is_null())
        preds.push_back(first[i * 4 + s]["prediction"].get<std::string>());
    golds.push_back(eval::majority_answer(preds).value_or("100"));
  }
  const fs::path data = write_data("s.jsonl", golds);
  o.task = data.string();
  const json a = run(3, "a.jsonl"), b = run(8, "b.jsonl");   // an item's samples split or not
  CHECK(a["metrics"] == b["metrics"]);
  CHECK(io::read_file(fx.tmp.path() / "a.jsonl") == io::read_file(fx.tmp.path() / "b.jsonl"));
  CHECK(a["settings"]["decoding"] == "sampling");
  CHECK(a["settings"]["pass_k"] == json::array({1, 2, 4}));
  CHECK(a["counts"]["completions"] == 12);

  // Sample s of item i is what one request alone draws from stream i * 4 + s.
  const std::vector<json> recs = read_log("a.jsonl");
  REQUIRE(recs.size() == 12);
  infer::Engine engine(fx.pt.args, *fx.pt.store, ops::Context{}, infer::EngineOptions{1, 64});
  infer::GenerationConfig cfg;
  cfg.sampling = {1.5f, 0, 1.0f, o.seed};
  cfg.stop.max_new_tokens = 32;
  cfg.stop.stop_ids = {tok::TokenId(fx.pt.args.eos_token_id)};
  cfg.stop.stop_strings = eval::kGenStopStrings;
  const infer::TokenText text(*fx.pt.tokenizer);
  std::set<std::string> distinct;
  for (size_t r = 0; r < 12; ++r) {
    CAPTURE(r);
    CHECK(recs[r]["index"] == r / 4);
    CHECK(recs[r]["sample"] == r % 4);
    CHECK(recs[r]["completion"] == first[r]["completion"]);   // the answers changed, not these
    distinct.insert(recs[r]["completion"].get<std::string>());
    if (r % 5 != 0) continue;   // a few requests by hand: r = 0, 5, 10
    cfg.first_seq = r;
    const auto prompt = fx.doc(recs[r]["prompt"].get<std::string>());
    const auto out = infer::generate(engine, {{prompt.begin(), prompt.end()}}, cfg, &text);
    CHECK(recs[r]["completion"].get<std::string>() == out[0].text);
  }
  CHECK(distinct.size() > 1);   // sampled, not one greedy completion four times

  // The metrics from the logged samples: c_i per item, the estimator, the majority answer.
  const auto items = eval::load_gen(data);
  double em = 0, p1 = 0, p2 = 0, p4 = 0, maj = 0;
  size_t correct = 0;
  for (size_t i = 0; i < 3; ++i) {
    size_t c = 0;
    std::vector<std::optional<std::string>> preds;
    for (size_t s = 0; s < 4; ++s) {
      const json& rec = recs[i * 4 + s];
      c += rec["exact_match"].get<int>();
      preds.push_back(rec["prediction"].is_null()
                          ? std::nullopt
                          : std::optional<std::string>(rec["prediction"].get<std::string>()));
    }
    correct += c;
    em += double(c) / 4 / 3;
    p1 += eval::pass_at_k(4, c, 1) / 3;
    p2 += eval::pass_at_k(4, c, 2) / 3;
    p4 += (c > 0) / 3.0;
    maj += eval::exact_match(eval::majority_answer(preds), items[i].gold) / 3.0;
  }
  MESSAGE("correct samples: " << correct << " of 12; pass@2 " << p2 << ", maj@4 " << maj);
  CHECK(correct > 0);
  CHECK(p1 < p2);   // some item is neither all right nor all wrong
  CHECK(a["counts"]["correct"] == correct);
  CHECK(a["metrics"]["exact_match"]["value"].get<double>() == doctest::Approx(em));
  CHECK(a["metrics"]["pass@1"]["value"].get<double>() == doctest::Approx(p1));
  CHECK(a["metrics"]["pass@2"]["value"].get<double>() == doctest::Approx(p2));
  CHECK(a["metrics"]["pass@4"]["value"].get<double>() == doctest::Approx(p4));
  CHECK(a["metrics"]["maj@4"]["value"].get<double>() == doctest::Approx(maj));

  // Usage errors: several greedy samples, k beyond the samples, bad sampler values.
  o.common.log_samples.clear();
  o.temperature = 0;
  CHECK_THROWS_WITH_AS(eval::eval_generate(fx.pt, o), doctest::Contains("--samples 4 needs"),
                       UsageError);
  o.temperature = 1;
  o.top_k = 1;
  CHECK_THROWS_WITH_AS(eval::eval_generate(fx.pt, o), doctest::Contains("--samples 4 needs"),
                       UsageError);
  o.top_k = 0;
  o.pass_k = {5};
  CHECK_THROWS_WITH_AS(eval::eval_generate(fx.pt, o), doctest::Contains("--pass-k 5"),
                       UsageError);
  o.pass_k.clear();
  o.samples = 0;
  CHECK_THROWS_WITH_AS(eval::eval_generate(fx.pt, o), doctest::Contains("--samples"), UsageError);
  o.samples = 2;
  o.top_p = 0;
  CHECK_THROWS_AS(eval::eval_generate(fx.pt, o), UsageError);
  // One greedy completion: exact_match alone, as before.
  o.top_p = 1;
  o.samples = 1;
  o.temperature = 0;
  const json g = eval::eval_generate(fx.pt, o).to_json();
  CHECK(g["settings"]["decoding"] == "greedy");
  CHECK(g["metrics"].size() == 1);
  CHECK(g["metrics"].contains("exact_match"));
}
