// The shared MPI test runner (tests/dist/mpi_test_main.cpp, CMake: ds_add_mpi_test): doctest
// runs the same test cases in the same order on every rank of an mpirun launch, so test cases
// may call collectives on world(). Run directly (no mpirun) the world has one rank.
// A REQUIRE failing on one rank skips the rest of its test case there, so the others may wait
// in a collective: the CTest timeout (300 s) ends such a run.
#pragma once
#include <memory>

#include "ds/dist/comm.hpp"
#include "ds/dist/topology.hpp"

namespace ds::test {

// The world communicator of this run ("mpi" under mpirun with more than one rank, else "single").
dist::Comm& world();
// A Topology of `layout` over a duplicate of world() (collective: every rank calls it).
std::unique_ptr<dist::Topology> topology(const dist::Layout& layout);

}  // namespace ds::test
