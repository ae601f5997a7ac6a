// Packing is exact: on the tiny preset (MTP depth 1 included, balance alpha 0 because the
// sequence-wise balance loss is by definition per packed row), the loss and every parameter
// gradient of a packed batch equal the token-weighted combination of its samples run one by
// one (each as its own sequence, weight W_i / W). Tolerances: losses 1e-5 relative; gradients
// max |g_packed - g_single| <= 3e-5 * max|g| + 1e-9 per tensor (float32 sums in another order;
// observed at most 4e-6 of max|g|). A control without segments and restarting positions (no
// sample masking) must miss by far (observed: differences of the order of max|g| itself).
// The same holds for a step split into micro-batches weighted by W_m / W (as ds-sft does).
// reference: include/ds/sft/packing.hpp; docs/model.md "Losses" (masked normalisation).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "ds/core/rng.hpp"
#include "ds/model/transformer.hpp"
#include "ds/sft/packing.hpp"
#include "ds/train/trainer.hpp"

using namespace ds;
using namespace ds::sft;

namespace {

struct Grads {
  double loss = 0, loss_main = 0, loss_mtp = 0;
  std::vector<std::vector<float>> g;   // per parameter, registration order
};

std::vector<std::vector<float>> copy_grads(model::ParamStore& ps) {
  std::vector<std::vector<float>> out;
  for (auto& p : ps.params()) out.emplace_back(p.grad.f32(), p.grad.f32() + p.grad.numel());
  return out;
}

struct Fixture {
  model::ModelArgs args;
  model::ParamStore ps;
  std::unique_ptr<model::Transformer> m;
  ops::Context ctx;
  std::vector<Sample> samples;
  std::vector<Row> rows;
  int64_t T = 31;
  model::LossWeights lw{0.3f, 0.0f};

  Fixture() {
    args = model::preset("tiny");
    args.init_std = 0.05;   // larger than 0.006 so attention is far from uniform
    m = std::make_unique<model::Transformer>(args, ps);
    ps.alloc_grads();
    ps.init(5);
    Rng brng(5, 99);
    for (auto& [name, t] : ps.buffers())   // router biases take part in the selection
      for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(0.05 * brng.normal());
    Rng rng(17, 3);
    for (int64_t len : {9, 14, 6, 11, 17, 5}) {
      Sample s;
      s.tokens.push_back(0);   // BOS
      s.target.push_back(0);
      for (int64_t i = 1; i < len; ++i) {
        s.tokens.push_back(int32_t(3 + rng.below(uint64_t(args.vocab_size - 3))));
        s.target.push_back(i == len - 1 || rng.uniform() < 0.6 ? 1 : 0);
        s.n_targets += s.target.back();
      }
      samples.push_back(std::move(s));
    }
    rows = {Row{{0, 1, 2}, 29}, Row{{3, 4}, 28}, Row{{5}, 5}};   // rows of T+1 = 32 tokens
  }

  Grads packed(std::span<const Row> rs, float scale, bool segments = true) {
    model::Batch b = make_batch(samples, rs, T, /*pad_id=*/2);
    if (!segments) {
      b.segments = Tensor();
      b.positions = Tensor();
    }
    ps.zero_grads();
    auto r = m->forward_backward(ctx, b, lw, scale);
    return Grads{r.loss, r.loss_main, r.loss_mtp, copy_grads(ps)};
  }

