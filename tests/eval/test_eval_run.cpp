// ds-eval end to end on a tiny random FP8 Hugging Face-format checkpoint: perplexity equals
// exp of the mean NLL computed independently with Transformer::forward_logits; sliding
// windows (stride = window) equal hand-made chunks and a window covering the document does
// not depend on the stride; batching does not change results; multiple choice accuracy is
// the one computed by hand from logits; greedy generation matches a hand-written greedy loop,
// in the plain and the chat layout (sampled generation: test_eval_sampling.cpp); with
// add_bos_token false, documents scored after EOS and prompts without BOS; the report JSON
// fields; the CLI's outputs, exit codes and one-line errors.
// reference: include/ds/eval/run.hpp; spec §6.1.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <thread>

#include "../model/hf_checkpoint_util.hpp"
#include "../model/model_test_util.hpp"
#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/data/shard.hpp"
#include "ds/eval/metrics.hpp"
#include "ds/eval/gen_tasks.hpp"
#include "ds/eval/run.hpp"
#include "ds/io/file.hpp"
#include "ds/ops/ops.hpp"
#include "eval_run_fixture.hpp"
#include "eval_test_util.hpp"

using namespace ds;
using ds::eval::testing::Cmd;
using ds::eval::testing::Fixture;
using ds::eval::testing::metric;
using ds::eval::testing::run_cli;
using ds::eval::testing::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kText =
    "the ant ran to the hill and the hen sat on the nest; then the ant and the hen ate the corn "
    "and the sun set on the hill. an ant, a hen, the end.";

}  // namespace

