// write_report (lib/eval/run_internal.hpp): the report and its --log-samples file are published
// together; a report whose rename fails takes the already published log back.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "../../lib/eval/run_internal.hpp"
#include "ds/core/error.hpp"
#include "ds/eval/report.hpp"
#include "eval_test_util.hpp"

using namespace ds::eval;
using ds::eval::testing::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

TEST_CASE("write_report: a report that cannot be published takes its sample log back") {
  TempDir d;
  CommonEvalOptions o;
  o.out = (d.path() / "report.json").string();
  o.log_samples = (d.path() / "samples.jsonl").string();
  EvalReport r;
  r.task = "piqa";
  {   // the ordinary case: both files
    SampleLog log(o.log_samples);
    log.write(json{{"x", 1}});
    detail::write_report(r, o, &log);
  }
  CHECK(fs::is_regular_file(o.out));
  CHECK(fs::is_regular_file(o.log_samples));
  // report.json a non-empty directory: its rename fails after the log's
  fs::remove(o.out);
  fs::create_directories(fs::path(o.out) / "x");
  {
    SampleLog log(o.log_samples);
    log.write(json{{"x", 2}});
    CHECK_THROWS_AS(detail::write_report(r, o, &log), ds::IoError);
  }
  CHECK_FALSE(fs::exists(o.log_samples));
  CHECK(fs::is_directory(o.out));
  size_t entries = 0;   // no temporary file either
  for (const auto& e : fs::directory_iterator(d.path())) entries += e.path() != fs::path(o.out);
  CHECK(entries == 0);
}
