// Report JSON layout (version, fingerprints, settings, metrics with stderr, counts), file
// fingerprint = xxh64 of the bytes, and --log-samples JSONL written atomically.
#include <doctest/doctest.h>

#include <fstream>
#include <iterator>
#include <sstream>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/eval/report.hpp"
#include "eval_test_util.hpp"

using namespace ds::eval;
using ds::eval::testing::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

TEST_CASE("report JSON") {
  TempDir d;
  const auto f = d.write("task.jsonl", "{\"a\":1}\n");
  CHECK(file_fingerprint(f) == ds::hex64(ds::xxh64("{\"a\":1}\n")));
  CHECK_THROWS_AS(file_fingerprint(d.path() / "missing"), ds::IoError);

  EvalReport r;
  r.task = "piqa";
  r.task_file = f.string();
  r.task_fingerprint = file_fingerprint(f);
  r.checkpoint_fingerprint = "0123456789abcdef";
  r.settings["num_fewshot"] = 0;
  r.add("acc", accuracy(3, 4));
  r.metrics.push_back({"bpb", 0.5, std::nullopt});
  r.counts.push_back({"items", 4});
  const json j = json::parse(r.dump());
  CHECK(j["ds_eval_report_version"] == kReportVersion);
  CHECK(j["task"] == "piqa");
  CHECK(j["task_fingerprint"] == r.task_fingerprint);
  CHECK(j["checkpoint_fingerprint"] == "0123456789abcdef");
  CHECK(j["settings"]["num_fewshot"] == 0);
  CHECK(j["metrics"]["acc"]["value"].get<double>() == doctest::Approx(0.75));
  CHECK(j["metrics"]["acc"]["stderr"].get<double>() ==
        doctest::Approx(std::sqrt(0.75 * 0.25 / 4)));
  CHECK(j["metrics"]["bpb"]["stderr"].is_null());
  CHECK(j["counts"]["items"] == 4);
}

TEST_CASE("sample log writes JSON Lines on close only") {
  TempDir d;
  const auto p = d.path() / "samples.jsonl";
  McItem item{7, "Q", {"a", "b"}, 1};
  McRequest req{"Q", {" a", " b"}};
  const McOutcome o{1, 0, true, false};
  {
    SampleLog log(p);
    log.write(mc_sample_record(0, item, req, std::vector<double>{-2.0, -1.0}, o));
    GenItem g{3, "q", "#### 4", "4"};
    log.write(gen_sample_record(1, g, "P", "4 \xFF", std::string("4"), true, "stop"));
    CHECK_FALSE(fs::exists(p));
    log.close();
  }
  std::ifstream in(p);
  std::string l1, l2, l3;
  std::getline(in, l1);
  std::getline(in, l2);
  CHECK_FALSE(std::getline(in, l3));
  const json a = json::parse(l1), b = json::parse(l2);
  CHECK(a["line"] == 7);
  CHECK(a["pred"] == 1);
  CHECK(a["acc"] == 1);
  CHECK(a["acc_norm"] == 0);
  CHECK(a["loglik"][1].get<double>() == -1.0);
  CHECK(b["prediction"] == "4");
  CHECK(b["finish_reason"] == "stop");
  CHECK(b["completion"] == "4 \xEF\xBF\xBD");   // invalid UTF-8 replaced
  {   // the report carries the log's XXH64: a new log with an old report is told apart
    std::ifstream whole(p, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(whole)),
                            std::istreambuf_iterator<char>());
    SampleLog again(d.path() / "again.jsonl");
    for (const std::string& line : {l1, l2}) again.write(json::parse(line));
    CHECK(again.fingerprint() == ds::hex64(ds::xxh64(bytes)));
    EvalReport r;
    CHECK_FALSE(json::parse(r.dump()).contains("samples_fingerprint"));
    r.samples_fingerprint = again.fingerprint();
    CHECK(json::parse(r.dump())["samples_fingerprint"] == ds::hex64(ds::xxh64(bytes)));
  }
  {
    SampleLog abandoned(d.path() / "gone.jsonl");
    abandoned.write(json{{"x", 1}});
  }
  CHECK_FALSE(fs::exists(d.path() / "gone.jsonl"));
}
