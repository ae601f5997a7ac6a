// Shared by the MoE layer tests (test_moe_fp8.cpp, test_moe_stacked.cpp,
// test_moe_bf16_outputs.cpp): a small MoE configuration, one MoE layer in its own parameter
// store, a training pass over fixed inputs, and relative differences.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "ds/core/rng.hpp"
#include "ds/model/moe.hpp"
#include "ds/ops/ops.hpp"

namespace ds::model::test {

// Width C, expert width I; E 4 in 2 groups (both kept), K 2, one shared expert.
inline ModelArgs small_moe_args(int64_t C, int64_t I) {
  ModelArgs a;
  a.dim = C; a.moe_inter_dim = I;
  a.n_routed_experts = 4; a.n_activated_experts = 2; a.n_shared_experts = 1;
  a.n_expert_groups = 2; a.n_limited_groups = 2; a.route_scale = 2.5;
  a.init_std = 0.05;
  return a;
}

inline Tensor randn(const Shape& s, uint64_t seed) {
  Tensor t = Tensor::empty(s);
  Rng rng(seed, 9);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(rng.normal());
  return t;
}

// max |a - b| / max |b|.
inline double rel_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  double diff = 0, ref = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, double(std::fabs(a.f32()[i] - b.f32()[i])));
    ref = std::max(ref, double(std::fabs(b.f32()[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

struct Run {
  ParamStore store;
  MoE moe;
  MoESaved saved;
  Tensor y, du;
  explicit Run(const ModelArgs& a) : moe(store, a, "model.layers.1.mlp.", 1) {
    store.init(7);
    store.alloc_grads();
    store.zero_grads();
    // expert 3 is never chosen: an empty group
    float* bias = moe.gate.bias().f32();
    bias[3] = -1e3f;
  }
  // One training pass (forward, backward); `forward_only` stops before the backward (which
  // releases what the forward kept).
  void pass(const ops::Context& ctx, int grouped, const Tensor& u, const Tensor& dy,
            int64_t n_seq, int64_t T, bool codes = false, bool forward_only = false) {
    MoEOptions opt;
    opt.train = true;
    opt.balance_alpha = 1e-2f;
    opt.grouped = grouped;
    opt.fp8_codes = codes;
    moe.forward(ctx, u, n_seq, T, opt, y, saved);
    if (!forward_only) moe.backward(ctx, saved, dy, du);
  }
};

// The largest relative difference over two runs' y, du and every parameter gradient.
inline double worst_diff(const Run& a, const Run& b) {
  double w = std::max(rel_diff(a.y, b.y), rel_diff(a.du, b.du));
  for (size_t i = 0; i < a.store.params().size(); ++i)
    w = std::max(w, rel_diff(a.store.params()[i].grad, b.store.params()[i].grad));
  return w;
}

}  // namespace ds::model::test
