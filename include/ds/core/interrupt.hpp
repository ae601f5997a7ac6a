// SIGINT and SIGTERM for work that publishes its output only at the end (ds-tokenize train
// and encode, ds-convert-fp8, ds-eval once its model is loaded) and for the training loops.
// While an InterruptScope lives, a signal only sets a flag (a signal ignored when the scope
// began stays ignored). Long loops poll it: check_interrupt() throws Interrupted, the stack
// unwinds, and each staged output is removed by its owner's destructor (StagedDir,
// CheckpointWriter, AtomicFile). The training loops read the flag between steps instead and
// save before they stop. The tool then exits with 128 + the signal number, as the shell
// reports a process killed by that signal. The flag is cleared when the outermost scope ends.
//
// With Repeat::kKills (the default), the handler is installed with SA_RESETHAND, so a
// second SIGINT (or SIGTERM) ends the process at once by the default action, for a read
// blocked on a pipe that never answers. A staging directory left that way is removed by a
// later writer of the same output (io::remove_stale_staging).
#pragma once
#include <signal.h>

#include "ds/core/error.hpp"

namespace ds {

class Interrupted : public Error {
 public:
  explicit Interrupted(int sig);
  int signal_number() const { return sig_; }
  int exit_code() const override { return 128 + sig_; }

 private:
  int sig_;
};

class InterruptScope {
 public:
  enum class Repeat { kKills, kIgnored };
  // Installs the handlers and clears the flag; nested scopes keep the outer one's handlers,
  // flag and Repeat. The outermost restores the previous handlers and clears the flag when
  // destroyed.
  explicit InterruptScope(Repeat repeat = Repeat::kKills);
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  bool outermost_ = false;
  struct sigaction prev_int_ {};
  struct sigaction prev_term_ {};
};

// The first signal that arrived inside the outermost live scope, 0 if none.
int interrupt_signal();
// Throws Interrupted when a signal arrived.
void check_interrupt();

}  // namespace ds
