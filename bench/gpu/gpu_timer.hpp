// Timing helpers of the GPU benchmarks: wall time around a synchronised region (the ops run
// on one stream; ops::synchronize waits for it), medians over repetitions, and the GPU check
// shared by every bench's main (exit 77 without a device, as the GPU tests do).
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "ds/ops/ops.hpp"
#include "kernels/runtime.cuh"

namespace ds::bench {

// Median seconds of `reps` runs of fn after `warmup` runs, each bracketed by a sync of dev.
inline double median_seconds(const std::function<void()>& fn, int warmup, int reps,
                             Device dev = Device::cuda) {
  for (int i = 0; i < warmup; ++i) fn();
  ops::synchronize(dev);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ops::synchronize(dev);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median milliseconds of `reps` runs of fn after `warmup` runs, each between two CUDA events
// on the stream the ops run on (the host's launch overhead and the wake-up after a sync are
// not timed). With flush_l2 a 256 MiB buffer is zeroed before each run (outside the events),
// so a run reads its operands from HBM, not from the previous run's L2 (an H200 has 50 MB),
// as FlashAttention's and FlashMLA's benchmarks time theirs.
inline double median_ms_events(const std::function<void()>& fn, int warmup, int reps,
                               bool flush_l2) {
  constexpr size_t kFlush = size_t(256) << 20;
  void* flush = flush_l2 ? ds::cuda::pool_alloc(kFlush) : nullptr;
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    if (flush) ds::cuda::memset0(flush, kFlush);
    void* e0 = ds::cuda::timing_event_record();
    fn();
    void* e1 = ds::cuda::timing_event_record();
    ops::synchronize(Device::cuda);
    t.push_back(double(ds::cuda::timing_event_elapsed_release(e0, e1)));
  }
  if (flush) ds::cuda::pool_free(flush);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Returns false (after a message) when there is no GPU; otherwise turns the backend on.
inline bool gpu_ready(const char* prog) {
  if (ds::cuda::device_count() == 0) {
    std::fprintf(stderr, "%s: no CUDA device, skipped\n", prog);
    return false;
  }
  ops::init_device(Device::cuda);
  std::fprintf(stderr, "%s: %s\n", prog, ops::device_description(Device::cuda).c_str());
  return true;
}

}  // namespace ds::bench
