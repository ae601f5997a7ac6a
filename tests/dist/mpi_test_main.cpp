// The doctest runner for tests under mpirun (see mpi_test.hpp). Every rank runs the suite; only
// rank 0 prints its report, other ranks print theirs only when they fail; the exit status is
// non-zero on every rank when any rank failed (so mpirun and CTest see the failure).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <sstream>

#include "ds/core/error.hpp"
#include "mpi_test.hpp"

namespace ds::test {
namespace {
std::unique_ptr<dist::Comm> g_world;
}

dist::Comm& world() {
  if (!g_world) DS_THROW(InternalError, "ds::test::world() used outside the MPI test runner");
  return *g_world;
}

std::unique_ptr<dist::Topology> topology(const dist::Layout& layout) {
  return dist::Topology::create(world().split(0, world().rank()), layout, 0);
}

}  // namespace ds::test

int main(int argc, char** argv) {
  try {
    ds::test::g_world = ds::dist::init_world(ds::dist::LaunchOptions{});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi test runner: cannot initialise the world: %s\n", e.what());
    return 1;
  }
  ds::dist::Comm& w = *ds::test::g_world;
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  std::ostringstream captured;
  if (w.rank() != 0) {
    ctx.setCout(&captured);
    ctx.setOption("no-colors", true);
  }
  int failed = 0;
  try {
    failed = ctx.run() != 0 ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] exception outside a test case: %s\n", w.rank(), e.what());
    failed = 1;
  }
  if (failed && w.rank() != 0)
    std::fprintf(stderr, "---- doctest report of rank %d of %d ----\n%s", w.rank(), w.size(),
                 captured.str().c_str());
  int n_failed = failed;
  w.all_reduce_sum(&n_failed, 1, ds::DType::i32);
  if (n_failed > 0 && w.rank() == 0)
    std::fprintf(stderr, "mpi test runner: %d of %d ranks failed\n", n_failed, w.size());
  ds::test::g_world.reset();   // MPI_Finalize follows at exit
  return n_failed > 0 ? 1 : 0;
}