TEST_CASE("ds-eval perplexity: exp of the independently computed mean NLL; BPB; windows") {
  Fixture fx;
  const std::string text = std::string(kText).substr(0, 40);
  const fs::path f = fx.tmp.write("short.txt", text);
  const auto t = fx.doc(text);
  REQUIRE(t.size() < 64);
  eval::PerplexityOptions o;
  o.common = fx.common();
  o.files = {f.string()};
  const eval::EvalReport r = eval::eval_perplexity(fx.pt, o);
  const double sum = fx.nll(t), mean = sum / double(t.size() - 1);
  CHECK(metric(r, "nll") == doctest::Approx(mean).epsilon(1e-6));
  CHECK(metric(r, "perplexity") == doctest::Approx(std::exp(mean)).epsilon(1e-6));
  CHECK(metric(r, "bpb") ==
        doctest::Approx(sum / (std::log(2.0) * double(text.size()))).epsilon(1e-6));
  const json j = r.to_json();
  for (const char* k : {"task", "task_file", "task_fingerprint", "checkpoint_fingerprint",
                        "settings", "metrics", "counts"})
    CHECK(j.contains(k));
  CHECK(j["checkpoint_fingerprint"] == fx.pt.fingerprint);
  CHECK(j["counts"]["tokens"] == t.size() - 1);
  CHECK(j["counts"]["bytes"] == text.size());

  // The same document from token shards as ds-tokenize encode writes it (ending in EOS, which
  // is not scored): the same tokens, bytes and numbers as its text file.
  {
    const fs::path shards = fx.tmp.path() / "shards";
    std::vector<tok::TokenId> ids(t.begin() + 1, t.end());   // no BOS: the start is added
    ids.push_back(*fx.pt.tokenizer->eos_id());
    data::DatasetWriter w(shards, uint32_t(fx.pt.args.vocab_size),
                          fx.pt.tokenizer->fingerprint());
    w.add_document(ids);
    w.finish();
    eval::PerplexityOptions so;
    so.common = fx.common();
    so.data = shards.string();
    const json js = eval::eval_perplexity(fx.pt, so).to_json();
    CHECK(js["counts"]["tokens"] == t.size() - 1);
    CHECK(js["counts"]["bytes"] == text.size());
    CHECK(js["metrics"]["nll"]["value"].get<double>() == doctest::Approx(mean).epsilon(1e-6));
  }

  // A window covering the whole document: the stride does not matter.
  o.common.batch_size = 1;
  o.window = 64;
  o.stride = 7;
  CHECK(metric(eval::eval_perplexity(fx.pt, o), "nll") == doctest::Approx(mean).epsilon(1e-6));

  // A long document, stride = window = 16: disjoint chunks computed by hand.
  const fs::path g = fx.tmp.write("long.txt", kText);
  const auto lt = fx.doc(kText);
  REQUIRE(lt.size() > 64);
  double hand = 0;
  for (size_t b = 0; b + 1 < lt.size(); b += 16) {   // targets b+1..end; the last chunk
    const size_t end = std::min(b + 16, lt.size() - 1);  // keeps 16 inputs (more context)
    const size_t begin = end > 16 ? end - 16 : 0;
    hand += fx.nll(std::vector<tok::TokenId>(lt.begin() + std::ptrdiff_t(begin),
                                             lt.begin() + std::ptrdiff_t(end) + 1),
                   b + 1 - begin);
  }
  o.files = {g.string()};
  o.window = 16;
  o.stride = 16;
  const eval::EvalReport rl = eval::eval_perplexity(fx.pt, o);
  CHECK(metric(rl, "nll") == doctest::Approx(hand / double(lt.size() - 1)).epsilon(1e-6));
  // Overlapping windows: every token still scored once, with more context (a different value).
  o.stride = 4;
  const eval::EvalReport ro = eval::eval_perplexity(fx.pt, o);
  CHECK(ro.to_json()["counts"]["tokens"] == lt.size() - 1);
  CHECK(metric(ro, "nll") != doctest::Approx(metric(rl, "nll")).epsilon(1e-9));
  // Batching several windows / files per forward gives the same numbers.
  o.common.batch_size = 8;
  o.files = {g.string(), f.string()};
  o.common.log_samples = (fx.tmp.path() / "ppl_samples.jsonl").string();
  const eval::EvalReport two = eval::eval_perplexity(fx.pt, o);
  const double batched = metric(two, "nll");
  o.common.batch_size = 1;
  o.common.log_samples.clear();
  CHECK(metric(eval::eval_perplexity(fx.pt, o), "nll") == doctest::Approx(batched).epsilon(1e-6));
  // standard errors over the documents: none with one, the cluster formula's with two (each
  // document's sum and tokens from the sample log)
  const json j1 = r.to_json(), j2 = two.to_json();
  CHECK(j1["metrics"]["nll"]["stderr"].is_null());
  std::ifstream samples(fx.tmp.path() / "ppl_samples.jsonl");
  std::string l0, l1;
  REQUIRE(std::getline(samples, l0));
  REQUIRE(std::getline(samples, l1));
  const json d0 = json::parse(l0), d1 = json::parse(l1);
  const double s_long = d0["sum_nll"], s_short = d1["sum_nll"];
  const double n_long = d0["tokens"], n_short = d1["tokens"];
  const double R = (s_long + s_short) / (n_long + n_short);
  const double se = std::sqrt(2.0 * (std::pow(s_long - R * n_long, 2) +
                                     std::pow(s_short - R * n_short, 2))) /
                    (n_long + n_short);
  CHECK(j2["metrics"]["nll"]["stderr"].get<double>() == doctest::Approx(se).epsilon(1e-5));
  CHECK(j2["metrics"]["perplexity"]["stderr"].get<double>() ==
        doctest::Approx(std::exp(R) * se).epsilon(1e-5));
  CHECK(j2["metrics"]["bpb"]["stderr"].get<double>() > 0);
}

