// The FP8 grouped experts' 128-row padded layout of the expert-sorted (token, k) pairs, built
// on the device (ops::moe_pad_pairs; model/moe_fp8.cpp): included by kernels/moe_route.cu,
// which launches it, and by the host emulation test tests/kernels/test_emu_moe_pad.cpp, which
// runs this same kernel on a CPU against the reference. Plain CUDA C++ without inline PTX, so
// that the emulator (tests/kernels/cuda_emu.hpp) can run it.
#pragma once
#include <cstdint>

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::moepad {
namespace {

constexpr int kPadThreads = 256;

// One thread per padded row r in [0, NKp). tab holds the E + 1 sorted-pair offsets (off),
// then the E + 1 padded offsets (poff), both non-decreasing from 0, poff[E] = NKp and every
// expert's padded range at least as long as its pairs'. Row r lies in expert e with
// poff[e] <= r < poff[e + 1] (a binary search; empty experts have no rows). Its sorted pair
// is i = off[e] + r - poff[e] while that is below off[e + 1]; the rest of the expert's range
// are pad rows. Real row: p_tok[r] = pair_src[i] / K, p_w[r] = pair_w[i], p_row[i] = r,
// p_pair[pair_src[i]] = r. Pad row: p_tok[r] = r mod N (spread out, so that the scatters'
// atomic additions of zeros do not all land on one row), p_w[r] = 0. p_row and p_pair are
// written once each when pair_src is a permutation of [0, NK) (moe_sort_pairs' output).
__global__ void __launch_bounds__(kPadThreads)
    pad_pairs_kernel(const int32_t* __restrict__ pair_src, const float* __restrict__ pair_w,
                     const int32_t* __restrict__ tab, int E, int K, int N, int NKp,
                     int32_t* __restrict__ p_tok, float* __restrict__ p_w,
                     int32_t* __restrict__ p_row, int32_t* __restrict__ p_pair) {
  const int64_t r64 = int64_t(blockIdx.x) * kPadThreads + threadIdx.x;
  if (r64 >= NKp) return;
  const int r = int(r64);
  const int32_t* off = tab;
  const int32_t* poff = tab + E + 1;
  int lo = 0, hi = E;   // poff[lo] <= r < poff[hi]
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (poff[mid] <= r) lo = mid;
    else hi = mid;
  }
  const int i = off[lo] + (r - poff[lo]);
  if (i < off[lo + 1]) {
    const int src = pair_src[i];
    p_tok[r] = src / K;
    p_w[r] = pair_w[i];
    p_row[i] = r;
    p_pair[src] = r;
  } else {
    p_tok[r] = r % N;
    p_w[r] = 0.0f;
  }
}

}  // namespace
}  // namespace ds::cuda::moepad
