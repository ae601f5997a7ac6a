// Shared fixtures of the model tests: a micro DeepSeek-V3 configuration (every component, a
// few thousand parameters), random batches, and raw access to routing and gradients.
// reference: docs/model.md; tests/model/test_model_grad.cpp.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "ds/core/rng.hpp"
#include "ds/model/config.hpp"
#include "ds/model/transformer.hpp"

namespace ds::model::testing {

// dim 16, 2 layers (1 dense + 1 MoE), 2 heads, q_lora 8, kv_lora 8, head dims 4/4/4,
// 4 experts in 2 groups (1 kept), K 2, MTP depth 1, vocab 32, init std 0.2, YaRN on.
inline ModelArgs micro_args() {
  ModelArgs a;
  a.vocab_size = 32; a.dim = 16; a.inter_dim = 24; a.moe_inter_dim = 8;
  a.n_layers = 2; a.n_dense_layers = 1; a.n_heads = 2;
  a.n_routed_experts = 4; a.n_shared_experts = 1; a.n_activated_experts = 2;
  a.n_expert_groups = 2; a.n_limited_groups = 1; a.route_scale = 2.5;
  a.q_lora_rank = 8; a.kv_lora_rank = 8;
  a.qk_nope_head_dim = 4; a.qk_rope_head_dim = 4; a.v_head_dim = 4;
  a.yarn = true; a.rope_factor = 4.0; a.original_seq_len = 4; a.mscale = 1.0;
  a.max_seq_len = 64; a.n_mtp_layers = 1; a.init_std = 0.2;
  return a;
}

// Random tokens (B, T+1).
inline Tensor random_tokens(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Tensor t = Tensor::empty({B, T + 1}, DType::i32);
  Rng rng(seed, 7);
  for (int64_t i = 0; i < t.numel(); ++i) t.i32()[i] = int32_t(rng.below(uint64_t(V)));
  return t;
}

// Random router biases (selection only), so the bias path of the selection is exercised.
inline void randomize_biases(ParamStore& store, double sd, uint64_t seed) {
  Rng rng(seed, 11);
  for (auto& [name, t] : store.buffers())
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(sd * rng.normal());
}

// The selected experts of every token of every MoE layer, each token's K ids sorted (the order
// within a token's top-K does not change the output).
inline std::vector<std::vector<int32_t>> routes(const StepResult& r) {
  std::vector<std::vector<int32_t>> out;
  for (const Tensor& t : r.route_idx) {
    out.emplace_back(t.i32(), t.i32() + t.numel());
    const int64_t K = t.size(1);
    for (auto it = out.back().begin(); it != out.back().end(); it += K) std::sort(it, it + K);
  }
  return out;
}

}  // namespace ds::model::testing
