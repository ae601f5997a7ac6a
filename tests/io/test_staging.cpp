// Staged-output names carry host and pid; remove_stale_staging removes only this host's
// entries of the given output whose process is gone and whose lock is free; CheckpointWriter
// holds its lock while writing, publishes without the lock file, and clears a dead writer's
// hidden temporary directory; RunDirLock admits one writer per run directory.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"
#include "ds/io/staging.hpp"

namespace fs = std::filesystem;
using namespace ds::io;

namespace {

// The id of a process that has exited and been reaped (reuse within the test is unlikely).
pid_t dead_pid() {
  const pid_t p = ::fork();
  if (p == 0) ::_exit(0);
  int status = 0;
  ::waitpid(p, &status, 0);
  return p;
}

std::string host_of_suffix(const std::string& s) {   // ".tmp.HOST.PID" -> HOST
  return s.substr(5, s.rfind('.') - 5);
}

fs::path scratch(const std::string& name) {
  const fs::path d = fs::path(DS_BINARY_DIR) / "tests" / "io" / "scratch" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<std::string> names(const fs::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

TEST_CASE("staging_suffix names this host and process") {
  const std::string s = staging_suffix();
  REQUIRE(s.rfind(".tmp.", 0) == 0);
  CHECK(s.substr(s.rfind('.') + 1) == std::to_string(::getpid()));
  CHECK_FALSE(host_of_suffix(s).empty());
  CHECK(host_of_suffix(s).find('/') == std::string::npos);
}

TEST_CASE("remove_stale_staging: this host, a dead process, a free lock, our name only") {
  const fs::path d = scratch("stale");
  const std::string host = host_of_suffix(staging_suffix());
  const std::string dead = std::to_string(dead_pid());
  const auto with_lock_file = [&](const std::string& name) {
    fs::create_directories(d / name);
    write_file_atomic(d / name / kStagingLockFile, "");
  };
  const std::string gone = "out.tmp." + host + "." + dead;
  with_lock_file(gone);
  fs::create_directories(d / gone / "sub");
  write_file_atomic(d / gone / "sub" / "shard", "partial");
  // Kept: alive here; another host's; another output's; not a pid; no lock file; locked (a
  // writer in another PID namespace shows a dead pid here but holds its lock).
  const std::string locked = "out.tmp." + host + "." + std::to_string(dead_pid());
  const std::vector<std::string> kept = {
      "out.tmp." + host + "." + std::to_string(::getpid()),
      "out.tmp.some-other-host." + dead,
      "out2.tmp." + host + "." + dead,
      "out.tmp." + host + ".12ab",
      "out.tmp." + host + ".",
      "out.tmp." + host + "." + dead + "0",   // no lock file
      locked,
      "out",
  };
  for (const auto& k : kept)
    if (k != kept[5]) with_lock_file(k);
  fs::create_directories(d / kept[5]);
  StagingLock held(d / locked);
  const auto is_out = [](std::string_view n) { return n == "out"; };
  const auto removed = remove_stale_staging(d, is_out);
  REQUIRE(removed.size() == 1);
  CHECK(removed[0].filename() == gone);
  auto want = kept;
  std::sort(want.begin(), want.end());
  CHECK(names(d) == want);
  held.release();   // the lock file goes with the lock: a fresh directory is kept
  CHECK(remove_stale_staging(d, is_out).empty());
  // ... and one unchanged for more than 30 s is a dead writer's (killed before its rename)
  const auto old = fs::file_time_type::clock::now() - std::chrono::minutes(2);
  fs::last_write_time(d / kept[5], old);
  fs::last_write_time(d / locked, old);
  const auto later = remove_stale_staging(d, is_out);
  CHECK(later.size() == 2);
  CHECK_FALSE(fs::exists(d / kept[5]));
  CHECK_FALSE(fs::exists(d / locked));
  CHECK(remove_stale_staging(d / "missing", is_out).empty());   // no directory: nothing to do
}

TEST_CASE("CheckpointWriter: its lock while writing; a dead writer's directory removed") {
  const fs::path d = scratch("ckpt");
  const std::string host = host_of_suffix(staging_suffix());
  const std::string gone = ".step-00000010.tmp." + host + "." + std::to_string(dead_pid());
  fs::create_directories(d / gone);
  write_file_atomic(d / gone / kStagingLockFile, "");
  write_file_atomic(d / gone / "model.safetensors", "partial");
  {
    CheckpointWriter w(d / "step-00000030");
    CHECK(w.path().filename() == ".step-00000030" + staging_suffix());
    CHECK(fs::exists(w.path() / kStagingLockFile));
    write_file_atomic(w.path() / "config.json", "{}");
    w.commit();
  }
  CHECK(names(d) == std::vector<std::string>{"step-00000030"});
  CHECK(names(d / "step-00000030") == std::vector<std::string>{"config.json"});   // no lock file
  {
    CheckpointWriter w(d / "step-00000040");   // not committed: nothing left
    write_file_atomic(w.path() / "config.json", "{}");
  }
  CHECK(names(d) == std::vector<std::string>{"step-00000030"});
}

TEST_CASE("RunDirLock: one writer per run directory; a directory it made alone is removed") {
  const fs::path d = scratch("run_lock");
  const fs::path run = d / "run";
  {
    RunDirLock first(run, "--out");
    CHECK(fs::is_directory(run));
    const std::string holder = read_file(run / kRunLockFile);
    CHECK(holder == host_of_suffix(staging_suffix()) + " pid " + std::to_string(::getpid()) +
                        "\n");
    // a second writer (another open file description: refused like another process)
    CHECK_THROWS_WITH_AS(RunDirLock(run, "--out"),
                         ("--out " + run.string() + ": another run is writing there (" +
                          holder.substr(0, holder.size() - 1) +
                          "); two runs in one directory would mix their checkpoints and metrics")
                             .c_str(),
                         ds::UsageError);
  }
  CHECK_FALSE(fs::exists(run));   // made for the run, nothing written: gone again
  {
    RunDirLock again(run, "--out");   // free once the holder is gone
    write_file_atomic(run / "metrics.jsonl", "{}\n");
  }
  CHECK(fs::exists(run / "metrics.jsonl"));   // something written: kept
  fs::remove(run / "metrics.jsonl");
  { RunDirLock existing(run, "--out"); }
  CHECK(fs::is_directory(run));   // it existed before: never removed
}