TEST_CASE("ds-eval perplexity: a FIM dataset's bytes are its text's, without the markers") {
  TempDir tmp;
  model::ModelArgs a = model::testing::micro_args();
  a.vocab_size = 267;   // the tiny tokenizer's 263 ids, one unused, and 3 FIM markers
  a.max_seq_len = 64;
  model::ParamStore ps;
  model::Transformer m(a, ps);
  ps.init(7);
  const fs::path ckpt = tmp.path() / "ckpt";
  model::testing::write_hf_checkpoint(ckpt, ps, a, {});
  json tj = json::parse(model::testing::tiny_tokenizer_json());
  int64_t next = 264;
  namespace sp = tok::special;
  for (std::string_view mk : {sp::kFimHole, sp::kFimBegin, sp::kFimEnd})
    tj["added_tokens"].push_back({{"id", next++}, {"content", std::string(mk)},
                                  {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                                  {"normalized", true}, {"special", false}});   // as V3's
  io::write_file_atomic(ckpt / "tokenizer.json", tj.dump());
  model::Pretrained pt = model::load_pretrained(ckpt);
  const tok::Tokenizer& tk = *pt.tokenizer;
  // the PSM form ds-tokenize encode writes: <begin> prefix <hole> suffix <end> middle EOS
  const std::string pre = "the ant ran ", mid = "to the hill", suf = " and the hen sat.";
  std::vector<tok::TokenId> ids{*tk.token_to_id(tok::special::kFimBegin)};
  tk.encode(pre, ids, false);
  ids.push_back(*tk.token_to_id(tok::special::kFimHole));
  tk.encode(suf, ids, false);
  ids.push_back(*tk.token_to_id(tok::special::kFimEnd));
  tk.encode(mid, ids, false);
  ids.push_back(*tk.eos_id());
  int n = 0;
  auto bytes_of = [&](const std::string& provenance, const std::vector<tok::TokenId>& doc) {
    const fs::path dir = tmp.path() / ("data" + std::to_string(n++));
    data::DatasetWriter w(dir, uint32_t(a.vocab_size), tk.fingerprint());
    w.add_document(doc);
    w.finish(provenance);
    eval::PerplexityOptions o;
    o.common.model = ckpt.string();
    o.common.threads = 1;
    o.common.progress = false;
    o.data = dir.string();
    const json r = eval::eval_perplexity(pt, o).to_json();
    return r["counts"]["bytes"].get<uint64_t>();
  };
  const uint64_t text = pre.size() + mid.size() + suf.size();
  const uint64_t marks = tok::special::kFimBegin.size() + tok::special::kFimHole.size() +
                         tok::special::kFimEnd.size();
  CHECK(bytes_of(R"({"fim_rate": 0.5})", ids) == text);
  // without --fim-rate the markers are text the document holds (match_added_tokens)
  CHECK(bytes_of(R"({"fim_rate": 0})", ids) == text + marks);
  // and so they are in a document of a FIM dataset that was not rewritten (not in PSM form)
  std::vector<tok::TokenId> plain(ids.begin() + 1, ids.end());
  CHECK(bytes_of(R"({"fim_rate": 0.5})", plain) == text + marks - tok::special::kFimBegin.size());
}

TEST_CASE("ds-eval mc: accuracy computed by hand from logits; sample log") {
  Fixture fx;
  const fs::path data = fx.tmp.write(
      "items.jsonl",
      "{\"q\": \"the ant ran to the\", \"a\": \"hill\", \"b\": \"sun and the corn\", \"label\": "
      "0}\n"
      "{\"q\": \"the hen sat on\", \"a\": \"a nest\", \"b\": \"the end\", \"label\": 1}\n"
      "{\"q\": \"then the ant\", \"a\": \"ate\", \"b\": \"and the hen ate the corn\", \"label\": "
      "1}\n"
      "{\"q\": \"an ant, a hen,\", \"a\": \"the end.\", \"b\": \"the sun\", \"label\": 0}\n");
  eval::McOptions o;
  o.common = fx.common(3);
  o.common.log_samples = (fx.tmp.path() / "samples.jsonl").string();
  o.task = data.string();
  o.context_field = "q";
  o.choice_fields = "a,b";
  o.gold_field = "label";
  const eval::EvalReport r = eval::eval_mc(fx.pt, o);

  const std::vector<std::array<std::string, 3>> items = {
      {"the ant ran to the", "hill", "sun and the corn"},
      {"the hen sat on", "a nest", "the end"},
      {"then the ant", "ate", "and the hen ate the corn"},
      {"an ant, a hen,", "the end.", "the sun"}};
  const std::vector<size_t> gold = {0, 1, 1, 0};
  size_t correct = 0, correct_norm = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    double best = -1e30, best_norm = -1e30;
    size_t pred = 0, pred_norm = 0;
    for (size_t c = 1; c <= 2; ++c) {
      auto t = fx.doc(items[i][0]);
      const size_t start = t.size();
      fx.pt.tokenizer->encode(" " + items[i][c], t, false);
      const double ll = -fx.nll(t, start);
      const double norm = ll / double(items[i][c].size() + 1);
      if (ll > best) best = ll, pred = c - 1;
      if (norm > best_norm) best_norm = norm, pred_norm = c - 1;
    }
    correct += pred == gold[i];
    correct_norm += pred_norm == gold[i];
  }
  const double acc = double(correct) / 4;
  CHECK(metric(r, "acc") == doctest::Approx(acc));
  CHECK(metric(r, "acc_norm") == doctest::Approx(double(correct_norm) / 4));
  CHECK(r.metrics[0].stderr_.value() == doctest::Approx(std::sqrt(acc * (1 - acc) / 4)));
  const std::string log = io::read_file(o.common.log_samples);
  CHECK(std::count(log.begin(), log.end(), '\n') == 4);

  // Errors: an unknown field names the file, line and field; an empty file.
  o.common.log_samples.clear();
  o.context_field = "question";
  CHECK_THROWS_WITH_AS(eval::eval_mc(fx.pt, o), doctest::Contains("question"), FormatError);
  o.task = fx.tmp.write("empty.jsonl", "").string();
  o.context_field = "q";
  CHECK_THROWS_AS(eval::eval_mc(fx.pt, o), FormatError);

  // Flag errors: empty choice field names, --max-len past the model, FILE-only flags.
  o.task = data.string();
  for (const char* bad : {"a,b,", "a,,b", ",a"}) {
    o.choice_fields = bad;
    INFO(bad);
    CHECK_THROWS_AS(eval::eval_mc(fx.pt, o), UsageError);
  }
  o.choice_fields = "a,b";
  o.max_len = fx.pt.args.max_seq_len + 1;
  CHECK_THROWS_WITH_AS(eval::eval_mc(fx.pt, o), doctest::Contains("max_seq_len"), UsageError);
  o.max_len = fx.pt.args.max_seq_len;
  CHECK(eval::eval_mc(fx.pt, o).metrics.size() == r.metrics.size());
  o.max_len = 1;   // no room for any choice after the BOS: the data is at fault, file:line
  CHECK_THROWS_WITH_AS(eval::eval_mc(fx.pt, o), doctest::Contains("items.jsonl:1: choice 0"),
                       FormatError);
  o.max_len = 0;
  eval::McOptions piqa;
  piqa.common = o.common;
  piqa.data = data.string();
  piqa.gold_base = 1;
  CHECK_THROWS_WITH_AS(eval::eval_mc(fx.pt, piqa), doctest::Contains("--gold-base"), UsageError);
  piqa.gold_base = 0;
  piqa.context_template = "Q: {context}";
  CHECK_THROWS_WITH_AS(eval::eval_mc(fx.pt, piqa), doctest::Contains("task FILE only"),
                       UsageError);
  // run_mc checks the flags before it loads the model (here: a directory without one).
  o.choice_fields = "a,";
  o.common.model = fx.tmp.path().string();
  CHECK_THROWS_WITH_AS(eval::run_mc(o), doctest::Contains("--choice-fields"), UsageError);
  o.choice_fields = "a";   // one choice: no multiple choice (it failed later, exit 1)
  CHECK_THROWS_WITH_AS(eval::run_mc(o), doctest::Contains("at least two choice fields"),
                       UsageError);
}

