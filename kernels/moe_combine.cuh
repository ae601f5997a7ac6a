// The MoE layer's combine: the experts' rows added back into their tokens (ops::combine_pairs
// on the GPU). Included by kernels/moe_route.cu, which launches it (a warp a token, 8 warps a
// block), and by the host emulation test tests/kernels/test_emu_moe_combine.cpp, which runs
// this same kernel on a CPU against the reference. Plain CUDA C++ without inline PTX, so that
// the emulator (tests/kernels/cuda_emu.hpp) can run it.
#pragma once
#include <cstdint>

#include "kernels/bf16_io.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::moecombine {
namespace {

constexpr int kCombineMaxK = 16;   // pairs a token (DeepSeek-V3: 8); registers, not local memory

// One warp a token n: lane k < K reads slot[n, k] and its weight; each lane finds the rank of
// its slot among the token's valid slots (a slot outside [0, R) is skipped, as the CUDA
// kernels do with bad indices; slots are distinct, and should two be equal the rows after the
// first missing rank are skipped rather than read out of bounds), and every lane gathers the
// rows and weights in rank order. Then lanes split the row's columns (4 at a time when VEC)
// and add the rows in that order, w * x without FMA as the CPU's dst += w * x.
template <bool VEC, bool BF16>   // BF16: src holds BF16 codes (widened exactly)
__global__ void combine_pairs_kernel(const void* __restrict__ src,
                                     const int32_t* __restrict__ slot,
                                     const float* __restrict__ w, float* __restrict__ dst,
                                     int64_t R, int64_t N, int K, int64_t C) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t per_block = blockDim.x / 32;
  for (int64_t n = int64_t(blockIdx.x) * per_block + threadIdx.x / 32; n < N;
       n += int64_t(gridDim.x) * per_block) {
    const int32_t s = lane < K ? slot[n * K + lane] : -1;
    const bool ok = lane < K && s >= 0 && int64_t(s) < R;
    const float wk = ok && w ? w[n * K + lane] : 1.0f;
    const unsigned valid = __ballot_sync(0xffffffffu, ok);
    int rank = 0;
    for (int j = 0; j < K; ++j) {
      const int32_t sj = __shfl_sync(0xffffffffu, s, j);
      rank += ((valid >> j) & 1u) && sj < s ? 1 : 0;
    }
    const int nv = __popc(valid);
    int64_t rows[kCombineMaxK];   // first element of each rank's row in src
    float wr[kCombineMaxK];
    int nr = nv;   // ranks with a lane (all nv of them unless two valid slots are equal)
#pragma unroll
    for (int r = 0; r < kCombineMaxK; ++r) {
      const unsigned at = __ballot_sync(0xffffffffu, ok && rank == r);
      if (!at && r < nr) nr = r;
      const int from = at ? __ffs(at) - 1 : 0;
      rows[r] = int64_t(__shfl_sync(0xffffffffu, s, from)) * C;
      wr[r] = __shfl_sync(0xffffffffu, wk, from);
    }
    float* d = dst + n * C;
    if constexpr (VEC) {
      for (int64_t j = lane; j < C / 4; j += 32) {
        float4 acc = reinterpret_cast<float4*>(d)[j];
#pragma unroll
        for (int r = 0; r < kCombineMaxK; ++r) {
          if (r >= nr) break;
          const float4 v = load_in4<BF16>(src, rows[r] / 4 + j);
          acc.x = __fadd_rn(acc.x, __fmul_rn(wr[r], v.x));
          acc.y = __fadd_rn(acc.y, __fmul_rn(wr[r], v.y));
          acc.z = __fadd_rn(acc.z, __fmul_rn(wr[r], v.z));
          acc.w = __fadd_rn(acc.w, __fmul_rn(wr[r], v.w));
        }
        reinterpret_cast<float4*>(d)[j] = acc;
      }
    } else {
      for (int64_t c = lane; c < C; c += 32) {
        float acc = d[c];
#pragma unroll
        for (int r = 0; r < kCombineMaxK; ++r) {
          if (r >= nr) break;
          acc = __fadd_rn(acc, __fmul_rn(wr[r], load_in1<BF16>(src, rows[r] + c)));
        }
        d[c] = acc;
      }
    }
  }
}

}  // namespace
}  // namespace ds::cuda::moecombine
