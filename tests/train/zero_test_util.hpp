// Helpers of the ZeRO-1 optimiser and distributed-checkpoint tests (test_zero.cpp, one
// process; test_zero_mpi.cpp, under mpirun): a small DeepSeek-V3 parameter set, the part of it
// one rank of a (pp, dp, ep) layout holds, and per-rank gradients that every rank can
// regenerate, so each rank computes the single-process reference locally.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ds/core/rng.hpp"
#include "ds/model/config.hpp"
#include "ds/model/parallel.hpp"
#include "ds/model/params.hpp"
#include "ds/model/transformer.hpp"

namespace ds::testing {

// The tiny preset with a 256-token vocabulary (about 0.8M parameters: quick on 4 ranks).
inline model::ModelArgs zero_test_args() {
  model::ModelArgs a = model::preset("tiny");
  a.vocab_size = 256;
  return a;
}

// Which part of the model a rank holds.
struct Part {
  int pp = 1, pp_rank = 0;   // pipeline stages
  int ep = 1, ep_rank = 0;   // expert groups
};

// Main layer of a tensor name "model.layers.{i}.…" (-1 for other names).
inline int layer_of(const std::string& name) {
  static const std::string pre = "model.layers.";
  if (name.rfind(pre, 0) != 0) return -1;
  return std::stoi(name.substr(pre.size()));
}

// The stage holding layer `layer` (-1: the embedding on the first stage; the MTP layers after
// the main ones, the final norm and the head on the last), as include/ds/model/parallel.hpp.
inline bool stage_holds(const model::ModelArgs& a, const Part& part, const std::string& name,
                        int layer) {
  if (part.pp == 1) return true;
  if (layer < 0) {
    if (name == "model.embed_tokens.weight") return part.pp_rank == 0;
    return part.pp_rank == part.pp - 1;   // model.norm, lm_head
  }
  if (layer >= a.n_layers) return part.pp_rank == part.pp - 1;
  auto [b, e] = model::stage_layers(a.n_layers, part.pp, part.pp_rank);
  return layer >= b && layer < e;
}

inline bool holds(const model::ModelArgs& a, const Part& part, const model::ParamInfo& p) {
  if (!stage_holds(a, part, p.name, p.layer)) return false;
  if (p.expert < 0) return true;
  const int64_t per = a.n_routed_experts / part.ep;
  return p.expert / per == part.ep_rank;
}

// The expert group (ep_rank) whose ranks hold routed expert e.
inline int expert_owner(const model::ModelArgs& a, int ep, int expert) {
  return int(expert / (a.n_routed_experts / ep));
}

// The parameters and buffers of `part`, initialised from `seed` (values depend only on the
// name, so every part agrees with the full model), buffers set to values of their name. The
// last stage of a pipeline also holds the embedding's copy (under the embedding's name).
inline std::unique_ptr<model::ParamStore> make_store(const model::ModelArgs& a, const Part& part,
                                                     uint64_t seed, bool with_copy = true) {
  model::ParamStore full;
  { model::Transformer t(a, full); }
  auto ps = std::make_unique<model::ParamStore>();
  for (const model::Param& p : full.params()) {
    const bool copy = with_copy && part.pp > 1 && part.pp_rank == part.pp - 1 &&
                      p.info.name == "model.embed_tokens.weight";
    if (holds(a, part, p.info) || copy) ps->add(p.info);
  }
  for (const auto& [name, t] : full.buffers()) {
    const int l = layer_of(name);
    if (stage_holds(a, part, name, l)) ps->add_buffer(name, t.shape());
  }
  ps->init(seed);
  for (auto& [name, t] : ps->buffers()) {
    Rng rng(seed, rng_stream("buffer:" + name));
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(rng.normal());
  }
  ps->alloc_grads();
  return ps;
}

// Gradient contribution of data-parallel rank `dp_rank` at `step` to parameter `name`:
// multiples of 2^-12 in [-1/8, 1/8], so sums over a few ranks are exact in float in any order
// (the reduction order then cannot change a result) and squares sum exactly in double.
inline void gen_grad(const std::string& name, int dp_rank, int step, float* g, int64_t n) {
  Rng rng(uint64_t(1000 + step), rng_stream("grad:" + name, uint64_t(dp_rank)));
  for (int64_t i = 0; i < n; ++i) g[i] = float(int64_t(rng.below(1025)) - 512) * (1.0f / 4096.0f);
}

// This rank's gradients: its own contribution to every parameter it holds.
inline void fill_grads(model::ParamStore& ps, int dp_rank, int step) {
  for (model::Param& p : ps.params())
    gen_grad(p.info.name, dp_rank, step, p.grad.f32(), p.grad.numel());
}

// The summed gradients of the full model: replicated parameters over all dp ranks, routed
// experts over the dp ranks of their expert group (dp_rank % ep == owner), in rank order.
inline void fill_reference_grads(const model::ModelArgs& a, model::ParamStore& full, int dp,
                                 int ep, int step) {
  std::vector<float> tmp;
  for (model::Param& p : full.params()) {
    const int64_t n = p.grad.numel();
    float* g = p.grad.f32();
    std::memset(g, 0, size_t(n) * sizeof(float));
    tmp.resize(size_t(n));
    for (int d = 0; d < dp; ++d) {
      if (p.info.expert >= 0 && d % ep != expert_owner(a, ep, p.info.expert)) continue;
      gen_grad(p.info.name, d, step, tmp.data(), n);
      for (int64_t i = 0; i < n; ++i) g[i] += tmp[size_t(i)];
    }
  }
}

// Largest |a - b| / (|b| + floor) over two tensors of the same shape and dtype (F32 or BF16).
inline double max_rel_diff(const Tensor& x, const Tensor& y, double floor = 1e-3) {
  auto at = [](const Tensor& t, int64_t i) {
    return t.dtype() == DType::bf16 ? double(bf16_to_f32(t.data<uint16_t>()[i]))
                                    : double(t.f32()[i]);
  };
  double m = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double a = at(x, i), b = at(y, i);
    const double d = a == b ? 0.0 : std::abs(a - b) / (std::abs(b) + floor);
    if (!(d <= m)) m = d;   // NaN propagates as the maximum
  }
  return m;
}

}  // namespace ds::testing