TEST_CASE("ds-eval generate: greedy exact match equals a hand-written greedy loop") {
  Fixture fx;
  const fs::path data = fx.tmp.write("gen.jsonl",
      "{\"question\": \"the ant ran to\", \"answer\": \"the hill #### 4\"}\n"
      "{\"question\": \"an ant, a hen\", \"answer\": \"the end #### 7\"}\n");
  eval::GenOptions o;
  o.common = fx.common(2);
  o.common.log_samples = (fx.tmp.path() / "gen_samples.jsonl").string();
  o.task = data.string();
  o.shots = 0;
  o.max_new_tokens = 6;
  const eval::EvalReport r = eval::eval_generate(fx.pt, o);
  CHECK(r.to_json()["metrics"].contains("exact_match"));
  CHECK(r.to_json()["counts"]["items"] == 2);
  std::ifstream in(o.common.log_samples);
  std::string line;
  std::getline(in, line);
  const json rec = json::parse(line);
  // Hand-written greedy decoding of the first prompt with forward_logits.
  auto t = fx.doc("Question: the ant ran to\nAnswer:");
  std::vector<tok::TokenId> gen;
  for (int k = 0; k < 6; ++k) {
    Tensor in_t = Tensor::empty({1, int64_t(t.size())}, DType::i32);
    for (size_t i = 0; i < t.size(); ++i) in_t.i32()[i] = int32_t(t[i]);
    Tensor logits;
    ops::Context ctx;
    fx.pt.model->forward_logits(ctx, in_t, logits);
    const float* row = logits.f32() + int64_t(t.size() - 1) * fx.pt.args.vocab_size;
    const tok::TokenId best =
        tok::TokenId(std::max_element(row, row + fx.pt.args.vocab_size) - row);
    if (int64_t(best) == fx.pt.args.eos_token_id || best == *fx.pt.tokenizer->eos_id()) break;
    gen.push_back(best);
    t.push_back(best);
  }
  const std::string want = fx.pt.tokenizer->decode(gen);
  CHECK(rec["completion"].get<std::string>() == want.substr(0, want.find("Question:")));
}