  // Every sample alone as a (1, L_i) sequence, gradients weighted by W_i / W.
  Grads one_by_one() {
    double W = 0;
    for (const Sample& s : samples) W += double(s.n_targets);
    ps.zero_grads();
    Grads out;
    for (const Sample& s : samples) {
      const int64_t L = int64_t(s.tokens.size());
      model::Batch b;
      b.tokens = Tensor::empty({1, L}, DType::i32);        // (1, T_i + 1)
      b.loss_mask = Tensor::empty({1, L - 1}, DType::f32);  // (1, T_i)
      for (int64_t i = 0; i < L; ++i) b.tokens.i32()[i] = s.tokens[size_t(i)];
      for (int64_t i = 0; i + 1 < L; ++i) b.loss_mask.f32()[i] = float(s.target[size_t(i + 1)]);
      const double share = double(s.n_targets) / W;
      auto r = m->forward_backward(ctx, b, lw, float(share));
      out.loss += share * r.loss;
      out.loss_main += share * r.loss_main;
      out.loss_mtp += share * r.loss_mtp;
    }
    out.g = copy_grads(ps);
    return out;
  }
};

constexpr double kGradRtol = 3e-5;

// Largest per-tensor violation of |a - b| <= kGradRtol * max|a| + 1e-9 (<= 1 passes).
double compare(const Grads& a, const Grads& b, model::ParamStore& ps, bool verbose) {
  double worst = 0, worst_rel = 0;
  size_t k = 0;
  for (auto& p : ps.params()) {
    const auto& x = a.g[k];
    const auto& y = b.g[k];
    double mx = 0, diff = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      mx = std::max(mx, double(std::fabs(x[i])));
      diff = std::max(diff, double(std::fabs(x[i] - y[i])));
    }
    worst = std::max(worst, diff / (kGradRtol * mx + 1e-9));
    worst_rel = std::max(worst_rel, mx > 0 ? diff / mx : 0.0);
    if (verbose && diff > kGradRtol * mx + 1e-9)
      std::printf("  %s: max|g| %.3g, max diff %.3g\n", p.info.name.c_str(), mx, diff);
    ++k;
  }
  if (verbose) std::printf("  worst relative gradient difference %.3g\n", worst_rel);
  return worst;
}

}  // namespace

TEST_CASE("a packed batch equals its samples one by one (loss and every gradient, with MTP)") {
  Fixture f;
  Grads p = f.packed(f.rows, 1.0f);
  Grads s = f.one_by_one();
  std::printf("packed loss %.9f (main %.9f, mtp %.9f); one by one %.9f (main %.9f, mtp %.9f)\n",
              p.loss, p.loss_main, p.loss_mtp, s.loss, s.loss_main, s.loss_mtp);
  CHECK(p.loss_mtp > 0);
  CHECK(p.loss_main == doctest::Approx(s.loss_main).epsilon(1e-5));
  CHECK(p.loss_mtp == doctest::Approx(s.loss_mtp).epsilon(1e-5));
  CHECK(p.loss == doctest::Approx(s.loss).epsilon(1e-5));
  CHECK(compare(p, s, f.ps, true) <= 1.0);
  // control: the same rows without sample masking give other numbers
  Grads leak = f.packed(f.rows, 1.0f, /*segments=*/false);
  CHECK(std::fabs(leak.loss_main - s.loss_main) > 1e-3 * s.loss_main);
  CHECK(compare(leak, s, f.ps, false) > 100.0);
}

TEST_CASE("micro-batches weighted by their share of the target tokens equal the whole step") {
  Fixture f;
  Grads whole = f.packed(f.rows, 1.0f);
  const double W = double(count_targets(f.samples, f.rows));
  f.ps.zero_grads();
  train::StepAccumulator acc;
  for (auto part :
       {std::span<const Row>(f.rows.data(), 2), std::span<const Row>(f.rows.data() + 2, 1)}) {
    const double share = double(count_targets(f.samples, part)) / W;
    model::Batch b = make_batch(f.samples, part, f.T, 2);
    acc.add(f.m->forward_backward(f.ctx, b, f.lw, float(share)), share);
  }
  Grads split{acc.loss, acc.loss_main, acc.loss_mtp, copy_grads(f.ps)};
  CHECK(split.loss_main == doctest::Approx(whole.loss_main).epsilon(1e-5));
  CHECK(split.loss == doctest::Approx(whole.loss).epsilon(1e-5));
  CHECK(compare(split, whole, f.ps, true) <= 1.0);
}
