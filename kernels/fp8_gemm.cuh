// FP8 GEMM in NT layout with DeepSeek-V3's fine-grained scales (spec §3.4), pointer level:
//   c (M, N) F32 = sum over 128-wide K blocks kb of
//       (FP32 sum over k in kb of e4m3(a[m, k]) * e4m3(b[n, k])) * a_scale(m, kb) * b_scale(n, kb)
// a (M, K) and b (N, K) row-major E4M3 codes. Two kernels: the portable one here (sm_89+
// mma.sync, any shape) and the Hopper wgmma one (sm90_fp8_gemm.cuh); lib/ops/cuda/fp8.cpp
// picks one. Plain C++ header.
#pragma once
#include <cstdint>

namespace ds::cuda {

// One operand: codes (rows, K) and its scales. rows_per_scale: 1 for 1x128 groups (scales
// (rows, ceil(K/128))), 128 for 128x128 blocks (scales (ceil(rows/128), ceil(K/128))), 0 for
// a single per-tensor scale.
struct Fp8Operand {
  const uint8_t* codes = nullptr;
  const float* scales = nullptr;
  int rows_per_scale = 1;
};

// Portable kernel: 128x128 output tiles, mma.sync m16n8k32 E4M3 tensor-core products with
// per-128-K promotion into FP32 accumulators. Any M, N, K (the last K block may be partial;
// 16-byte loads when K % 16 == 0 and the rows are aligned, byte loads otherwise).
void fp8_gemm_nt_fallback(const Fp8Operand& a, const Fp8Operand& b, float* c, int64_t M,
                          int64_t N, int64_t K);

}  // namespace ds::cuda
