// The FP8 experts' padded-layout kernel (kernels/moe_pad.cuh, ops::moe_pad_pairs on the GPU;
// not yet run on one) run on the CPU by the host emulator (cuda_emu.hpp: a fiber per
// CUDA thread) against the CPU op, element for element: one expert, empty experts at the
// start, in the middle and at the end, an expert of more than 128 pairs, padded totals on
// and off the block size, the launch the library makes (its grid from moe_route.cu's
// arithmetic). Every output sits between guard bytes that must come back untouched and starts
// as a sentinel, so a row or pair the kernel skipped shows too.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "kernels/moe_pad.cuh"
#include "moe_pairs_util.hpp"

#include <algorithm>
#include <random>
#include <vector>

#include "ds/ops/ops.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::cuda_emu::Guarded;
using ds::test::cuda_emu::launch;
using ds::test::ref_ctx;
using Case = ds::test::RoutingCase;
namespace mp = ds::cuda::moepad;

void run_case(const Case& c, uint64_t seed) {
  const int64_t NK = c.N * c.K;
  std::mt19937_64 rng(seed);
  const Tensor idx = ds::test::routing(c, rng);
  Tensor counts = Tensor::empty({c.E}, DType::i32), src = Tensor::empty({NK}, DType::i32);
  Tensor tok = Tensor::empty({NK}, DType::i32), none;
  std::vector<int32_t> host;
  ds::ops::moe_sort_pairs(ref_ctx(), idx, counts, src, tok, none, &host);
  const auto [off, poff] = ds::test::pad_offsets(host);
  const int64_t NKp = poff.back();
  Tensor pw = Tensor::empty({NK});
  std::uniform_real_distribution<float> u(-1, 1);
  for (int64_t j = 0; j < NK; ++j) pw.f32()[j] = u(rng);
  Tensor ptok = Tensor::empty({NKp}, DType::i32), ppw = Tensor::empty({NKp});
  Tensor prow = Tensor::empty({NK}, DType::i32), ppair = Tensor::empty({NK}, DType::i32);
  ds::ops::moe_pad_pairs(ref_ctx(), src, pw, c.K, off, poff, ptok, ppw, prow, ppair);

  std::vector<int32_t> tab;   // what lib/ops/cuda/loss_route.cpp uploads
  for (const int64_t o : off) tab.push_back(int32_t(o));
  for (const int64_t o : poff) tab.push_back(int32_t(o));
  Guarded<int32_t> gt(size_t(NKp), 0x5a), gr(size_t(NK), 0x5a), gp(size_t(NK), 0x5a);
  Guarded<float> gw(size_t(NKp), 0x5a);
  const int64_t N = std::max<int64_t>(NK / c.K, 1);
  const unsigned blocks = unsigned((NKp + mp::kPadThreads - 1) / mp::kPadThreads);
  launch(mp::pad_pairs_kernel, dim3(blocks), dim3(mp::kPadThreads),
         static_cast<const int32_t*>(src.i32()), static_cast<const float*>(pw.f32()),
         static_cast<const int32_t*>(tab.data()), int(c.E), int(c.K), int(N), int(NKp),
         gt.data(), gw.data(), gr.data(), gp.data());
  CHECK(gt.guards_intact(0x5a));
  CHECK(gw.guards_intact(0x5a));
  CHECK(gr.guards_intact(0x5a));
  CHECK(gp.guards_intact(0x5a));
  CHECK(ds::test::pad_mismatches(gt.data(), gw.data(), gr.data(), gp.data(), ptok, ppw, prow,
                                 ppair) == 0);
}

TEST_CASE("emulated moe_pad_pairs kernel equals the CPU op") {
  const Case cases[] = {
      {1, 1, 1, 0, 0, 0},       // one pair, one expert: 128 rows, 127 pads
      {3, 2, 8, 0, 0, 0},       // 6 pairs over 8 experts, most empty
      {90, 6, 16, 0, 0, 3},     // empty experts first
      {90, 6, 16, 0, 5, 9},     // ... in the middle
      {90, 6, 16, 0, 12, 16},   // ... last
      {300, 2, 4, 2, 0, 0},     // skewed: expert 1 holds ~480 pairs, 4 tiles
      {64, 4, 2, 0, 0, 0},      // 256 pairs: padded total 256 or 384
      {257, 8, 64, 0, 0, 0},
  };
  uint64_t seed = 11;
  for (const Case& c : cases) {
    CAPTURE(c.N);
    CAPTURE(c.K);
    CAPTURE(c.E);
    CAPTURE(c.empty_lo);
    run_case(c, seed++);
  }
}

}  // namespace
