// The split k-grouped FP8 GEMM's last pass (kernels/fp8_ksplit.hpp, `DS_FP8_KSPLIT=on`): the s
// parts' sums, each in its own slice of the workspace, added into the weight gradient in part
// order (no atomics: deterministic). Included by kernels/sm90_fp8_gemm.cu, which launches it,
// and by the host emulation test tests/kernels/test_emu_fp8_ksplit.cpp, which runs this same
// source on a CPU. Plain CUDA C++ without inline PTX, so that the emulator
// (tests/kernels/cuda_emu.hpp) can run it.
#pragma once
#include <cstdint>

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::ksplit {
namespace {

// c[i] += ((ws[0][i] + ws[1][i]) + ...) + ws[s-1][i], ws (s, n) the parts' slices in order.
// Any grid (grid-stride over n); s >= 1.
__global__ void ksplit_reduce_kernel(const float* __restrict__ ws, int s, int64_t n,
                                     float* __restrict__ c) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float sum = ws[i];
    for (int j = 1; j < s; ++j) sum += ws[j * n + i];
    c[i] += sum;
  }
}

}  // namespace
}  // namespace ds::cuda::ksplit
