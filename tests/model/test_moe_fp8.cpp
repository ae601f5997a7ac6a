// The routed experts' FP8 grouped path (lib/model/moe_fp8.cpp: padded expert-sorted layout,
// grouped FP8 GEMMs) against the per-expert loop of FP8 Linears (moe.cpp), on the CPU: one MoE
// layer's output, input gradient, balance loss and every parameter gradient agree to float
// summation order with the reference GEMMs (FP32 and UE8M0 scales) and with the optimised ones
// and UE8M0 scales, and within an E4M3 rounding step with the optimised ones and FP32 scales.
// The shapes make the padding matter: experts get more than 128 rows (two 128x1 Wgrad groups
// along the tokens, the second partial), C and the expert width are not multiples of 128
// (partial 1x128 and 128x128 groups), and one expert gets no row at all. The test also checks that
// the grouped path was the one taken (the padded offsets exist and add rows) and that per-tensor
// scaling keeps the loop; and MoEOptions::fp8_codes, the GPU's sequence of ops (E4M3 codes, the
// many-matrix weight quantiser, transposed operands, m- and k-grouped FP8 GEMMs) run with the CPU
// kernels.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "ds/core/rng.hpp"
#include "ds/model/moe.hpp"
#include "ds/ops/ops.hpp"
#include "moe_test_util.hpp"

using namespace ds;
using namespace ds::model;
using namespace ds::model::test;

namespace {

// C 200, expert width 136, E 4 in 2 groups (both kept), K 2, one shared expert.
ModelArgs fp8_moe_args() { return small_moe_args(200, 136); }

ops::Context fp8_ctx(ops::Fp8Granularity g, ops::ScaleFormat f,
                     ops::Impl impl = ops::Impl::optimized) {
  ops::Context c;
  c.impl = impl;
  c.threads = 2;
  c.linear = ops::LinearPrecision{ops::Precision::fp8, g, f};
  return c;
}

}  // namespace

TEST_CASE("moe fp8 grouped: the padded grouped GEMMs equal the per-expert loop of FP8 Linears") {
  const ModelArgs a = fp8_moe_args();
  const int64_t n_seq = 2, T = 150, N = n_seq * T;   // 600 pairs over 3 experts
  const Tensor u = randn({N, a.dim}, 1), dy = randn({N, a.dim}, 2);
  // The reference GEMMs sum every product in one order whatever the rows, so the two paths
  // agree to float rounding. The optimised GEMMs may block a padded expert's rows differently
  // from its unpadded ones (without AVX-512: OpenBLAS and the portable kernels), and with FP32
  // scales such a last-bit difference can move a downstream element across an E4M3 rounding
  // boundary (1/16 of it; measured on an AMD EPYC without AVX-512: y 1.5e-4, du 3.9e-5,
  // gradients 2.1e-4). UE8M0 scales make every product exact, which leaves summation order.
  for (int c = 0; c < 4; ++c) {
    const ops::Impl impl = c < 2 ? ops::Impl::reference : ops::Impl::optimized;
    const ops::ScaleFormat f = c % 2 ? ops::ScaleFormat::ue8m0 : ops::ScaleFormat::fp32;
    CAPTURE(int(impl));
    CAPTURE(int(f));
    const ops::Context ctx = fp8_ctx(ops::Fp8Granularity::tile, f, impl);
    const double tol = impl == ops::Impl::optimized && f == ops::ScaleFormat::fp32 ? 1e-3 : 1e-5;
    Run loop(a), grouped(a);
    loop.pass(ctx, 0, u, dy, n_seq, T);
    grouped.pass(ctx, 1, u, dy, n_seq, T);
    REQUIRE(loop.saved.p_offsets.empty());
    REQUIRE(grouped.saved.grouped);
    REQUIRE(grouped.saved.p_offsets.size() == 5);
    const std::vector<int32_t>& counts = grouped.saved.counts;
    CHECK(counts[3] == 0);
    CHECK(*std::max_element(counts.begin(), counts.end()) > 128);
    CHECK(grouped.saved.p_offsets.back() > grouped.saved.offsets.back());   // rows were added
    for (size_t e = 0; e < 4; ++e) CHECK(grouped.saved.p_offsets[e + 1] % 128 == 0);
    CHECK(grouped.saved.balance == doctest::Approx(loop.saved.balance).epsilon(1e-12));
    CHECK(rel_diff(grouped.y, loop.y) <= tol);
    CHECK(rel_diff(grouped.du, loop.du) <= tol);
    for (size_t i = 0; i < loop.store.params().size(); ++i) {
      const Param& p1 = loop.store.params()[i];
      const Param& p2 = grouped.store.params()[i];
      CAPTURE(p1.info.name);
      REQUIRE(p1.info.name == p2.info.name);
      CHECK(rel_diff(p2.grad, p1.grad) <= tol);
    }
    // the routed experts' gradients are not all zero (the comparison above has content)
    double g = 0;
    for (const Param& p : grouped.store.params())
      if (p.info.expert == 0)
        for (int64_t i = 0; i < p.grad.numel(); ++i) g += std::fabs(p.grad.f32()[i]);
    CHECK(g > 0);
  }
}

