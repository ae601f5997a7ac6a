// The CUDA path's process-wide switches read from the environment, without a device: prints
// the setting each took (one line), or the one-line error a bad value gets, and exits 1. The
// attention's (kernels/flash_attention.cuh) and the FP8 ones (DS_FP8_GEMM, DS_FP8_KSPLIT,
// DS_FP8_QUANT: read by the ops layer's check_fp8_gemm_env, lib/ops/cuda/ops_cuda.hpp).
// tests/kernels/CMakeLists.txt runs it under several environments (no GPU needed: the
// switches are read before any device is touched).
#include <cstdio>
#include <exception>

#include "kernels/flash_attention.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/sm90_fp8_gemm.cuh"
#include "lib/ops/cuda/ops_cuda.hpp"

int main() {
  try {
    static const char* const bwd[] = {"split", "fused", "onepass"};
    static const char* const sched[] = {"lockstep", "staggered", "pipelined"};
    const int b = ds::cuda::attention_bwd_mode(), s = ds::cuda::attention_schedule();
    const bool rows64 = ds::cuda::attention_rows64(), wgmma = ds::cuda::attention_wgmma();
    const bool qstats = ds::cuda::attention_bwd_qstats();
    ds::ops::cuda::check_fp8_gemm_env();
    std::printf("bwd %s, schedule %s, rows %d, wgmma %s, qstats %s, fp8 overlap %s, ksplit %s, "
                "quant %s\n", bwd[b], sched[s], rows64 ? 64 : 128, wgmma ? "on" : "off",
                qstats ? "table" : "inline", ds::cuda::fp8_gemm_overlap() ? "on" : "off",
                ds::cuda::fp8_ksplit() ? "on" : "off",
                ds::cuda::fp8_quant_tiles() ? "tiles" : "plain");
    return 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
