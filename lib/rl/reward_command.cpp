// The external reward command (see include/ds/rl/reward_command.hpp): posix_spawn of
// `/bin/sh -c COMMAND` with its stdin/stdout on pipes, one poll() loop that writes the JSON
// lines and reads the rewards concurrently (no deadlock however large the batch), SIGPIPE
// blocked on this thread while writing (a command that stops reading gives EPIPE, not a
// signal), an optional deadline (over the whole conversation, the exit included) after which
// the command's process group is killed, then strict line parsing.
#include "ds/rl/reward_command.hpp"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"

extern char** environ;

namespace ds::rl {

namespace {

using Clock = std::chrono::steady_clock;

std::string quoted(const std::string& cmd) {
  return "reward command '" + (cmd.size() > 80 ? cmd.substr(0, 77) + "..." : cmd) + "'";
}

std::string request_lines(const std::vector<RewardItem>& items) {
  std::string s;
  for (const RewardItem& it : items) {
    const nlohmann::json j{{"prompt", it.prompt}, {"completion", it.completion},
                           {"reference", it.reference}};
    s += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    s += '\n';
  }
  return s;
}

// Blocks SIGPIPE on the calling thread for its lifetime; a SIGPIPE raised meanwhile (by a
// write to a pipe nobody reads) is consumed before unblocking.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~SigpipeBlock() {
    const timespec zero{0, 0};
    while (sigtimedwait(&set_, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t set_{}, old_{};
};

struct Fd {
  int fd = -1;
  ~Fd() { close_now(); }
  void close_now() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

struct Child {
  pid_t pid = -1;
  std::string out;     // everything it printed on stdout
  int status = 0;      // waitpid status
  bool timed_out = false;
  bool too_much = false;
  int interrupted = 0;   // the SIGINT/SIGTERM that stopped the wait (the group is killed)
};

pid_t spawn(const std::string& command, Fd& to_child, Fd& from_child) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0)
    DS_THROW(IoError, "{}: pipe: {}", quoted(command), std::strerror(errno));
  Fd in_r{in[0]};
  to_child.fd = in[1];
  if (::pipe2(out, O_CLOEXEC) != 0)
    DS_THROW(IoError, "{}: pipe: {}", quoted(command), std::strerror(errno));
  Fd out_w{out[1]};
  from_child.fd = out[0];
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_r.fd, 0);    // dup2 clears close-on-exec
  posix_spawn_file_actions_adddup2(&fa, out_w.fd, 1);
  std::string sh = "sh", dash_c = "-c", cmd = command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};
  // Its own process group, so that a timeout kills what the shell started too.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0)
    DS_THROW(IoError, "{}: cannot start /bin/sh: {}", quoted(command), std::strerror(rc));
  ::fcntl(to_child.fd, F_SETFL, ::fcntl(to_child.fd, F_GETFL) | O_NONBLOCK);
  ::fcntl(from_child.fd, F_SETFL, ::fcntl(from_child.fd, F_GETFL) | O_NONBLOCK);
  return pid;
}

