// The MoE pair sort's kernel (kernels/moe_sort.cuh, ops::moe_sort_pairs on the GPU) run on the
// CPU by the host emulator (cuda_emu.hpp: a fiber per CUDA thread) against the CPU op,
// element for element: the stable expert order of pair_src and pair_tok and each pair's slot,
// with the launch the library makes (a block per expert, kSortThreads threads). Sizes around
// the 2,048-pair tile (one pair, exactly one tile, one past it, several tiles), a thread's
// 8-pair run cut by the end, skewed routing, empty experts at the start, middle and end, and
// the launch without pair_slot. Outputs lie between guard bytes and start as a sentinel.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "kernels/moe_sort.cuh"
#include "moe_pairs_util.hpp"

#include <random>
#include <vector>

#include "ds/ops/ops.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::cuda_emu::Guarded;
using ds::test::cuda_emu::launch;
using Case = ds::test::RoutingCase;
namespace ms = ds::cuda::moesort;

void run_case(const Case& c, uint64_t seed) {
  const int64_t NK = c.N * c.K;
  std::mt19937_64 rng(seed);
  const Tensor idx = ds::test::routing(c, rng);
  Tensor counts = Tensor::empty({c.E}, DType::i32), src = Tensor::empty({NK}, DType::i32);
  Tensor tok = Tensor::empty({NK}, DType::i32), slot = Tensor::empty({NK}, DType::i32);
  ds::ops::moe_sort_pairs(ds::test::ref_ctx(), idx, counts, src, tok, slot);

  for (const bool with_slot : {true, false}) {
    CAPTURE(with_slot);
    Guarded<int32_t> gs(size_t(NK), 0x5a), gt(size_t(NK), 0x5a), gp(size_t(NK), 0x5a);
    launch(ms::sort_pairs_kernel, dim3(unsigned(c.E)), dim3(ms::kSortThreads),
           static_cast<const int32_t*>(idx.i32()), NK, c.K,
           static_cast<const int32_t*>(counts.i32()), gs.data(), gt.data(),
           with_slot ? gp.data() : static_cast<int32_t*>(nullptr));
    CHECK(gs.guards_intact(0x5a));
    CHECK(gt.guards_intact(0x5a));
    CHECK(gp.guards_intact(0x5a));
    int64_t bad = 0;
    for (int64_t j = 0; j < NK; ++j) {
      bad += (gs.data()[j] != src.i32()[j]) + (gt.data()[j] != tok.i32()[j]);
      if (with_slot) bad += gp.data()[j] != slot.i32()[j];
      else bad += gp.data()[j] != 0x5a5a5a5a;   // not written at all
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("emulated moe_sort_pairs kernel equals the CPU op") {
  const Case cases[] = {
      {1, 1, 1, 0, 0, 0},        // one pair, one expert
      {3, 2, 8, 0, 0, 0},        // 6 pairs over 8 experts, most empty
      {256, 8, 16, 0, 0, 2},     // exactly one 2,048-pair tile, experts 0-1 empty
      {2049, 1, 4, 0, 0, 0},     // one pair into a second tile
      {701, 6, 8, 4, 6, 8},      // 4,206 pairs: 3 tiles, the last thread's run cut at 6,
                                 // skewed, experts 6-7 empty
      {100, 6, 24, 0, 10, 16},   // many experts, a block each, a run of them empty
  };
  uint64_t seed = 11;
  for (const Case& c : cases) {
    CAPTURE(c.N);
    CAPTURE(c.K);
    CAPTURE(c.E);
    run_case(c, seed++);
  }
}

}  // namespace
