// The CPU caching allocator behind Tensor storage (lib/core/tensor.cpp): freed blocks are
// reused by size class (no new allocation in a steady state), views keep blocks alive,
// 64-byte alignment holds, release() empties the cache, and concurrent use is safe.
#include <doctest/doctest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "ds/core/tensor.hpp"

using ds::Tensor;

TEST_CASE("cpu cache: steady-state reuse, alignment, views, release") {
  ds::cpu_cache_release();
  const void* first = nullptr;
  {
    Tensor a = Tensor::empty({1000, 37});
    first = a.raw();
    CHECK(reinterpret_cast<uintptr_t>(first) % 64 == 0);
  }
  CHECK(ds::cpu_cache_stats().cached_bytes >= 1000 * 37 * 4);
  const auto before = ds::cpu_cache_stats();
  for (int step = 0; step < 5; ++step) {   // the same shapes every "step": all hits
    Tensor a = Tensor::empty({1000, 37}), b = Tensor::zeros({64});
    CHECK(a.raw() == first);
    CHECK(b.f32()[63] == 0.0f);
  }
  const auto after = ds::cpu_cache_stats();
  CHECK(after.misses - before.misses <= 1);   // b's class at most once
  CHECK(after.hits - before.hits >= 9);
  // a slightly different row count shares the size class (MoE expert batches)
  { Tensor c = Tensor::empty({998, 37}); CHECK(c.raw() == first); }
  // a live view keeps the block out of the cache
  Tensor v;
  { Tensor a = Tensor::empty({1000, 37}); v = a.slice0(10, 20); }
  { Tensor a = Tensor::empty({1000, 37}); CHECK(a.raw() != v.raw()); }
  v = Tensor();
  ds::cpu_cache_release();
  CHECK(ds::cpu_cache_stats().cached_bytes == 0);
}

TEST_CASE("cpu cache: threads allocate and free concurrently") {
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([t] {
      for (int i = 0; i < 2000; ++i) {
        Tensor a = Tensor::empty({int64_t(1 + (i * 7 + t) % 300), 16});
        a.f32()[0] = float(i);
        CHECK(a.f32()[0] == float(i));
      }
    });
  for (auto& th : ts) th.join();
  ds::cpu_cache_release();
  CHECK(ds::cpu_cache_stats().cached_bytes == 0);
}
