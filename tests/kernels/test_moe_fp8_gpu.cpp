// One MoE layer on the GPU, FP8 routed experts two ways on the same card: the loop of FP8
// Linears (per-expert fp8_gemm_nt calls) and the grouped path over the padded layout
// (lib/model/moe_fp8.cpp: fp8_quantize_blocks_multi, fp8_gemm_nt_grouped / kgrouped). Both
// feed the same kernel bodies the same E4M3 operands in the same K order (pad rows add exact
// zeros), so outputs, input gradients and every parameter gradient agree up to the order of
// the scatters' atomic additions. Shapes take the wgmma kernel (dims multiples of 16) and the
// portable one (not), experts with more than 128 rows, an expert with none, both scale
// formats. Label gpu (ds_test_model_gpu).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <utility>
#include <vector>

#include "ds/core/rng.hpp"
#include "ds/model/moe.hpp"
#include "ds/ops/ops.hpp"

namespace {

using namespace ds;
using namespace ds::model;

ModelArgs moe_args(int64_t C, int64_t I) {
  ModelArgs a;
  a.dim = C; a.moe_inter_dim = I;
  a.n_routed_experts = 4; a.n_activated_experts = 2; a.n_shared_experts = 1;
  a.n_expert_groups = 2; a.n_limited_groups = 2; a.route_scale = 2.5;
  a.init_std = 0.05;
  return a;
}

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
  void pass(const ops::Context& ctx, int grouped, const Tensor& u, const Tensor& dy) {
    MoEOptions opt;
    opt.train = true;
    opt.balance_alpha = 1e-2f;
    opt.grouped = grouped;
    moe->forward(ctx, u, 2, u.size(0) / 2, opt, y, saved);
    moe->backward(ctx, saved, dy, du);
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
      double worst = 0;
      for (size_t i = 0; i < loop.store.params().size(); ++i)
        worst = std::max(worst, rel_diff(grouped.store.params()[i].grad,
                                         loop.store.params()[i].grad));
      const double ry = rel_diff(grouped.y, loop.y), rdu = rel_diff(grouped.du, loop.du);
      std::printf("moe fp8 grouped vs loop on the GPU, C %lld, scales %d: y %.3g du %.3g "
                  "worst grad %.3g\n", static_cast<long long>(C), int(f), ry, rdu, worst);
      CHECK(ry <= 1e-4);
      CHECK(rdu <= 1e-4);
      CHECK(worst <= 1e-4);
    }
}