namespace {

// Greedy decoding of `t` with forward_logits until EOS or `max_new` tokens.
std::vector<tok::TokenId> greedy_by_hand(Fixture& fx, std::vector<tok::TokenId> t, int max_new) {
  std::vector<tok::TokenId> gen;
  for (int k = 0; k < max_new; ++k) {
    Tensor in_t = Tensor::empty({1, int64_t(t.size())}, DType::i32);
    for (size_t i = 0; i < t.size(); ++i) in_t.i32()[i] = int32_t(t[i]);
    Tensor logits;
    ops::Context ctx;
    fx.pt.model->forward_logits(ctx, in_t, logits);
    const float* row = logits.f32() + int64_t(t.size() - 1) * fx.pt.args.vocab_size;
    const tok::TokenId best =
        tok::TokenId(std::max_element(row, row + fx.pt.args.vocab_size) - row);
    if (int64_t(best) == fx.pt.args.eos_token_id || best == *fx.pt.tokenizer->eos_id()) break;
    gen.push_back(best);
    t.push_back(best);
  }
  return gen;
}

}  // namespace

TEST_CASE("ds-eval generate --chat: rendered turns, EOS stop, greedy equals a hand-written loop") {
  Fixture fx;
  REQUIRE(fx.pt.chat_template.has_value());   // no tokenizer_config.json: the built-in template
  const fs::path data = fx.tmp.write("chat.jsonl",
      "{\"question\": \"What is 3 + 4?\", \"answer\": \"3 + 4 = 7. #### 7\"}\n"
      "{\"question\": \"What is 2 + 2?\", \"answer\": \"2 + 2 = 4. #### 4\"}\n"
      "{\"question\": \"What is 5 + 1?\", \"answer\": \"5 + 1 = 6. #### 6\"}\n");
  eval::GenOptions o;
  o.common = fx.common(2);
  o.common.log_samples = (fx.tmp.path() / "chat_samples.jsonl").string();
  o.task = data.string();
  o.chat = true;
  o.system = "Be brief.";
  o.max_new_tokens = 8;
  const eval::EvalReport r = eval::eval_generate(fx.pt, o);
  const json j = r.to_json();
  CHECK(j["settings"]["shots"] == 0);   // the chat default
  CHECK(j["settings"]["chat"] == true);
  CHECK(j["settings"]["system"] == "Be brief.");
  CHECK(j["counts"]["items"] == 3);

  const auto items = eval::load_gen(data);
  std::ifstream in(o.common.log_samples);
  std::string line;
  size_t correct = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    REQUIRE(std::getline(in, line));
    const json rec = json::parse(line);
    const std::string prompt =
        fx.pt.chat_template->render(eval::build_chat_messages(items[i], {}, o.system), true).text;
    CHECK(rec["prompt"].get<std::string>() == prompt);
    // The rendered text starts with the BOS text, matched as the BOS token (no second BOS).
    const auto t = fx.pt.tokenizer->encode(prompt, /*match_added_tokens=*/true);
    CHECK(t.front() == *fx.pt.tokenizer->bos_id());
    CHECK(std::count(t.begin(), t.end(), *fx.pt.tokenizer->bos_id()) == 1);
    // EOS is the only stop: the whole greedy completion, no "Question:" cut.
    const std::string want = fx.pt.tokenizer->decode(greedy_by_hand(fx, t, 8));
    CHECK(rec["completion"].get<std::string>() == want);
    const bool ok = eval::exact_match(eval::AnswerExtractor()(want), items[i].gold);
    CHECK(rec["exact_match"].get<int>() == int(ok));
    correct += ok;
  }
  CHECK(metric(r, "exact_match") == doctest::Approx(double(correct) / 3));

  // One shot: the other items' questions and answers become earlier turns.
  o.shots = 1;
  o.common.log_samples.clear();
  CHECK(eval::eval_generate(fx.pt, o).to_json()["settings"]["shots"] == 1);
  // --system without --chat; shots below -1.
  o.chat = false;
  CHECK_THROWS_WITH_AS(eval::eval_generate(fx.pt, o), doctest::Contains("--system needs --chat"),
                       UsageError);
  o.system.clear();
  o.shots = -2;
  CHECK_THROWS_AS(eval::eval_generate(fx.pt, o), UsageError);
  // The default shot count: 8 in the plain layout, 0 in the chat layout.
  o.shots = -1;
  CHECK(eval::effective_shots(o) == 8);
  o.chat = true;
  CHECK(eval::effective_shots(o) == 0);
}

