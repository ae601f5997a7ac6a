// The CUDA path's process-wide switches read from the environment, without a device: prints
// the setting each took (one line), or the one-line error a bad value gets, and exits 1.
// tests/kernels/CMakeLists.txt runs it under several environments (no GPU needed: the
// switches are read before any device is touched).
#include <cstdio>
#include <exception>

#include "kernels/flash_attention.cuh"

int main() {
  try {
    static const char* const bwd[] = {"split", "fused", "onepass"};
    static const char* const sched[] = {"lockstep", "staggered", "pipelined"};
    const int b = ds::cuda::attention_bwd_mode(), s = ds::cuda::attention_schedule();
    std::printf("bwd %s, schedule %s, rows %d, wgmma %s, qstats %s\n", bwd[b], sched[s],
                ds::cuda::attention_rows64() ? 64 : 128,
                ds::cuda::attention_wgmma() ? "on" : "off",
                ds::cuda::attention_bwd_qstats() ? "table" : "inline");
    return 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
