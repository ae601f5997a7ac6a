// InterruptScope: a signal inside a scope sets the flag instead of ending the process,
// check_interrupt() turns it into Interrupted (exit status 128 + signal), the handlers are
// restored and the flag cleared afterwards, nested scopes share the outer flag, Repeat::kKills
// leaves the default action in place for a second signal while kIgnored keeps catching, and a
// signal ignored before the scope stays ignored.
#include <doctest/doctest.h>
#include <signal.h>

#include <string>

#include "ds/core/interrupt.hpp"

using ds::InterruptScope;

namespace {

extern "C" void marker_handler(int) {}

using Handler = void (*)(int);

Handler current(int sig) {
  struct sigaction now {};
  sigaction(sig, nullptr, &now);
  return now.sa_handler;
}

}  // namespace

TEST_CASE("a signal inside a scope becomes Interrupted; the old handlers come back") {
  struct sigaction mine {}, old_int {}, old_term {};
  mine.sa_handler = marker_handler;
  sigemptyset(&mine.sa_mask);
  sigaction(SIGINT, &mine, &old_int);
  sigaction(SIGTERM, &mine, &old_term);
  {
    InterruptScope scope;
    CHECK((current(SIGINT) != marker_handler));
    CHECK(ds::interrupt_signal() == 0);
    CHECK_NOTHROW(ds::check_interrupt());
    raise(SIGINT);   // delivered before raise returns
    CHECK(ds::interrupt_signal() == SIGINT);
    CHECK((current(SIGINT) == SIG_DFL));   // kKills: a second Ctrl-C ends the process
    CHECK((current(SIGTERM) != SIG_DFL));
    try {
      ds::check_interrupt();
      FAIL("expected Interrupted");
    } catch (const ds::Interrupted& e) {
      CHECK(e.exit_code() == 130);
      CHECK(e.signal_number() == SIGINT);
      CHECK(std::string(e.what()).find("interrupted by SIGINT") != std::string::npos);
    }
  }
  CHECK((current(SIGINT) == marker_handler));
  CHECK((current(SIGTERM) == marker_handler));
  CHECK(ds::interrupt_signal() == 0);   // cleared with the scope
  CHECK_NOTHROW(ds::check_interrupt());
  {
    InterruptScope scope;   // a new outermost scope starts with a clear flag
    CHECK(ds::interrupt_signal() == 0);
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
}

TEST_CASE("kIgnored keeps catching; the first signal is the one reported; nesting") {
  InterruptScope outer(InterruptScope::Repeat::kIgnored);
  raise(SIGTERM);
  raise(SIGINT);
  raise(SIGTERM);
  CHECK(ds::interrupt_signal() == SIGTERM);
  CHECK((current(SIGTERM) != SIG_DFL));
  CHECK((current(SIGINT) != SIG_DFL));
  {
    InterruptScope inner;   // keeps the outer flag and handlers
    CHECK(ds::interrupt_signal() == SIGTERM);
    CHECK_THROWS_AS(ds::check_interrupt(), ds::Interrupted);
  }
  CHECK((current(SIGINT) != SIG_DFL));   // the inner scope restored nothing
  try {
    ds::check_interrupt();
    FAIL("expected Interrupted");
  } catch (const ds::Error& e) {   // part of the one hierarchy
    CHECK(e.exit_code() == 143);
  }
}

TEST_CASE("a signal ignored before the scope stays ignored") {
  struct sigaction ign {}, old {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  sigaction(SIGINT, &ign, &old);
  {
    InterruptScope scope;
    CHECK((current(SIGINT) == SIG_IGN));
    CHECK((current(SIGTERM) != SIG_DFL));   // SIGTERM was not ignored: caught
    raise(SIGINT);
    CHECK(ds::interrupt_signal() == 0);
  }
  CHECK((current(SIGINT) == SIG_IGN));
  sigaction(SIGINT, &old, nullptr);
}