TEST_CASE("ds-eval CLI: report, exit codes, one-line errors") {
  Fixture fx;
  const fs::path f = fx.tmp.write("t.txt", kText);
  const fs::path out = fx.tmp.path() / "report.json";
  const std::string model = " --model " + fx.ckpt.string() + " --threads 1 --log-level warn";
  Cmd c = run_cli("perplexity" + model + " --window 32 --out " + out.string() + " " + f.string());
  INFO(c.out);
  CHECK(c.rc == 0);
  const json j = json::parse(io::read_file(out));
  CHECK(j["task"] == "perplexity");
  CHECK(j["metrics"]["bpb"]["value"].get<double>() > 0);
  c = run_cli("perplexity" + model + " " + f.string());   // report on stdout
  CHECK(c.rc == 0);
  CHECK(json::parse(c.out)["settings"]["window"] == 64);
  CHECK(json::parse(c.out)["settings"]["batch_size"] == 8);   // log-likelihoods' last bits

  auto one_line_error = [](const Cmd& r, int rc, const std::string& needle) {
    INFO(r.out);
    CHECK(r.rc == rc);
    CHECK(r.out.find(needle) != std::string::npos);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  };
  one_line_error(run_cli("perplexity" + model + " --device tpu " + f.string()), 2, "--device");
  one_line_error(
      run_cli("perplexity --model " + fx.tmp.path().string() + " --log-level warn " + f.string()),
      1, "not a model checkpoint");
  one_line_error(run_cli("perplexity" + model + " " + fx.tmp.write("e.txt", "").string()), 1,
                 "empty file");
  one_line_error(run_cli("perplexity" + model + " " +
                         fx.tmp.write("latin1.txt", "caf\xe9 au lait\n").string()),
                 1, "latin1.txt: invalid UTF-8 at byte 3");
  one_line_error(run_cli("perplexity" + model), 2, "either --data");
  one_line_error(run_cli("mc" + model + " --task piqa"), 2, "needs --data");
  // an output naming an input, or both outputs naming one file: refused, the input kept
  one_line_error(run_cli("perplexity" + model + " --out " + f.string() + " " + f.string()), 2,
                 "is the input file");
  CHECK(io::read_file(f) == kText);
  one_line_error(run_cli("perplexity" + model + " --out " + out.string() + " --log-samples " +
                         (fx.tmp.path() / "." / "report.json").string() + " " + f.string()),
                 2, "the same file");
  const fs::path piqa = fx.tmp.write("valid.jsonl", "{}\n");
  const fs::path piqa_labels = fx.tmp.write("valid-labels.lst", "0\n");
  for (const fs::path& in : {piqa, piqa_labels})
    one_line_error(run_cli("mc" + model + " --task piqa --data " + piqa.string() + " --out " +
                           in.string()),
                   2, "is the input file");
  // ... nor a file of the checkpoint (--out ckpt/model.safetensors replaced the weights)
  for (const fs::directory_entry& e : fs::directory_iterator(fx.ckpt)) {
    const std::string before = io::read_file(e.path());
    for (const char* flag : {" --out ", " --log-samples "})
      one_line_error(run_cli("perplexity" + model + flag + e.path().string() + " " + f.string()),
                     2, "would overwrite");
    CHECK(io::read_file(e.path()) == before);
  }
  // ... nor through a symbolic link to one (a relative link and an absolute one)
  const fs::path config = fx.ckpt / "config.json";
  const std::string config_before = io::read_file(config);
  fs::create_symlink(config, fx.tmp.path() / "abs-link.json");
  fs::create_symlink(fs::relative(fx.ckpt, fx.tmp.path()) / "config.json",
                     fx.tmp.path() / "rel-link.json");
  for (const char* link : {"abs-link.json", "rel-link.json"})
    for (const char* flag : {" --out ", " --log-samples "})
      one_line_error(run_cli("perplexity" + model + flag + (fx.tmp.path() / link).string() +
                             " " + f.string()),
                     2, "would overwrite config.json of the input directory");
  CHECK(io::read_file(config) == config_before);

  // generate --chat end to end through the CLI.
  const fs::path g =
      fx.tmp.write("g.jsonl", "{\"question\": \"What is 1 + 2?\", \"answer\": \"#### 3\"}\n");
  c = run_cli("generate" + model + " --task " + g.string() +
              " --chat --system hi --max-new-tokens 4");
  INFO(c.out);
  CHECK(c.rc == 0);
  const json gj = json::parse(c.out);
  CHECK(gj["settings"]["chat"] == true);
  CHECK(gj["counts"]["items"] == 1);
  one_line_error(run_cli("generate" + model + " --task " + g.string() + " --system hi --shots 0"),
                 2, "--system needs --chat");
  // sampled: --pass-k takes a comma-separated list
  const std::string gen = "generate" + model + " --task " + g.string() +
                          " --shots 0 --max-new-tokens 4 --samples ";
  c = run_cli(gen + "3 --temperature 0.8 --top-p 0.9 --pass-k 2,1");
  CHECK(c.rc == 0);
  const json sj = json::parse(c.out);
  CHECK(sj["settings"]["pass_k"] == json::array({1, 2}));
  CHECK(sj["metrics"].contains("maj@3"));
  one_line_error(run_cli(gen + "2"), 2, "--samples 2 needs sampled decoding");
  one_line_error(run_cli("generate" + model + " --task " + g.string() + " --log-samples " +
                         g.string()),
                 2, "is the input file");
  CHECK(io::read_file(g).find("What is 1 + 2?") != std::string::npos);
}

