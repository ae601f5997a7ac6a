// The MoE combine's kernel (kernels/moe_combine.cuh, ops::combine_pairs on the GPU) run on the
// CPU by the host emulator (cuda_emu.hpp: a fiber per CUDA thread) against the CPU op,
// bit for bit: the 4-wide and the scalar column paths, F32 rows and BF16 codes, weighted and
// not, K = 1, 6 and 16 (the kernel's limit), more rows than pairs (the FP8 experts' padded
// layout, NaN in the rows no slot names, which must never be read) and fewer warps than tokens
// (the grid-stride loop). dst lies between guard bytes.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "kernels/moe_combine.cuh"

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::cuda_emu::Guarded;
using ds::test::cuda_emu::launch;
namespace mc = ds::cuda::moecombine;

struct Case {
  int64_t N, K, C, blocks;   // blocks of 8 warps; fewer than N / 8 exercises the stride loop
};

void run_case(const Case& c, bool weighted, bool bf16, uint64_t seed) {
  const int64_t NK = c.N * c.K, R = NK + NK / 5;   // a NaN pad row after every fifth row
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<int64_t> perm(static_cast<size_t>(NK));   // pair p's row before the pads
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  Tensor slot = Tensor::empty({c.N, c.K}, DType::i32), w = Tensor::empty({c.N, c.K});
  for (int64_t p = 0; p < NK; ++p) {
    slot.i32()[p] = int32_t(perm[size_t(p)] + perm[size_t(p)] / 5);
    w.f32()[p] = u(rng);
  }
  std::vector<bool> named(size_t(R), false);
  for (int64_t p = 0; p < NK; ++p) named[size_t(slot.i32()[p])] = true;
  Tensor src = Tensor::empty({R, c.C}, bf16 ? DType::bf16 : DType::f32);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < c.C; ++j) {
      const float v = named[size_t(r)] ? u(rng) : NAN;
      if (bf16) static_cast<uint16_t*>(src.raw())[r * c.C + j] = ds::f32_to_bf16(v);
      else src.f32()[r * c.C + j] = v;
    }
  Tensor want = Tensor::empty({c.N, c.C});
  for (int64_t i = 0; i < want.numel(); ++i) want.f32()[i] = u(rng);
  Guarded<float> got(size_t(want.numel()), 0x5a);
  std::memcpy(got.data(), want.f32(), size_t(want.numel()) * sizeof(float));
  ds::ops::Context ref;
  ref.impl = ds::ops::Impl::reference;
  ds::ops::combine_pairs(ref, src, slot, weighted ? w : Tensor(), want);

  // the launcher's choice (moe_route.cu): 4-wide when C % 4 == 0 (the buffers are aligned)
  const bool vec = c.C % 4 == 0;
  using mc::combine_pairs_kernel;
  auto* k = vec ? (bf16 ? combine_pairs_kernel<true, true> : combine_pairs_kernel<true, false>)
                : (bf16 ? combine_pairs_kernel<false, true> : combine_pairs_kernel<false, false>);
  launch(k, dim3(unsigned(c.blocks)), dim3(256), static_cast<const void*>(src.raw()),
         static_cast<const int32_t*>(slot.i32()),
         weighted ? static_cast<const float*>(w.f32()) : static_cast<const float*>(nullptr),
         got.data(), R, c.N, int(c.K), c.C);
  CHECK(got.guards_intact(0x5a));
  int64_t bad = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    bad += std::memcmp(got.data() + i, want.f32() + i, sizeof(float)) != 0;
  CHECK(bad == 0);
}

TEST_CASE("emulated combine_pairs kernel equals the CPU op bit for bit") {
  const Case cases[] = {
      {5, 1, 37, 1},     // K = 1, scalar columns (C % 4 != 0)
      {40, 6, 64, 2},    // DeepSeek-like K, 4-wide columns, 16 warps for 40 tokens
      {20, 16, 12, 1},   // the kernel's largest K, 3 column quads
      {9, 6, 130, 2},    // scalar columns past 4 x 32
  };
  uint64_t seed = 21;
  for (const Case& c : cases)
    for (const bool weighted : {true, false})
      for (const bool bf16 : {false, true}) {
        CAPTURE(c.N);
        CAPTURE(c.K);
        CAPTURE(c.C);
        CAPTURE(weighted);
        CAPTURE(bf16);
        run_case(c, weighted, bf16, seed++);
      }
}

}  // namespace