// Writes `input` and reads stdout until EOF (or the deadline / output cap), then reaps.
Child converse(const std::string& command, const std::string& input, double timeout_s,
               size_t max_out, bool stoppable) {
  // a signal already pending (it came during the rollout) lets the step finish as usual
  const bool watch = stoppable && interrupt_signal() == 0;
  const auto stop_requested = [&] { return watch ? interrupt_signal() : 0; };
  SigpipeBlock no_sigpipe;
  Fd to_child, from_child;
  Child c;
  c.pid = spawn(command, to_child, from_child);
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  size_t written = 0;
  if (input.empty()) to_child.close_now();
  char buf[65536];
  while (from_child.fd >= 0) {
    pollfd p[2];
    nfds_t n = 0;
    p[n++] = {from_child.fd, POLLIN, 0};
    if (to_child.fd >= 0) p[n++] = {to_child.fd, POLLOUT, 0};
    // a stop request (ds-rl's InterruptScope) is looked at every 100 ms
    if ((c.interrupted = stop_requested()) != 0) break;
    int wait_ms = 100;
    if (timeout_s > 0) {
      const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
      if (left <= 0) { c.timed_out = true; break; }
      wait_ms = int(std::min(left * 1000.0 + 1.0, 100.0));
    }
    if (::poll(p, n, wait_ms) < 0) {
      if (errno == EINTR) continue;
      DS_THROW(IoError, "{}: poll: {}", quoted(command), std::strerror(errno));
    }
    if (n == 2 && (p[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t w = ::write(to_child.fd, input.data() + written, input.size() - written);
      if (w > 0) written += size_t(w);
      else if (w < 0 && errno != EAGAIN && errno != EINTR) to_child.close_now();   // EPIPE
      if (written == input.size()) to_child.close_now();
    }
    if (p[0].revents & (POLLIN | POLLERR | POLLHUP)) {
      const ssize_t r = ::read(from_child.fd, buf, sizeof(buf));
      if (r > 0) c.out.append(buf, size_t(r));
      else if (r == 0 || (errno != EAGAIN && errno != EINTR)) from_child.close_now();
      if (c.out.size() > max_out) { c.too_much = true; break; }
    }
  }
  to_child.close_now();
  from_child.close_now();
  // Its stdout is closed; the deadline also holds for its exit (it may go on after answering).
  while (!c.timed_out && !c.too_much && !c.interrupted) {
    const pid_t r = ::waitpid(c.pid, &c.status, WNOHANG);
    if (r == c.pid) return c;
    if (r < 0 && errno != EINTR)
      DS_THROW(IoError, "{}: waitpid: {}", quoted(command), std::strerror(errno));
    if (timeout_s > 0 && Clock::now() >= deadline) c.timed_out = true;
    else if ((c.interrupted = stop_requested()) == 0) ::usleep(2000);
  }
  if (c.timed_out || c.too_much || c.interrupted) ::kill(-c.pid, SIGKILL);   // the whole group
  while (::waitpid(c.pid, &c.status, 0) < 0 && errno == EINTR) {
  }
  return c;
}

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

std::string shown(std::string_view s) {
  std::string t(s.substr(0, 40));
  for (char& ch : t)
    if (static_cast<unsigned char>(ch) < 0x20) ch = '?';
  return s.size() > 40 ? t + "..." : t;
}

}  // namespace

std::vector<double> run_reward_command(const std::string& command,
                                       const std::vector<RewardItem>& items, double timeout_s,
                                       bool stoppable) {
  const bool pending = interrupt_signal() != 0;   // then the step finishes (see converse)
  const size_t n = items.size();
  const size_t cap = (size_t(1) << 20) + 256 * n;   // 1 MiB + 256 bytes per completion
  const Child c = converse(command, request_lines(items), timeout_s, cap, stoppable);
  const std::string cmd = quoted(command);
  int stop = c.interrupted;
  // Slurm's --signal and a shell's kill -TERM of the job reach the command and ds-rl at about
  // the same time: a command ended by SIGINT/SIGTERM waits briefly for ds-rl's own signal
  for (int i = 0; i < 100 && stoppable && !pending && !stop && WIFSIGNALED(c.status) &&
                  (WTERMSIG(c.status) == SIGTERM || WTERMSIG(c.status) == SIGINT);
       ++i) {
    ::usleep(10000);
    stop = interrupt_signal();
  }
  if (stop) throw Interrupted(stop);   // the step is abandoned (see rl_run.cpp)
  if (c.timed_out)
    DS_THROW(IoError, "{}: no answer within --reward-timeout {} s (killed)", cmd, timeout_s);
  if (c.too_much)
    DS_THROW(FormatError, "{}: printed more than {} bytes for {} completions (killed)", cmd,
             cap, n);
  std::vector<std::string_view> lines;
  std::string_view rest = c.out;
  while (!rest.empty()) {
    const size_t nl = rest.find('\n');
    lines.push_back(rest.substr(0, nl));
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
  }
  if (WIFSIGNALED(c.status))
    DS_THROW(IoError, "{}: killed by signal {} after printing {} of {} reward lines", cmd,
             WTERMSIG(c.status), lines.size(), n);
  if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0)
    DS_THROW(IoError, "{}: exited with status {} after printing {} of {} reward lines", cmd,
             WEXITSTATUS(c.status), lines.size(), n);
  std::vector<double> out;
  out.reserve(n);
  for (size_t i = 0; i < lines.size(); ++i) {
    DS_CHECK_AS(FormatError, i < n, "{}: stdout line {}: extra output '{}' ({} completions, so "
                "{} lines expected)", cmd, i + 1, shown(lines[i]), n, n);
    const std::string s(trim(lines[i]));
    char* end = nullptr;
    errno = 0;
    // decimal notation only: strtod would also take hex ("0x10"), "inf" and "nan"
    const bool decimal = s.find_first_not_of("0123456789+-.eE") == std::string::npos;
    const double v = s.empty() || !decimal ? NAN : std::strtod(s.c_str(), &end);
    // the whole line, so "1\0x" (an embedded NUL) is no number either
    DS_CHECK_AS(FormatError, !s.empty() && end == s.c_str() + s.size() && std::isfinite(v),
                "{}: stdout line {}: '{}' is not a finite decimal number (one reward per line "
                "expected)", cmd, i + 1, shown(lines[i]));
    out.push_back(v);
  }
  DS_CHECK_AS(FormatError, out.size() == n,
              "{}: stdout line {}: missing (printed {} reward lines for {} completions)", cmd,
              out.size() + 1, out.size(), n);
  return out;
}

}  // namespace ds::rl
