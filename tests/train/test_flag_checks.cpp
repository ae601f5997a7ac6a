// Where a training run may write and what it may resume: --metrics outside --out's checkpoint
// names and the --init checkpoint (files merely named like them are fine); --resume DIR into
// an --out that already holds checkpoints (its newest, by any spelling; an older one refused;
// another run's refused; the same branch origin again continues --out's newest); which steps
// a run writes (CheckpointMark).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "../temp_dir.hpp"
#include "ds/core/error.hpp"
#include "ds/train/flag_checks.hpp"
#include "ds/train/trainer.hpp"

namespace fs = std::filesystem;
using ds::UsageError;
using ds::testing::TempDir;

namespace {

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

// A checkpoint directory as resolve_resume sees it: config.json and trainer_state.json.
fs::path fake_checkpoint(const fs::path& dir, const std::string& branched_from = "") {
  fs::create_directories(dir / "training_state");
  write_text(dir / "config.json", "{}");
  std::string state = R"({"format": "ds-trainer-state", "version": 1, "kind": "pretrain",
      "step": 1, "tokens_seen": 0, "data": {"epoch": 0, "position": 0}, "nonfinite_skipped": 0,
      "optimizer_steps": 1, "seed": 7, "seq_len": 8, "total_steps": 9, "total_tokens": 72)";
  if (!branched_from.empty()) state += ", \"branched_from\": \"" + branched_from + "\"";
  write_text(dir / "training_state" / "trainer_state.json", state + "}");
  return dir;
}

}  // namespace

TEST_CASE("--metrics: not among --out's checkpoints, not inside --init") {
  TempDir tmp("metrics");
  const std::string out = (tmp / "run").string(), init = (tmp / "init").string();
  fs::create_directories(tmp / "init");
  using ds::train::check_metrics_path;
  for (const char* ok : {"run/metrics.jsonl", "run/step-metrics.jsonl", "run/.metrics.jsonl",
                         "run/logs/m.jsonl", "m.jsonl", "run/step-00000002/../m.jsonl"})
    CHECK_NOTHROW(check_metrics_path((tmp / ok).string(), out, {{init, "--init"}}));
  for (const char* bad : {"run/step-00000002", "run/step-00000002/m.jsonl",
                          "run/.step-00000002.tmp.host.12/m.jsonl"})
    CHECK_THROWS_WITH_AS(check_metrics_path((tmp / bad).string(), out),
                         doctest::Contains("inside --out's checkpoint namespace"), UsageError);
  CHECK_THROWS_WITH_AS(check_metrics_path((tmp / "init/m.jsonl").string(), out,
                                          {{init, "--init"}}),
                       doctest::Contains("inside the --init input"), UsageError);
  CHECK_THROWS_WITH_AS(check_metrics_path(out, out), doctest::Contains("the --out directory"),
                       UsageError);
}

TEST_CASE("--resume DIR into an --out holding checkpoints") {
  TempDir tmp("resume");
  using ds::train::resolve_resume;
  const fs::path run = tmp / "run", other = tmp / "other";
  fake_checkpoint(run / "step-00000002");
  const fs::path newest = fake_checkpoint(run / "step-00000004");
  const fs::path foreign = fake_checkpoint(other / "step-00000003");
  // an empty or missing --out takes any checkpoint
  CHECK(resolve_resume(foreign.string(), (tmp / "fresh").string()) == foreign);
  // --out's newest, however it is spelled
  fs::create_directory_symlink(newest, tmp / "link");
  for (const fs::path& p : {newest, run / "step-00000004/", run / "step-00000004/.", tmp / "link"})
    CHECK(resolve_resume(p.string(), run.string()) == p);
  CHECK_THROWS_WITH_AS(resolve_resume((run / "step-00000002").string(), run.string()),
                       doctest::Contains("holds later checkpoints (up to step-00000004)"),
                       UsageError);
  CHECK_THROWS_WITH_AS(resolve_resume(foreign.string(), run.string()),
                       doctest::Contains("already holds checkpoints (up to step-00000004) of "
                                         "another run"),
                       UsageError);
  // a branch: --out's newest records the origin; the same --resume DIR continues it
  const fs::path branch = tmp / "branch";
  const std::string origin = ds::train::branch_origin(foreign, branch.string(), "");
  CHECK(origin == fs::weakly_canonical(foreign).string());
  CHECK(ds::train::branch_origin(run / "step-00000002", run.string(), "kept") == "kept");
  fake_checkpoint(branch / "step-00000005", origin);
  CHECK(resolve_resume(foreign.string(), branch.string()) == branch / "step-00000005");
  CHECK_THROWS_WITH_AS(resolve_resume((run / "step-00000002").string(), branch.string()),
                       doctest::Contains(("of a run branched from " + origin).c_str()), UsageError);
}

TEST_CASE("CheckpointMark: no second write of a step, none of the resumed one") {
  ds::train::CheckpointMark fresh;   // a fresh run saves from step 0 on
  CHECK(fresh.needs_save(0));
  CHECK(fresh.checkpoint("run", 0) == fs::path("run") / "step-00000000");
  fresh.saved_step = 5;
  CHECK_FALSE(fresh.needs_save(5));   // --save-every wrote it, then --stop-after
  CHECK(fresh.needs_save(6));
  ds::train::CheckpointMark resumed{"other/step-00000004", 4, -1};
  CHECK_FALSE(resumed.needs_save(4));   // no step ran since: the resumed checkpoint holds it
  CHECK(resumed.checkpoint("run", 4) == fs::path("other/step-00000004"));
  CHECK(resumed.needs_save(5));
  CHECK(resumed.checkpoint("run", 5) == fs::path("run") / "step-00000005");
}
