// The routed experts' GEMM outputs as BF16 (ops::Context::expert_outputs_bf16;
// lib/model/moe_grouped.cpp), on the CPU: in bf16 mode over the grouped, stacked path the
// layer keeps its gate/up and down outputs as BF16 codes and runs the backward on BF16 input
// gradients; the layer's output, input gradient and parameter gradients stay within BF16
// rounding of the F32-output layer's (and do differ: the rounding happened). Where the path
// does not apply (fp32 GEMMs, gate and up apart, the per-expert loop) the switch changes
// nothing, bit for bit. Each op's BF16 form is checked bit for bit in
// tests/ops/test_bf16_outputs.cpp.
#include <doctest/doctest.h>

#include <cstdio>

#include "ds/model/moe.hpp"
#include "ds/ops/ops.hpp"
#include "moe_test_util.hpp"

using namespace ds;
using namespace ds::model;
using namespace ds::model::test;

namespace {

ModelArgs small_args() { return small_moe_args(96, 64); }

ops::Context ctx_for(ops::Precision p, int stacked, int bf16_out) {
  ops::Context c;
  c.impl = ops::Impl::optimized;
  c.threads = 2;
  c.linear.mode = p;
  c.stacked_gate_up = int8_t(stacked);
  c.expert_outputs_bf16 = int8_t(bf16_out);
  return c;
}

}  // namespace

TEST_CASE("expert outputs BF16: the grouped bf16 layer within BF16 rounding of F32 outputs") {
  const int64_t n_seq = 2, T = 40, N = n_seq * T;
  const ModelArgs a = small_args();
  const Tensor u = randn({N, a.dim}, 3), dy = randn({N, a.dim}, 4);
  Run f32(a), b16(a);
  f32.pass(ctx_for(ops::Precision::bf16, 1, 0), 1, u, dy, n_seq, T);
  const ops::Context c = ctx_for(ops::Precision::bf16, 1, 1);
  b16.pass(c, 1, u, dy, n_seq, T, false, true);
  REQUIRE(b16.saved.grouped);
  CHECK(b16.saved.g_h.dtype() == DType::bf16);   // gate/up output kept as codes
  CHECK(b16.saved.g_y.dtype() == DType::bf16);   // down output
  CHECK(b16.saved.g_act.dtype() == DType::f32);   // the CPU's form of a BF16 operand
  b16.moe.backward(c, b16.saved, dy, b16.du);
  CHECK_FALSE(b16.saved.g_y.defined());   // released by the backward
  const double d = worst_diff(b16, f32);
  std::printf("expert outputs BF16 vs F32 (bf16 GEMMs): worst relative difference %.3g\n", d);
  // Each rounding moves a value by at most 2^-9 of itself; through SwiGLU, down_proj, the
  // combine and the backward's GEMMs the differences stay a few of those (a wrong row,
  // expert or half would be O(1)).
  CHECK(d > 0);
  CHECK(d < 3e-2);
  CHECK(rel_diff(b16.y, f32.y) < 1e-2);
}

TEST_CASE("expert outputs BF16: no effect where the path does not apply") {
  const int64_t n_seq = 1, T = 30, N = n_seq * T;
  const ModelArgs a = small_args();
  const Tensor u = randn({N, a.dim}, 5), dy = randn({N, a.dim}, 6);
  struct Case {
    ops::Precision p;
    int grouped, stacked;
  };
  for (const Case k : {Case{ops::Precision::fp32, 1, 1}, Case{ops::Precision::bf16, 1, 0},
                       Case{ops::Precision::bf16, 0, 1}}) {
    CAPTURE(int(k.p));
    CAPTURE(k.grouped);
    CAPTURE(k.stacked);
    Run off(a), on(a);
    off.pass(ctx_for(k.p, k.stacked, 0), k.grouped, u, dy, n_seq, T);
    on.pass(ctx_for(k.p, k.stacked, 1), k.grouped, u, dy, n_seq, T, false, true);
    CHECK((!on.saved.g_y.defined() || on.saved.g_y.dtype() == DType::f32));
    on.moe.backward(ctx_for(k.p, k.stacked, 1), on.saved, dy, on.du);
    CHECK(worst_diff(on, off) == 0.0);
  }
}
