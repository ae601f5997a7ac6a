// ThreadPool: every index visited once, exceptions propagate, pool is reusable; the --threads
// range.
#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/core/thread_pool.hpp"

TEST_CASE("parallel_for covers every index exactly once") {
  for (int threads : {1, 2, 4}) {
    ds::ThreadPool pool(threads);
    for (size_t n : {0u, 1u, 7u, 1000u}) {
      std::vector<std::atomic<int>> hits(n);
      pool.parallel_for(n, [&](size_t b, size_t e, int) {
        for (size_t i = b; i < e; ++i) hits[i]++;
      });
      for (auto& h : hits) REQUIRE(h.load() == 1);
    }
  }
}

TEST_CASE("parallel_for rethrows the first exception and stays usable") {
  ds::ThreadPool pool(3);
  CHECK_THROWS_AS(pool.parallel_for(100, [](size_t b, size_t, int) {
    if (b == 0) throw std::runtime_error("boom");
  }), std::runtime_error);
  std::atomic<size_t> sum{0};
  pool.parallel_for(100, [&](size_t b, size_t e, int) { sum += e - b; });
  CHECK(sum.load() == 100);
}

TEST_CASE("--threads values: 0 (all cores) to kMaxThreads, UsageError beyond") {
  CHECK(ds::check_threads(0) == 0);
  CHECK(ds::check_threads(ds::kMaxThreads) == ds::kMaxThreads);
  CHECK(ds::resolve_threads(0) >= 1);
  CHECK(ds::resolve_threads(-1) >= 1);   // the pool's own "all cores"
  for (int bad : {-1, ds::kMaxThreads + 1, 100000})
    CHECK_THROWS_WITH_AS(ds::check_threads(bad), doctest::Contains("--threads"), ds::UsageError);
  CHECK_THROWS_AS(ds::resolve_threads(100000), ds::UsageError);
  CHECK_THROWS_AS(ds::ThreadPool(ds::kMaxThreads + 1), ds::UsageError);   // before any thread
}
