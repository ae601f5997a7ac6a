// Shared helpers of the engine tests: a tiny-preset model with random weights (larger init_std
// so attention and routing are far from uniform), logits comparisons as max|diff| relative to
// max|ref|, and random token sequences.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "ds/infer/engine.hpp"
#include "ds/model/config.hpp"
#include "ds/model/transformer.hpp"

namespace ds::infer::test {

struct TinyModel {
  model::ModelArgs args;
  model::ParamStore store;
  std::unique_ptr<model::Transformer> tf;
};

// tiny preset, init_std 0.05, q_lora on/off, MTP depth 1 (or 0).
inline std::unique_ptr<TinyModel> make_tiny(bool q_lora, int64_t mtp = 1, uint64_t seed = 7,
                                            bool yarn = false) {
  auto m = std::make_unique<TinyModel>();
  m->args = model::preset("tiny");
  m->args.init_std = 0.05;
  if (!q_lora) m->args.q_lora_rank = 0;
  m->args.n_mtp_layers = mtp;
  if (yarn) {   // YaRN frequencies + mscale^2 softmax scale
    m->args.yarn = true;
    m->args.rope_factor = 4.0;
    m->args.original_seq_len = 16;
    m->args.mscale = 1.0;
  }
  m->tf = std::make_unique<model::Transformer>(m->args, m->store);
  m->store.init(seed);
  return m;
}

inline std::vector<int32_t> random_tokens(size_t n, int64_t V, uint64_t seed) {
  std::mt19937_64 r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(r() % uint64_t(V));
  return t;
}

// max|a - b| / max|b| over n values.
inline double rel_diff(const float* a, const float* b, int64_t n) {
  double md = 0, mr = 0;
  for (int64_t i = 0; i < n; ++i) {
    md = std::max(md, std::fabs(double(a[i]) - double(b[i])));
    mr = std::max(mr, std::fabs(double(b[i])));
  }
  return md / std::max(mr, 1e-30);
}

inline ops::Context cpu_ctx(int threads = 2) {
  ops::Context c;
  c.threads = threads;
  return c;
}

}  // namespace ds::infer::test
