// One MoE layer on the GPU, FP8 routed experts two ways on the same card: the loop of FP8
// Linears (per-expert fp8_gemm_nt calls) and the grouped path over the padded layout
// (lib/model/moe_fp8.cpp: fp8_quantize_blocks_multi, fp8_gemm_nt_grouped / kgrouped). Both
// feed the same E4M3 operands in the same K order (pad rows add exact zeros). Fprop and Dgrad
// run the same kernel bodies both ways (K = C or I either way), so outputs and input gradients
// agree up to the order of the scatters' atomic additions (1e-4). The experts' weight
// gradients do not: the loop's Wgrad has K = the expert's token count, which is rarely a
// multiple of 16 and so takes the portable kernel, while the grouped Wgrad's K is the padded
// total and takes wgmma, whose FP8 products are accumulated with fewer carried bits within a
// 128-K block (the spec's "accumulation promotion"): those agree within 2e-3 of their largest
// element (a wrong expert, tile or block would be O(1)). Shapes take the wgmma kernel (dims
// multiples of 16) and the portable one (not), experts with more than 128 rows, an expert
// with none, both scale formats. And the bf16 grouped layer with the experts' GEMM outputs as BF16
// (Context::expert_outputs_bf16) against the same layer with F32 outputs on the card. Label
// gpu (ds_test_model_gpu).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ds/core/rng.hpp"
#include "ds/model/moe.hpp"
#include "ds/ops/ops.hpp"
#include "../model/moe_test_util.hpp"

namespace {

using namespace ds;
using namespace ds::model;

ModelArgs moe_args(int64_t C, int64_t I) { return ds::model::test::small_moe_args(C, I); }

Tensor to_host(const Tensor& t) {
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  h.copy_from(t);
  return h;
}

// max |a - b| / max |b| over two GPU tensors.
double rel_diff(const Tensor& ga, const Tensor& gb) {
  const Tensor a = to_host(ga), b = to_host(gb);
  double diff = 0, ref = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, double(std::fabs(a.f32()[i] - b.f32()[i])));
    ref = std::max(ref, double(std::fabs(b.f32()[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

Tensor randn_gpu(const Shape& s, uint64_t seed) {
  Tensor h = Tensor::empty(s);
  Rng rng(seed, 9);
  for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] = float(rng.normal());
  Tensor g = Tensor::empty(s, DType::f32, Device::cuda);
  g.copy_from(h);
  return g;
}

struct GpuLayer {
  ParamStore store;
  std::unique_ptr<MoE> moe;
  MoESaved saved;
  Tensor y, du;
  explicit GpuLayer(const ModelArgs& a) {
    store.set_device(Device::cuda);
    moe = std::make_unique<MoE>(store, a, "model.layers.1.mlp.", 1);
    store.init(7);
    store.alloc_grads();
    store.zero_grads();
    Tensor bias = to_host(moe->gate.bias());
    bias.f32()[3] = -1e3f;   // expert 3 never chosen: an empty group
    moe->gate.bias().copy_from(bias);
  }
  void pass(const ops::Context& ctx, int grouped, const Tensor& u, const Tensor& dy,
            bool forward_only = false) {
    MoEOptions opt;
    opt.train = true;
    opt.balance_alpha = 1e-2f;
    opt.grouped = grouped;
    moe->forward(ctx, u, 2, u.size(0) / 2, opt, y, saved);
    if (!forward_only) moe->backward(ctx, saved, dy, du);
  }
  double worst_diff(const GpuLayer& o) const {
    double w = std::max(rel_diff(y, o.y), rel_diff(du, o.du));
    for (size_t i = 0; i < store.params().size(); ++i)
      w = std::max(w, rel_diff(store.params()[i].grad, o.store.params()[i].grad));
    return w;
  }
};

}  // namespace

TEST_CASE("MoE layer: FP8 routed experts as grouped GEMMs equal the loop on the GPU") {
  for (const auto& [C, I] : {std::pair<int64_t, int64_t>{256, 192}, {200, 136}})
    for (const ops::ScaleFormat f : {ops::ScaleFormat::fp32, ops::ScaleFormat::ue8m0}) {
      CAPTURE(C);
      CAPTURE(int(f));
      const ModelArgs a = moe_args(C, I);
      ops::Context ctx;
      ctx.device = Device::cuda;
      ctx.linear = ops::LinearPrecision{ops::Precision::fp8, ops::Fp8Granularity::tile, f};
      const int64_t N = 300;   // 600 pairs over 3 experts
      const Tensor u = randn_gpu({N, C}, 1), dy = randn_gpu({N, C}, 2);
      GpuLayer loop(a), grouped(a);
      loop.pass(ctx, 0, u, dy);
      grouped.pass(ctx, 1, u, dy);
      REQUIRE(grouped.saved.grouped);
      REQUIRE(grouped.saved.fp8_codes);
      REQUIRE(!grouped.saved.p_offsets.empty());
      CHECK(grouped.saved.counts[3] == 0);
      CHECK(*std::max_element(grouped.saved.counts.begin(), grouped.saved.counts.end()) > 128);
      double worst = 0, worst_expert = 0;   // other parameters' grads; routed experts'
      for (size_t i = 0; i < loop.store.params().size(); ++i) {
        const double d = rel_diff(grouped.store.params()[i].grad, loop.store.params()[i].grad);
        const bool expert = loop.store.params()[i].info.name.find(".experts.") != std::string::npos;
        (expert ? worst_expert : worst) = std::max(expert ? worst_expert : worst, d);
      }
      const double ry = rel_diff(grouped.y, loop.y), rdu = rel_diff(grouped.du, loop.du);
      std::printf("moe fp8 grouped vs loop on the GPU, C %lld, scales %d: y %.3g du %.3g "
                  "worst grad %.3g, experts' %.3g\n", static_cast<long long>(C), int(f), ry,
                  rdu, worst, worst_expert);
      CHECK(ry <= 1e-4);
      CHECK(rdu <= 1e-4);
      CHECK(worst <= 1e-4);
      CHECK(worst_expert <= 2e-3);
    }
}

// The bf16 grouped layer (stacked gate/up) with the experts' GEMM outputs as BF16 codes: the
// codes kept for the backward, and the results within BF16 rounding of the F32 outputs' (a
// wrong row, expert or half would be O(1)); the CPU's twin is tests/model/
// test_moe_bf16_outputs.cpp.
TEST_CASE("MoE layer: BF16 expert outputs on the GPU") {
  const ModelArgs a = moe_args(256, 192);
  ops::Context ctx;
  ctx.device = Device::cuda;
  ctx.linear.mode = ops::Precision::bf16;
  const int64_t N = 300;
  const Tensor u = randn_gpu({N, a.dim}, 3), dy = randn_gpu({N, a.dim}, 4);
  GpuLayer f32(a), b16(a);
  ctx.expert_outputs_bf16 = 0;
  f32.pass(ctx, 1, u, dy);
  ctx.expert_outputs_bf16 = 1;
  b16.pass(ctx, 1, u, dy, true);
  REQUIRE(b16.saved.grouped);
  CHECK(b16.saved.g_h.dtype() == DType::bf16);
  CHECK(b16.saved.g_y.dtype() == DType::bf16);
  b16.moe->backward(ctx, b16.saved, dy, b16.du);
  const double d = b16.worst_diff(f32);
  std::printf("moe bf16 expert outputs BF16 vs F32 on the GPU: worst %.3g (y %.3g)\n", d,
              rel_diff(b16.y, f32.y));
  CHECK(d > 0);
  CHECK(d < 3e-2);
  CHECK(rel_diff(b16.y, f32.y) < 1e-2);
}
