// The reward command protocol: a shell verifier reading JSON lines and printing one reward per
// line; failure exits, garbage, too few / too many lines (errors naming the command and the
// line), a command that ignores its input, a timeout (its exit included; the process group
// killed), and a batch far larger than the pipe buffers in both directions (no deadlock).
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/rl/reward_command.hpp"

using namespace ds::rl;

namespace {

std::vector<RewardItem> items(size_t n, size_t completion_bytes = 8) {
  std::vector<RewardItem> v;
  for (size_t i = 0; i < n; ++i)
    v.push_back({"What is 6 x 7?", i % 2 ? "#### 42" : std::string(completion_bytes, 'x'), "42"});
  return v;
}

// The message of the error `fn` throws as E ("" and a failed check when it does not).
template <class E, class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("wrong exception type: " << e.what());
    return "";
  }
  FAIL_CHECK("no exception");
  return "";
}

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("reward command: a shell verifier scores each JSON line in order") {
  const std::string verifier =
      "while IFS= read -r line; do case \"$line\" in "
      "*'\"completion\":\"#### 42\"'*'\"reference\":\"42\"'*) echo 1;; *) echo 0;; esac; done";
  const auto r = run_reward_command(verifier, items(5));
  CHECK(r == std::vector<double>{0, 1, 0, 1, 0});
  // numbers with spaces and CRLF, exponents, negative values
  CHECK(run_reward_command("cat >/dev/null; printf ' 1e-1 \\r\\n-2\\n3.5'", items(3)) ==
        std::vector<double>{0.1, -2, 3.5});
  // a command that ignores its (large) input is fine as long as it answers
  CHECK(run_reward_command("echo 1; echo 0", items(2, 1 << 20)) == std::vector<double>{1, 0});
  CHECK(run_reward_command("cat >/dev/null", {}).empty());
}

TEST_CASE("reward command: failures and garbage name the command and the line") {
  std::string m =
      error_of<ds::IoError>([] { run_reward_command("cat >/dev/null; echo 1; exit 3", items(2)); });
  CHECK(has(m, "reward command 'cat >/dev/null; echo 1; exit 3'"));
  CHECK(has(m, "exited with status 3 after printing 1 of 2 reward lines"));
  m = error_of<ds::FormatError>(
      [] { run_reward_command("cat >/dev/null; echo 1; echo abc; echo 2", items(3)); });
  CHECK(has(m, "stdout line 2: 'abc' is not a finite decimal number"));
  m = error_of<ds::FormatError>(
      [] { run_reward_command("cat >/dev/null; echo 1; echo nan", items(2)); });
  CHECK(has(m, "stdout line 2"));
  m = error_of<ds::FormatError>(
      [] { run_reward_command("cat >/dev/null; echo 1; echo; echo 1", items(3)); });
  CHECK(has(m, "stdout line 2: ''"));
  m = error_of<ds::FormatError>([] { run_reward_command("cat >/dev/null; echo 0.5", items(3)); });
  CHECK(has(m, "stdout line 2: missing (printed 1 reward lines for 3 completions)"));
  m = error_of<ds::FormatError>(
      [] { run_reward_command("cat >/dev/null; echo 1; echo 1; echo 7", items(2)); });
  CHECK(has(m, "stdout line 3: extra output '7'"));
  m = error_of<ds::FormatError>([] { run_reward_command("cat >/dev/null; echo '1 2'", items(1)); });
  CHECK(has(m, "stdout line 1: '1 2'"));
  m = error_of<ds::FormatError>(
      [] { run_reward_command("cat >/dev/null; printf '1\\000x\\n'", items(1)); });
  CHECK(has(m, "stdout line 1: '1?x' is not a finite decimal number"));   // an embedded NUL
  for (const char* not_decimal : {"0x10", "inf", "-infinity", "1e999"}) {
    m = error_of<ds::FormatError>([&] {
      run_reward_command(std::string("cat >/dev/null; echo ") + not_decimal, items(1));
    });
    CHECK(has(m, "stdout line 1: '" + std::string(not_decimal) + "' is not a finite decimal"));
  }
  CHECK(run_reward_command("cat >/dev/null; echo +1; echo -.5e1", items(2)) ==
        std::vector<double>{1, -5});
  m = error_of<ds::IoError>(
      [] { run_reward_command("definitely-not-a-command-ds-rl 2>/dev/null", items(1)); });
  CHECK(has(m, "exited with status 127"));
  m = error_of<ds::IoError>([] { run_reward_command("kill -9 $$", items(1)); });
  CHECK(has(m, "killed by signal 9"));
  m = error_of<ds::IoError>([] { run_reward_command("sleep 5", items(1), 0.3); });
  CHECK(has(m, "no answer within --reward-timeout 0.3 s"));
  // The deadline holds for its exit too: an answer, stdout closed, then it lingers.
  m = error_of<ds::IoError>(
      [] { run_reward_command("cat >/dev/null; echo 1; exec >&-; sleep 5", items(1), 0.3); });
  CHECK(has(m, "no answer within --reward-timeout 0.3 s"));
}

namespace {
// A process that is gone or a zombie waiting to be reaped.
bool ended(const std::string& pid) {
  std::ifstream f("/proc/" + pid + "/stat");
  std::string pid_field, comm, state;
  return !(f >> pid_field >> comm >> state) || state == "Z" || state == "X";
}
}  // namespace

TEST_CASE("reward command: a timeout kills what the shell started too") {
  const std::string file = "reward_child_" + std::to_string(::getpid()) + ".pid";
  std::remove(file.c_str());
  const std::string cmd = "sleep 30 & echo $! > " + file + "; wait";
  const std::string m = error_of<ds::IoError>([&] { run_reward_command(cmd, items(1), 0.5); });
  CHECK(has(m, "no answer within"));
  std::string pid;
  std::ifstream(file) >> pid;
  REQUIRE_FALSE(pid.empty());
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {   // SIGKILL is delivered at once; allow a moment
    gone = ended(pid);
    if (!gone) ::usleep(10000);
  }
  CHECK(gone);
  std::remove(file.c_str());
}

TEST_CASE("reward command: a batch much larger than the pipe buffers does not deadlock") {
  // ~8 MB in, ~190 KB out, the verifier answering while it reads (awk line by line)
  const size_t n = 6000;
  const auto r = run_reward_command("awk '{ print \"0.250000000000000000000000000000\" }'",
                                    items(n, 2800));
  REQUIRE(r.size() == n);
  CHECK(r.front() == 0.25);
  CHECK(r.back() == 0.25);
}

TEST_CASE("stoppable: a signal while the command runs stops it; one already pending does not") {
  // the command signals ds-rl (its parent: this test) and would then hang for minutes
  {
    ds::InterruptScope scope(ds::InterruptScope::Repeat::kIgnored);
    const std::string cmd = "cat >/dev/null; kill -TERM $PPID; exec sleep 300";
    int sig = 0;
    try {
      (void)run_reward_command(cmd, items(2), /*timeout_s=*/0, /*stoppable=*/true);
    } catch (const ds::Interrupted& e) {
      sig = e.signal_number();
    }
    CHECK(sig == SIGTERM);
  }
  // a signal from before the command (the rollout's): the command answers and the step goes on
  {
    ds::InterruptScope scope(ds::InterruptScope::Repeat::kIgnored);
    ::raise(SIGTERM);
    REQUIRE(ds::interrupt_signal() == SIGTERM);
    const auto v = run_reward_command("cat >/dev/null; sleep 0.3; echo 1; echo 0", items(2), 0,
                                      /*stoppable=*/true);
    CHECK(v == std::vector<double>{1, 0});
  }
}
