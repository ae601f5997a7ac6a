// What the tests of the MoE pair kernels share (test_emu_moe_sort.cpp and test_emu_moe_pad.cpp,
// the host emulator in CI; test_ops_loss_route.cpp, on a GPU): a routing with skew and empty
// experts, ops::moe_pad_pairs' offsets from the per-expert counts, and the element-for-element
// comparison of a padded layout with the CPU op's.
#pragma once
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "ds/core/tensor.hpp"
#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"

namespace ds::test {

// The CPU reference ops' context.
inline ops::Context ref_ctx() {
  ops::Context c;
  c.impl = ops::Impl::reference;
  return c;
}

// N tokens routed to K of E experts at random, then: skew (when nonzero) puts all but every
// fifth pair on expert skew - 1, and experts [empty_lo, empty_hi) give their pairs to
// empty_hi (or to expert 0 when that is E).
struct RoutingCase {
  int64_t N, K, E;
  int skew;
  int64_t empty_lo, empty_hi;
};

inline Tensor routing(const RoutingCase& c, std::mt19937_64& rng) {
  Tensor idx = Tensor::empty({c.N, c.K}, DType::i32);
  for (int64_t i = 0; i < c.N * c.K; ++i) {
    int64_t e = int64_t(rng() % uint64_t(c.E));
    if (c.skew && i % 5 != 0) e = c.skew - 1;
    if (e >= c.empty_lo && e < c.empty_hi) e = c.empty_hi < c.E ? c.empty_hi : 0;
    idx.i32()[i] = int32_t(e);
  }
  return idx;
}

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
