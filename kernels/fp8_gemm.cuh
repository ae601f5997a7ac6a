// FP8 GEMM in NT layout with DeepSeek-V3's fine-grained scales (spec §3.4), pointer level:
//   c (M, N) F32 = sum over 128-wide K blocks kb of
//       (FP32 sum over k in kb of e4m3(a[m, k]) * e4m3(b[n, k])) * a_scale(m, kb) * b_scale(n, kb)
// a (M, K) and b (N, K) row-major E4M3 codes. Two kernels: the portable one here (sm_89+
// mma.sync, any shape) and the Hopper wgmma one (sm90_fp8_gemm.cuh); lib/ops/cuda/fp8.cpp
// picks one. Both also come grouped (the routed experts, include/ds/ops/fp8.hpp
// fp8_gemm_nt_grouped / fp8_gemm_nt_kgrouped): the same kernel body, one launch per call.
// Plain C++ header.
#pragma once
#include <cstdint>
#include <vector>

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

// Grouped forms. offsets: host, groups + 1 values, each a multiple of 128, offsets[0] = 0,
// non-decreasing (a group may be empty).
//
// m-grouped: rows [offsets[g], offsets[g+1]) of c (M, N) = those rows of a (M, K) times
// b[g] (N, K)^T, M = offsets[groups]; every b[g] has the same rows_per_scale. c overwritten.
// Any N, K, as fp8_gemm_nt_fallback.
void fp8_gemm_nt_grouped_fallback(const Fp8Operand& a, const Fp8Operand* b,
                                  const int64_t* offsets, int groups, float* c, int64_t N,
                                  int64_t K);
// k-grouped: c[g] (M, N) += a (M, Ktot)[:, offsets[g]:offsets[g+1]] times the same columns of
// b (N, Ktot), transposed; Ktot = offsets[groups], scales (rows, ceil(Ktot/128)); the other
// offsets multiples of 128, Ktot need not be (a partial last K block). Each group's sum
// starts from zero; an empty group's c[g] is not touched. The c[g] must not overlap (their
// blocks run concurrently). Any M, N.
void fp8_gemm_nt_kgrouped_fallback(const Fp8Operand& a, const Fp8Operand& b,
                                   const int64_t* offsets, int groups, float* const* c,
                                   int64_t M, int64_t N);

// ---- shared by the grouped launchers of both kernels -------------------------------------------

// One non-empty group of a k-grouped call: its output and its K blocks [kb0, kb1).
struct Fp8KGroup {
  float* c;   // (M, N)
  int64_t kb0, kb1;
};
// m-grouped: the b operand of every 128-row tile of a (M/128 entries).
std::vector<Fp8Operand> fp8_tile_operands(const Fp8Operand* b, const int64_t* offsets,
                                          int groups);
// k-grouped: the non-empty groups, longest first (blocks start roughly in grid order, so the
// longest ones do not form the tail).
std::vector<Fp8KGroup> fp8_kgroups(float* const* c, const int64_t* offsets, int groups);

}  // namespace ds::cuda