TEST_CASE("moe fp8 grouped: the GPU's sequence of ops on E4M3 codes, run on the CPU") {
  const ModelArgs a = fp8_moe_args();
  const int64_t n_seq = 2, T = 150, N = n_seq * T;
  const Tensor u = randn({N, a.dim}, 1), dy = randn({N, a.dim}, 2);
  for (const ops::ScaleFormat f : {ops::ScaleFormat::fp32, ops::ScaleFormat::ue8m0}) {
    CAPTURE(int(f));
    const ops::Context ctx = fp8_ctx(ops::Fp8Granularity::tile, f);
    Run loop(a), codes(a);
    loop.pass(ctx, 0, u, dy, n_seq, T);
    codes.pass(ctx, 1, u, dy, n_seq, T, true);
    REQUIRE(codes.saved.fp8_codes);
    double worst = 0;
    for (size_t i = 0; i < loop.store.params().size(); ++i)
      worst = std::max(worst, rel_diff(codes.store.params()[i].grad, loop.store.params()[i].grad));
    const double dy_rel = rel_diff(codes.y, loop.y), du_rel = rel_diff(codes.du, loop.du);
    std::printf("fp8 codes vs loop (scales %d): y %.3g du %.3g worst grad %.3g\n", int(f),
                dy_rel, du_rel, worst);
    // FP8 GEMMs on codes sum in another order than the FP32 GEMMs of the emulation, which can
    // move a downstream element across an E4M3 rounding boundary (1/16 of it) with FP32
    // scales (measured: y 1.6e-6, du 7.6e-5, gradients 2.3e-3); UE8M0 scales make every
    // product exact, so only summation order is left (measured ~1e-7). A wrong expert, a
    // wrong transpose or a scale off by one block is O(1).
    const bool exact = f == ops::ScaleFormat::ue8m0;
    CHECK(dy_rel <= 1e-5);
    CHECK(du_rel <= (exact ? 1e-6 : 1e-3));
    CHECK(worst <= (exact ? 1e-6 : 1e-2));
  }
}

TEST_CASE("moe fp8 grouped: per-tensor scaling and the default keep the per-expert loop") {
  const ModelArgs a = fp8_moe_args();
  const Tensor u = randn({20, a.dim}, 3), dy = randn({20, a.dim}, 4);
  Run r(a);
  r.pass(fp8_ctx(ops::Fp8Granularity::tensor, ops::ScaleFormat::fp32), 1, u, dy, 2, 10);
  CHECK_FALSE(r.saved.grouped);
  r.pass(fp8_ctx(ops::Fp8Granularity::tile, ops::ScaleFormat::fp32), -1, u, dy, 2, 10);
  CHECK_FALSE(r.saved.grouped);
  CHECK(r.saved.p_offsets.empty());
}
