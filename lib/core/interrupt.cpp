// The flag and handlers behind InterruptScope (see include/ds/core/interrupt.hpp).
// reference: sigaction(2) (SA_RESETHAND), signal-safety(7): the handler only stores to a
// lock-free atomic.
#include "ds/core/interrupt.hpp"

#include <atomic>

namespace ds {

namespace {

std::atomic<int> g_signal{0};
std::atomic<int> g_depth{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_interrupt(int sig) {
  int expected = 0;
  g_signal.compare_exchange_strong(expected, sig);   // keep the first one
}

const char* signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

// Installs `sa` for `sig` unless the signal is ignored (nohup, `cmd &` in a script, a
// supervisor): a process started that way keeps ignoring it.
void install(int sig, const struct sigaction& sa, struct sigaction& prev) {
  sigaction(sig, nullptr, &prev);
  if (prev.sa_handler != SIG_IGN || (prev.sa_flags & SA_SIGINFO)) sigaction(sig, &sa, nullptr);
}

}  // namespace

Interrupted::Interrupted(int sig)
    : Error("interrupt", fmt::format("interrupted by {}; nothing was published",
                                     signal_name(sig))),
      sig_(sig) {}

InterruptScope::InterruptScope(Repeat repeat) {
  if (g_depth.fetch_add(1) != 0) return;
  outermost_ = true;
  g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART: reads and writes go on; the loops poll the flag.
  sa.sa_flags = SA_RESTART | (repeat == Repeat::kKills ? SA_RESETHAND : 0);
  install(SIGINT, sa, prev_int_);
  install(SIGTERM, sa, prev_term_);
}

InterruptScope::~InterruptScope() {
  g_depth.fetch_sub(1);
  if (!outermost_) return;
  sigaction(SIGINT, &prev_int_, nullptr);
  sigaction(SIGTERM, &prev_term_, nullptr);
  g_signal = 0;   // outside a scope nothing is pending
}

int interrupt_signal() { return g_signal.load(std::memory_order_relaxed); }

void check_interrupt() {
  if (const int sig = interrupt_signal(); sig != 0) throw Interrupted(sig);
}

}  // namespace ds
