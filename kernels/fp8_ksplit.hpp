// Split-K of the k-grouped FP8 GEMM on Hopper (sm90_fp8_gemm.cu) when it has one group: an
// FP8 Linear's weight gradient, c (M, N) += a (M, K) b (N, K)^T with (M, N) the weight (small:
// 24 to 64 tiles of 128 x 128 in the `1b` preset) and K the step's tokens (16,384: 128 K
// blocks). One block a tile leaves most of the 132 SMs idle (in the H200's fp8 profile the
// k-grouped GEMM, these Wgrads and the routed experts', ran at 93 TFLOP/s, 18% of the step);
// split, the tile's K blocks are shared among `splits` blocks, each summing its part into a
// zeroed slice of a workspace, and one pass adds the slices into c in order (deterministic:
// no atomics). Plain C++ that nvcc compiles for the device and g++
// for the host test (tests/kernels/test_layout_fp8_ksplit.cpp).
#pragma once
#include <cstdint>

#include "kernels/multi_tensor_index.hpp"   // DS_HD

namespace ds::cuda::ksplit {

constexpr int kMaxSplits = 16;
constexpr int64_t kMinBlocks = 4;   // K blocks a part keeps at least (the ring's 4 stages)

// How many parts each tile's nkb K blocks are split into: as many as fill the SMs in one wave
// (the kernel runs one block per SM: 129 KB of shared memory), at most kMaxSplits, each part
// (part(), below) at least kMinBlocks long; 1 (no split) when the tiles fill half the SMs.
DS_HD int splits(int64_t tiles, int64_t nkb, int sms) {
  if (tiles <= 0 || nkb <= 0 || sms <= 0 || tiles * 2 > sms) return 1;
  int64_t s = sms / tiles;
  if (s > kMaxSplits) s = kMaxSplits;
  if (s > nkb / kMinBlocks) s = nkb / kMinBlocks;
  return s < 1 ? 1 : int(s);
}

// Part i of s of the K blocks [kb0, kb1), n = kb1 - kb0: [kb0 + n i / s, kb0 + n (i + 1) / s),
// consecutive, each floor(n / s) or ceil(n / s) blocks long (none empty when s <= n).
struct Part {
  int64_t kb0, kb1;
};
DS_HD Part part(int64_t kb0, int64_t kb1, int s, int i) {
  const int64_t n = kb1 - kb0;
  return {kb0 + n * i / s, kb0 + n * (i + 1) / s};
}

}  // namespace ds::cuda::ksplit
