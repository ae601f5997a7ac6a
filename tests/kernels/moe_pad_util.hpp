// What the two tests of ops::moe_pad_pairs' kernel share (test_emu_moe_pad.cpp, the host
// emulator in CI; test_ops_loss_route.cpp, on a GPU): the op's offsets from the per-expert
// counts, and the element-for-element comparison of a layout with the CPU op's.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "ds/core/tensor.hpp"
#include "ds/ops/fp8.hpp"

namespace ds::test {

// The sorted pairs' offsets and the 128-row padded ones, as model/moe_fp8.cpp makes them.
struct PadOffsets {
  std::vector<int64_t> off, poff;   // (E+1) each
};

inline PadOffsets pad_offsets(const std::vector<int32_t>& counts) {
  PadOffsets p{std::vector<int64_t>(counts.size() + 1, 0),
               std::vector<int64_t>(counts.size() + 1, 0)};
  const int64_t b = ops::kFp8Block;
  for (size_t e = 0; e < counts.size(); ++e) {
    p.off[e + 1] = p.off[e] + counts[e];
    p.poff[e + 1] = p.poff[e] + (counts[e] + b - 1) / b * b;
  }
  return p;
}

// Elements of (tok, w, row, pair) that differ from the CPU op's (ptok, ppw, prow, ppair); the
// weights compared as bits (a pad's +0, not -0).
inline int64_t pad_mismatches(const int32_t* tok, const float* w, const int32_t* row,
                              const int32_t* pair, const Tensor& ptok, const Tensor& ppw,
                              const Tensor& prow, const Tensor& ppair) {
  int64_t bad = 0;
  for (int64_t r = 0; r < ptok.numel(); ++r)
    bad += (tok[r] != ptok.i32()[r]) + (std::memcmp(w + r, ppw.f32() + r, sizeof(float)) != 0);
  for (int64_t j = 0; j < prow.numel(); ++j)
    bad += (row[j] != prow.i32()[j]) + (pair[j] != ppair.i32()[j]);
  return bad;
}

}  // namespace ds::test