TEST_CASE("ds-eval outputs and inputs: a FIFO read once, a device written into, no half result") {
  Fixture fx;
  const fs::path f = fx.tmp.write("t.txt", kText);
  const std::string model = " --model " + fx.ckpt.string() + " --threads 1 --log-level warn";
  // a FIFO (a pipe, <(zcat …)): parsed and fingerprinted from the one read; a second open
  // waited forever for a writer
  const fs::path fifo = fx.tmp.path() / "doc.fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::thread writer([&] { io::write_file_atomic(fifo, kText); });
  Cmd c = run_cli("perplexity" + model + " --window 32 " + fifo.string());
  const int unblock = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);   // should the run not read
  writer.join();
  ::close(unblock);
  INFO(c.out);
  REQUIRE(c.rc == 0);
  CHECK(json::parse(c.out)["task_fingerprint"] == hex64(xxh64(kText)));
  // --out a device: written into, never replaced by a file; a failed report write (here a
  // full device) publishes no sample log either
  if (fs::exists("/dev/full")) {
    const fs::path log = fx.tmp.path() / "samples.jsonl";
    c = run_cli("perplexity" + model + " --out /dev/full --log-samples " + log.string() + " " +
                f.string());
    INFO(c.out);
    CHECK(c.rc == 1);
    CHECK(c.out.find("/dev/full: write failed") != std::string::npos);
    CHECK(fs::is_character_file("/dev/full"));
    CHECK_FALSE(fs::exists(log));
    for (const auto& e : fs::directory_iterator(fx.tmp.path()))
      CHECK(e.path().string().find(".tmp.") == std::string::npos);
  }
}

TEST_CASE("ds-eval SIGTERM mid-run: exit 143, neither report nor sample log, no temporary file") {
  Fixture fx;
  std::string items;   // enough generation that the signal lands mid-run
  for (int i = 0; i < 3000; ++i)
    items += "{\"question\": \"What is " + std::to_string(i) + " + 1?\", \"answer\": \"#### 1\"}\n";
  const fs::path g = fx.tmp.write("g.jsonl", items);
  const fs::path log = fx.tmp.path() / "samples.jsonl", out = fx.tmp.path() / "report.json";
  const fs::path err = fx.tmp.path() / "stderr.txt";
  const std::vector<std::string> args{DS_EVAL_BIN, "generate", "--model", fx.ckpt.string(),
                                      "--threads", "1", "--log-level", "warn", "--batch-size",
                                      "1", "--max-new-tokens", "8", "--task", g.string(),
                                      "--log-samples", log.string(), "--out", out.string()};
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  // the sample log's temporary file appears with the first answered item: mid-evaluation
  auto temp_files = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator(fx.tmp.path()))
      n += e.path().filename().string().find(".tmp.") != std::string::npos;
    return n;
  };
  int status = 0;
  bool started = false;
  for (int i = 0; i < 60000 && !started; ++i) {
    started = temp_files() > 0;
    if (!started && ::waitpid(pid, &status, WNOHANG) == pid) break;   // ended early
    if (!started) ::usleep(1000);
  }
  REQUIRE_MESSAGE(started, io::read_file(err));
  ::kill(pid, SIGTERM);
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO(io::read_file(err));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 128 + SIGTERM);
  CHECK_FALSE(fs::exists(log));
  CHECK_FALSE(fs::exists(out));
  CHECK(temp_files() == 0);
}

