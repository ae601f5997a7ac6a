// The op profiler on the GPU (ops::Profiler, lib/ops/dispatch.hpp Scope): GPU ops are timed by
// CUDA events on the stream, not by synchronising around each op, and read back in one batch.
// Checks: every call is counted under its op, the times are positive and add up to no more
// than the wall time of the whole sequence (which ends in one synchronisation), profiling
// does not change results, a long run folds finished pairs in as it goes (every call still
// counted once), clear() and destruction with events still pending are safe.
#include <chrono>
#include <cstring>

#include "gpu_harness.hpp"
#include "kernels/runtime.cuh"

namespace ds::gpu_test {

TEST_CASE("gpu profiler: CUDA events time ops without synchronising each one") {
  Arena ar;
  const Tensor a = ar.upload(rand_f32({512, 512})), b = ar.upload(rand_f32({512, 512}));
  Tensor c = ar.zeros({512, 512}), d = ar.zeros({512, 512}), plain = ar.zeros({512, 512});
  ops::matmul(gpu(), a, b, plain, false, false);   // unprofiled result, and warm-up
  ds::cuda::sync();

  ops::Profiler prof;
  Context ctx = gpu();
  ctx.prof = &prof;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    ops::matmul(ctx, a, b, c, false, false);
    ops::add(ctx, c, b, d);
  }
  ds::cuda::sync();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  int64_t matmuls = 0, adds = 0;
  for (const auto& e : prof.entries()) {
    CHECK(e.seconds > 0);
    if (std::strcmp(e.op, "matmul") == 0) matmuls = e.calls;
    if (std::strcmp(e.op, "add") == 0) adds = e.calls;
  }
  CHECK(matmuls == 20);
  CHECK(adds == 20);
  INFO("ops " << prof.seconds() << " s, wall " << wall << " s");
  CHECK(prof.seconds() <= wall * 1.01 + 1e-4);
  CHECK(prof.flops("gemm") > 0);
  CHECK(prof.bytes("gemm") == 20 * 3 * 4.0 * 512 * 512);   // the bytes the CPU op counts
  CHECK(prof.bytes("elementwise") == 20 * 3 * 4.0 * 512 * 512);
  expect_close(c, download(plain), 0.0, "profiled matmul", 0.0);

  prof.clear();   // resolves, then empties
  CHECK(prof.entries().empty());
  // A long run: past 4096 pending pairs those the GPU has passed are folded in as it goes.
  for (int i = 0; i < 6000; ++i) ops::add(ctx, c, b, d);
  int64_t many = 0;
  for (const auto& e : prof.entries())
    if (std::strcmp(e.op, "add") == 0) many = e.calls;
  CHECK(many == 6000);
  prof.clear();
  {
    ops::Profiler pending;   // destroyed with its events unread
    Context p = gpu();
    p.prof = &pending;
    ops::add(p, c, b, d);
  }
  CHECK(ar.check());
}

}  // namespace ds::gpu_test