TEST_CASE("add_bos_token false: perplexity after EOS, mc and generate prompts without BOS") {
  // A model trained on data without BOS (ds-pretrain writes add_bos_token false then): the
  // scored documents start from EOS, the token before a document in such data, and prompts
  // start with their text, as transformers encodes them.
  Fixture fx;
  io::write_file_atomic(fx.ckpt / "tokenizer_config.json", "{\"add_bos_token\": false}");
  fx.pt = model::load_pretrained(fx.ckpt);
  REQUIRE_FALSE(fx.pt.add_bos_token);
  const tok::TokenId eos = *fx.pt.tokenizer->eos_id();
  auto text_ids = [&](const std::string& s) { return fx.pt.tokenizer->encode(s, false); };

  const std::string text = std::string(kText).substr(0, 40);
  eval::PerplexityOptions po;
  po.common = fx.common();
  po.files = {fx.tmp.write("short.txt", text).string()};
  const eval::EvalReport pr = eval::eval_perplexity(fx.pt, po);
  std::vector<tok::TokenId> t{eos};
  fx.pt.tokenizer->encode(text, t, false);
  CHECK(metric(pr, "nll") == doctest::Approx(fx.nll(t) / double(t.size() - 1)).epsilon(1e-6));
  CHECK(metric(pr, "nll") != doctest::Approx(fx.nll(fx.doc(text)) / double(t.size() - 1)));
  CHECK(pr.to_json()["settings"]["document_start"] == "eos");

  const fs::path items = fx.tmp.write(
      "items.jsonl", "{\"q\": \"the hen sat on\", \"a\": \"a nest\", \"b\": \"the end\", "
                     "\"label\": 1}\n");
  eval::McOptions mo;
  mo.common = fx.common();
  mo.common.log_samples = (fx.tmp.path() / "mc.jsonl").string();
  mo.task = items.string();
  mo.context_field = "q";
  mo.choice_fields = "a,b";
  mo.gold_field = "label";
  eval::eval_mc(fx.pt, mo);
  const json rec = json::parse(io::read_file(mo.common.log_samples));
  const auto q = text_ids("the hen sat on");
  const std::vector<tok::TokenId> choice[2] = {text_ids(" a nest"), text_ids(" the end")};
  for (size_t c = 0; c < 2; ++c) {
    auto seq = q;
    seq.insert(seq.end(), choice[c].begin(), choice[c].end());
    CHECK(rec["loglik"][c].get<double>() ==
          doctest::Approx(-fx.nll(seq, q.size())).epsilon(1e-6));
  }
  // --max-len cuts the prompt from the left, but one prompt token stays to condition on
  const size_t longer = choice[1].size() > choice[0].size() ? 1 : 0;
  mo.max_len = int64_t(choice[longer].size() + 1);
  eval::eval_mc(fx.pt, mo);
  std::vector<tok::TokenId> cut{q.back()};
  cut.insert(cut.end(), choice[longer].begin(), choice[longer].end());
  CHECK(json::parse(io::read_file(mo.common.log_samples))["loglik"][longer].get<double>() ==
        doctest::Approx(-fx.nll(cut, 1)).epsilon(1e-6));

  eval::GenOptions go;
  go.common = fx.common(1);
  go.common.log_samples = (fx.tmp.path() / "gen_log.jsonl").string();
  go.task =
      fx.tmp.write("gen.jsonl", "{\"question\": \"the ant ran to\", \"answer\": \"#### 4\"}\n")
          .string();
  go.shots = 0;
  go.max_new_tokens = 6;
  eval::eval_generate(fx.pt, go);
  const std::string want =
      fx.pt.tokenizer->decode(greedy_by_hand(fx, text_ids("Question: the ant ran to\nAnswer:"), 6));
  CHECK(json::parse(io::read_file(go.common.log_samples))["completion"].get<std::string>() ==
        want.substr(0, want.find("Question:")));

  // true (or no tokenizer_config.json, the fixture's): BOS first, as before
  io::write_file_atomic(fx.ckpt / "tokenizer_config.json", "{\"add_bos_token\": true}");
  fx.pt = model::load_pretrained(fx.ckpt);
  const eval::EvalReport pb = eval::eval_perplexity(fx.pt, po);
  CHECK(metric(pb, "nll") == doctest::Approx(fx.nll(fx.doc(text)) / double(t.size() - 1)));
  CHECK(pb.to_json()["settings"]["document_start"] == "bos");
  io::write_file_atomic(fx.ckpt / "tokenizer_config.json", "{\"add_bos_token\": 1}");
  CHECK_THROWS_WITH_AS(model::load_pretrained(fx.ckpt),
                       doctest::Contains("add_bos_token must be true or false"), FormatError);
}
