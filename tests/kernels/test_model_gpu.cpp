// The whole model on the GPU against the CPU: the tiny preset's loss and every gradient after
// one forward/backward (FP32 GEMMs and attention on both sides; BF16 and FP8 GEMMs against
// the CPU emulation of the same precision), an SFT-style batch with packed segments and a
// loss mask, and a 30-step AdamW run whose loss curve must track the CPU run. Label gpu.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "ds/core/rng.hpp"
#include "ds/infer/engine.hpp"
#include "ds/model/config.hpp"
#include "ds/model/moe.hpp"
#include "ds/model/transformer.hpp"
#include "ds/ops/ops.hpp"
#include "ds/train/optimizer.hpp"
#include "ds/train/state.hpp"
#include "ds/train/trainer.hpp"
#include "kernels/fp8_quant.cuh"
#include "kernels/gemm_grouped.cuh"
#include "kernels/runtime.cuh"

namespace {

using namespace ds;
using namespace ds::model;

ops::Context context(Device d, ops::Precision p, bool exact_attention = false) {
  ops::Context c;
  c.device = d;
  c.threads = 2;
  c.linear.mode = p;
  c.exact_attention = exact_attention;
  return c;
}

Tensor random_tokens(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Tensor t = Tensor::empty({B, T + 1}, DType::i32);
  Rng rng(seed, 7);
  for (int64_t i = 0; i < t.numel(); ++i) t.i32()[i] = int32_t(rng.below(uint64_t(V)));
  return t;
}

// Packed rows: three samples per row, positions restarting at each, the first token of each
// sample unscored.
Batch sft_batch(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Batch b;
  b.tokens = random_tokens(B, T, V, seed);
  b.segments = Tensor::empty({B, T}, DType::i32);
  b.positions = Tensor::empty({B, T}, DType::i32);
  b.loss_mask = Tensor::empty({B, T});
  for (int64_t r = 0; r < B; ++r)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t seg = t * 3 / T, start = seg * T / 3;
      b.segments.i32()[r * T + t] = int32_t(seg);
      b.positions.i32()[r * T + t] = int32_t(t - start);
      b.loss_mask.f32()[r * T + t] = t == start ? 0.0f : 1.0f;
    }
  return b;
}

struct Side {
  ParamStore store;
  std::unique_ptr<Transformer> model;
  Side(const ModelArgs& a, Device d) {
    store.set_device(d);
    model = std::make_unique<Transformer>(a, store);
    store.init(11);
    store.alloc_grads();
  }
};

std::vector<float> host(const Tensor& t) {
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  h.copy_from(t);
  return std::vector<float>(h.f32(), h.f32() + h.numel());
}

// ||a - b|| / ||b|| over one tensor.
double rel(const Tensor& a, const Tensor& b) {
  const auto x = host(a), y = host(b);
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += double(y[i]) * y[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// grad_tol < 0: report the worst gradient difference without asserting on it.
void compare_step(const Batch& b, ops::Precision p, double loss_tol, double grad_tol,
                  int gpu_grouped = -1, bool exact_attention = false) {
  const ModelArgs a = preset("tiny");
  Side cpu(a, Device::cpu), gpu(a, Device::cuda);
  gpu.model->set_grouped_experts(gpu_grouped);   // the CPU side runs the per-expert loop
  const StepResult rc =
      cpu.model->forward_backward(context(Device::cpu, p), b, LossWeights{}, 1.0f);
  const int64_t launches0 = ds::cuda::grouped_gemm_kernel_launches();
  const int64_t wgmma0 = ds::cuda::grouped_gemm_wgmma_launches();
  const StepResult rg = gpu.model->forward_backward(context(Device::cuda, p, exact_attention), b,
                                                    LossWeights{}, 1.0f);
  const int64_t grouped_launches = ds::cuda::grouped_gemm_kernel_launches() - launches0;
  // DS_GROUPED_GEMM=kernel or wgmma (gpu-check.sh runs this binary with each and cublas): the
  // BF16 grouped expert GEMMs must really have gone through our kernel, the wgmma one where
  // it was asked for and the sm_90a build runs
  const ds::cuda::GroupedGemmImpl impl = ds::cuda::grouped_gemm_impl();
  if (impl != ds::cuda::GroupedGemmImpl::cublas && p == ops::Precision::bf16 && gpu_grouped != 0)
    CHECK(grouped_launches > 0);
  if (impl == ds::cuda::GroupedGemmImpl::wgmma && ds::cuda::grouped_gemm_wgmma_available() &&
      p == ops::Precision::bf16 && gpu_grouped != 0)
    CHECK(ds::cuda::grouped_gemm_wgmma_launches() > wgmma0);
  INFO("precision " << int(p) << " loss cpu " << rc.loss << " gpu " << rg.loss);
  CHECK(std::isfinite(rg.loss));
  CHECK(std::fabs(rg.loss - rc.loss) <= loss_tol * std::fabs(rc.loss));
  CHECK(std::fabs(rg.loss_mtp - rc.loss_mtp) <= loss_tol * std::fabs(rc.loss_mtp) + 1e-6);
  // Routing ties may break differently once the attention runs on BF16 tensor cores: exact
  // in fp32, within 1% of the routed tokens otherwise.
  int64_t moved = 0, total = 0;
  REQUIRE(rg.expert_counts.size() == rc.expert_counts.size());
  for (size_t l = 0; l < rc.expert_counts.size(); ++l)
    for (size_t e = 0; e < rc.expert_counts[l].size(); ++e) {
      moved += std::abs(rg.expert_counts[l][e] - rc.expert_counts[l][e]);
      total += rc.expert_counts[l][e];
    }
  // (fp8 even with exact attention: the wgmma FP8 GEMM's products within a 128-K block carry
  // fewer bits than the CPU's FP32 sums, and E4M3 quantisation amplifies such differences)
  if (p == ops::Precision::fp32 || (exact_attention && p != ops::Precision::fp8))
    CHECK(moved == 0);
  else CHECK(moved <= total / 100);
  double worst = 0;
  std::string worst_name;
  for (size_t i = 0; i < cpu.store.params().size(); ++i) {
    const double r = rel(gpu.store.params()[i].grad, cpu.store.params()[i].grad);
    if (r > worst) { worst = r; worst_name = cpu.store.params()[i].info.name; }
  }
  INFO("worst gradient " << worst_name << " rel " << worst);
  std::printf("model step, precision %d, grouped %d, exact attention %d: loss cpu %.8f gpu %.8f, "
              "worst grad rel %.3g (%s), grouped-kernel launches %lld\n", int(p), gpu_grouped,
              int(exact_attention), rc.loss, rg.loss, worst, worst_name.c_str(),
              static_cast<long long>(grouped_launches));
  if (grad_tol >= 0) CHECK(worst <= grad_tol);
}

}  // namespace

TEST_CASE("tiny model: one step on the GPU matches the CPU (fp32)") {
  Batch b;
  b.tokens = random_tokens(2, 64, preset("tiny").vocab_size, 5);
  compare_step(b, ops::Precision::fp32, 1e-5, 1e-3);
}

TEST_CASE("tiny model: the per-expert loop on the GPU matches too (fp32, bf16)") {
  Batch b;
  b.tokens = random_tokens(2, 64, preset("tiny").vocab_size, 8);
  compare_step(b, ops::Precision::fp32, 1e-5, 1e-3, 0);
  compare_step(b, ops::Precision::bf16, 2e-3, 5e-2, 0);
}

TEST_CASE("tiny model: SFT batch with segments and a loss mask (fp32)") {
  compare_step(sft_batch(2, 48, preset("tiny").vocab_size, 6), ops::Precision::fp32, 1e-5, 1e-3);
}

TEST_CASE("tiny model: BF16 and FP8 GEMMs against the CPU emulation") {
  Batch b;
  b.tokens = random_tokens(2, 64, preset("tiny").vocab_size, 7);
  // GEMM precision alone (exact FP32 attention on both sides): the CPU rounds the same
  // operands to BF16 / E4M3 and runs FP32 GEMMs; the GPU runs BF16 / FP8 GEMMs. In bf16 only
  // summation orders differ. In fp8 the GPU's wgmma kernel also accumulates its products
  // with fewer bits within each 128-K block (about 1e-5 of the sum; spec "accumulation
  // promotion"), and E4M3 quantisation amplifies any upstream difference (a 1e-3 relative
  // perturbation of one weight moves fp8 gradients by 5.5% on the CPU alone): fp8 checks the
  // loss and reports the gradients (their kernels are checked op by op, and the GPU's own fp8
  // paths against each other below).
  compare_step(b, ops::Precision::bf16, 1e-4, 1e-2, -1, true);
  compare_step(b, ops::Precision::fp8, 1e-4, -1, -1, true);
  // With the BF16 tensor-core attention of a bf16/fp8 context the computations differ by
  // BF16 rounding inside attention: bf16 gradients stay within 5e-2 (H200, 2026-11-30: 6.6e-3);
  // FP8 quantisation amplifies such differences (on the CPU alone, a 1e-3 relative
  // perturbation of q_b_proj moves fp8 gradients by 5.5%), so for fp8 only the loss is checked
  // and the gradient difference reported.
  compare_step(b, ops::Precision::bf16, 2e-3, 5e-2);
  compare_step(b, ops::Precision::fp8, 2e-3, -1);
}

TEST_CASE("tiny model: FP8 routed experts as grouped GEMMs over the padded layout") {
  // The GPU takes lib/model/moe_fp8.cpp (fp8_gemm_nt_grouped / kgrouped, opt-in with 1); the
  // CPU side runs the per-expert loop of FP8 Linears. Same bounds as the loop above (the
  // loss; the gradients reported).
  Batch b;
  b.tokens = random_tokens(2, 64, preset("tiny").vocab_size, 7);
  compare_step(b, ops::Precision::fp8, 1e-4, -1, 1, true);
  // and the grouped FP8 GEMMs are what ran (a profiled pass names its ops)
  Side gpu(preset("tiny"), Device::cuda);
  gpu.model->set_grouped_experts(1);
  ops::Profiler prof;
  ops::Context c = context(Device::cuda, ops::Precision::fp8, true);
  c.prof = &prof;
  c.gemm_accumulate = 0;   // the FP8 Linears' Wgrad would call the k-grouped GEMM too
  gpu.model->forward_backward(c, b, LossWeights{}, 1.0f);
  int seen = 0;
  for (const auto& e : prof.entries())
    seen +=
        std::string(e.op) == "fp8_gemm_nt_grouped" || std::string(e.op) == "fp8_gemm_nt_kgrouped";
  CHECK(seen == 2);
}

// One MoE layer on the GPU, routed experts grouped, gate_proj and up_proj as one GEMM over the
// stacked matrices (the default) against two GEMMs (Context::stacked_gate_up 0): only the
// input gradient's sum over 2I changes order (and cuBLAS may pick another algorithm for the
// wider GEMMs). Expert width 256 so that FP8 stacks too (UE8M0 scales: exact products). The
// fp8 case is named for the grouped-FP8 test group. The shared expert's MLP stacks as well
// (its one Linear against two). In bf16 the gate/up outputs are rounded to BF16 codes after
// SwiGLU, so a last-bit difference from another cuBLAS algorithm can flip a code and move an
// output by one BF16 step of one term: 1e-3 there (a wrong half, row or expert is O(1)),
// 1e-5 otherwise.
static void stacked_gate_up_layer(ops::Precision p) {
  ModelArgs a = preset("tiny");
  a.moe_inter_dim = 256;
  struct Layer {
    ParamStore store;
    std::unique_ptr<MoE> moe;
    MoESaved saved;
    Tensor y, du;
  };
  const int64_t n_seq = 2, T = 200, N = n_seq * T;
  Tensor u = Tensor::empty({N, a.dim}), dy = Tensor::empty({N, a.dim});
  Rng rng(3, 1);
  for (int64_t i = 0; i < u.numel(); ++i) u.f32()[i] = float(rng.normal());
  for (int64_t i = 0; i < dy.numel(); ++i) dy.f32()[i] = float(rng.normal());
  Layer l[2];
  for (int k = 0; k < 2; ++k) {
    l[k].store.set_device(Device::cuda);
    l[k].moe = std::make_unique<MoE>(l[k].store, a, "model.layers.1.mlp.", 1);
    l[k].store.init(9);
    l[k].store.alloc_grads();
    l[k].store.zero_grads();
    ops::Context c = context(Device::cuda, p);
    c.linear.scale_format = ops::ScaleFormat::ue8m0;
    c.stacked_gate_up = int8_t(k);
    Tensor gu = Tensor::empty(u.shape(), DType::f32, Device::cuda);
    Tensor gdy = Tensor::empty(dy.shape(), DType::f32, Device::cuda);
    gu.copy_from(u);
    gdy.copy_from(dy);
    MoEOptions opt;
    opt.train = true;
    opt.grouped = 1;
    l[k].moe->forward(c, gu, n_seq, T, opt, l[k].y, l[k].saved);
    CHECK(l[k].saved.g_h.defined() == (k == 1));   // the stacked GEMM ran where asked
    l[k].moe->backward(c, l[k].saved, gdy, l[k].du);
  }
  auto max_rel = [](const Tensor& a, const Tensor& b) {   // max |a - b| / max |b|
    const auto x = host(a), y = host(b);
    double d = 0, m = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      d = std::max(d, std::fabs(double(x[i]) - y[i]));
      m = std::max(m, std::fabs(double(y[i])));
    }
    return m > 0 ? d / m : d;
  };
  double worst = std::max(max_rel(l[1].y, l[0].y), max_rel(l[1].du, l[0].du));
  for (size_t i = 0; i < l[0].store.params().size(); ++i)
    worst = std::max(worst, max_rel(l[1].store.params()[i].grad, l[0].store.params()[i].grad));
  std::printf("moe layer, precision %d: stacked gate/up vs two GEMMs, worst rel %.3g\n", int(p),
              worst);
  CHECK(worst <= (p == ops::Precision::bf16 ? 1e-3 : 1e-5));
}

TEST_CASE("moe layer: stacked gate/up GEMM on the GPU equals two GEMMs (bf16, fp32)") {
  stacked_gate_up_layer(ops::Precision::bf16);
  stacked_gate_up_layer(ops::Precision::fp32);
}

TEST_CASE("moe layer: FP8 routed experts as grouped GEMMs, stacked gate/up equals two GEMMs") {
  stacked_gate_up_layer(ops::Precision::fp8);
}

// ds-rl's model passes (Transformer::token_scores, forward_backward_policy: the head's
// log-probabilities and entropies, dL/dlogp back through token_logprob_backward, a balance
// loss) on the GPU against the CPU, on a packed batch whose loss mask picks the scored
// targets: every log-probability and entropy, the loss and every gradient. fp32 on both
// sides, then bf16 GEMMs with exact attention (the GEMM precision alone, as above).
static void policy_case(ops::Precision p, double tol, double grad_tol) {
  const ModelArgs a = preset("tiny");
  const Batch b = sft_batch(2, 48, a.vocab_size, 9);
  Side side[2] = {Side(a, Device::cpu), Side(a, Device::cuda)};
  StepResult r[2];
  TokenScores sc[2], plain[2];
  for (int d = 0; d < 2; ++d) {
    const ops::Context c =
        context(d == 0 ? Device::cpu : Device::cuda, p, /*exact_attention=*/true);
    plain[d] = side[d].model->token_scores(c, b);
    // L = sum of w_t logp_t over the scored targets, weights of both signs
    const PolicyLossFn fn = [](const TokenScores& s, std::vector<float>& dlogp) {
      double L = 0;
      for (size_t t = 0; t < s.logp.size(); ++t) {
        const float w = 0.1f * float(int(t % 5) - 2);
        dlogp[t] = w;
        L += double(w) * s.logp[t];
      }
      return L;
    };
    r[d] = side[d].model->forward_backward_policy(c, b, fn, 1e-2f, 1.0f, &sc[d]);
  }
  auto worst = [](const std::vector<float>& x, const std::vector<float>& y) {   // max |x-y|/max|y|
    double diff = 0, ref = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      diff = std::max(diff, std::fabs(double(x[i]) - y[i]));
      ref = std::max(ref, std::fabs(double(y[i])));
    }
    return ref > 0 ? diff / ref : diff;
  };
  REQUIRE(sc[1].logp.size() == sc[0].logp.size());
  REQUIRE(plain[1].logp.size() == plain[0].logp.size());
  const double wl = worst(sc[1].logp, sc[0].logp), we = worst(sc[1].entropy, sc[0].entropy);
  const double wp = worst(plain[1].logp, plain[0].logp);
  double wg = 0;
  std::string wg_name;
  for (size_t i = 0; i < side[0].store.params().size(); ++i) {
    const double g = rel(side[1].store.params()[i].grad, side[0].store.params()[i].grad);
    if (g > wg) { wg = g; wg_name = side[0].store.params()[i].info.name; }
  }
  std::printf("policy pass, precision %d: loss cpu %.8f gpu %.8f, logp %.3g entropy %.3g "
              "(token_scores %.3g), worst grad rel %.3g (%s)\n", int(p), r[0].loss, r[1].loss,
              wl, we, wp, wg, wg_name.c_str());
  // the loss's terms cancel (weights of both signs): measured against the sum of their sizes
  double scale = 0, gpu_norm = 0;
  for (size_t t = 0; t < sc[0].logp.size(); ++t)
    scale += std::fabs(0.1 * (int(t % 5) - 2) * double(sc[0].logp[t]));
  for (const Param& q : side[1].store.params())
    for (float g : host(q.grad)) gpu_norm += double(g) * g;
  CHECK(std::isfinite(r[1].loss));
  CHECK(std::fabs(r[1].loss_main - r[0].loss_main) <= tol * scale);
  CHECK(std::fabs(r[1].loss_balance - r[0].loss_balance) <= tol * std::fabs(r[0].loss_balance));
  CHECK(wl <= tol);
  CHECK(we <= tol);
  CHECK(wp <= tol);
  CHECK(wg <= grad_tol);
  CHECK(gpu_norm > 0);   // (rel is 0 between two zero gradients)
}

TEST_CASE("tiny model: ds-rl's policy scores and gradients on the GPU match the CPU") {
  policy_case(ops::Precision::fp32, 1e-5, 1e-3);
  policy_case(ops::Precision::bf16, 1e-3, 3e-2);   // BF16 roundings may flip on either side
}

TEST_CASE("tiny model: a 30-step AdamW run on the GPU tracks the CPU run") {
  const ModelArgs a = preset("tiny");
  Side cpu(a, Device::cpu), gpu(a, Device::cuda);
  train::OptimizerOptions oo;
  train::AdamW oc(cpu.store, oo), og(gpu.store, oo);
  const ops::Context cc = context(Device::cpu, ops::Precision::fp32);
  const ops::Context cg = context(Device::cuda, ops::Precision::fp32);
  double max_dev = 0;
  for (int step = 0; step < 30; ++step) {
    Batch b;
    b.tokens = random_tokens(4, 32, 64, 100 + uint64_t(step));   // a learnable 64-token subset
    cpu.store.zero_grads();
    gpu.store.zero_grads();
    const StepResult rc = cpu.model->forward_backward(cc, b, LossWeights{}, 1.0f);
    const StepResult rg = gpu.model->forward_backward(cg, b, LossWeights{}, 1.0f);
    oc.step(cc, 3e-3f, oc.grad_stats(cc));
    og.step(cg, 3e-3f, og.grad_stats(cg));
    cpu.model->update_router_bias(rc.expert_counts, 1e-3f);
    gpu.model->update_router_bias(rg.expert_counts, 1e-3f);
    max_dev = std::max(max_dev, std::fabs(rg.loss - rc.loss) / rc.loss);
    if (step % 5 == 0 || step == 29)
      std::printf("step %2d loss cpu %.6f gpu %.6f\n", step, rc.loss, rg.loss);
    REQUIRE(std::isfinite(rg.loss));
  }
  std::printf("30-step run: max relative loss deviation %.3g\n", max_dev);
  CHECK(max_dev < 2e-3);
}

// Two copies of the tiny model on the GPU, trained side by side by AdamW under two contexts
// (the same initial weights and batches): a plain arm and an arm with an operand cache.
struct TwoArms {
  Side side[2];
  train::OptimizerOptions oo;
  train::AdamW opt[2];
  train::TrainerState st[2];
  explicit TwoArms(const ModelArgs& a)
      : side{Side(a, Device::cuda), Side(a, Device::cuda)},
        opt{train::AdamW(side[0].store, oo), train::AdamW(side[1].store, oo)} {}
  StepResult forward_backward(int arm, const ops::Context& c, const Batch& b) {
    side[arm].store.zero_grads();
    return side[arm].model->forward_backward(c, b, LossWeights{}, 1.0f);
  }
  void update(int arm, const ops::Context& c, const StepResult& r, int step) {   // lr 1e-2
    train::StepAccumulator acc;
    acc.add(r, 1.0);
    st[arm].step = step;
    train::apply_update(c, *side[arm].model, opt[arm], st[arm], acc, 1e-2, 1e-3, false, "run");
  }
};

// The step's BF16 weight operands kept from forward to backward (ops::OperandCache, as
// train::make_context sets it on the GPU; rewritten in place by AdamW's update, the default
// Context::operand_refresh) and the activations' BF16 operands made once (model::gemm_input,
// the GPU's default): 4 bf16 steps with both track 4 with neither (every Linear rounding its
// own operands), with fewer BF16 roundings, and the cache's entries made in the first step
// only. Not bit for bit on the GPU (the embedding's gradient adds rows with atomics); stale
// operands would show at the update's scale (lr 1e-2), far above 1e-4.
TEST_CASE(
    "tiny model: bf16 steps with the operand cache and shared GEMM inputs track plain steps") {
  TwoArms arms(preset("tiny"));
  ops::Context cp = context(Device::cuda, ops::Precision::bf16);
  ops::Context cc = cp;
  cp.linear.share_inputs = 0;
  cc.operands = std::make_shared<ops::OperandCache>();
  ops::Profiler pp, pc;   // the shared arm must round less: its sharing is on by default
  cp.prof = &pp;
  cc.prof = &pc;
  int64_t made_first = 0;
  for (int step = 1; step <= 4; ++step) {
    Batch b;
    b.tokens = random_tokens(4, 32, 64, 200 + uint64_t(step));
    const StepResult rp = arms.forward_backward(0, cp, b);
    const StepResult rc = arms.forward_backward(1, cc, b);
    CHECK(cc.operands->entries() > 0);
    CAPTURE(step);
    CHECK(std::fabs(rc.loss - rp.loss) <= 1e-4 * std::fabs(rp.loss));
    arms.update(0, cp, rp, step);
    const size_t entries = cc.operands->entries();
    arms.update(1, cc, rc, step);
    // every BF16 entry refreshed, none dropped (DS_CUDA_FUSED=0: cleared instead)
    CHECK(cc.operands->entries() == (ops::refreshes_operands(cc) ? entries : 0));
    if (step == 1) made_first = cc.operands->made();
  }
  if (ops::refreshes_operands(cc))
    CHECK(cc.operands->made() == made_first);   // later steps made no entry again
  else
    CHECK(cc.operands->made() > made_first);
  auto roundings = [](const ops::Profiler& p) {
    int64_t n = 0;
    for (const auto& e : p.entries())
      if (std::string(e.op).rfind("bf16_round", 0) == 0) n += e.calls;
    return n;
  };
  MESSAGE("bf16_round calls over 4 steps: ", roundings(pp), " plain, ", roundings(pc), " shared");
  CHECK(roundings(pc) < roundings(pp));
}

// The same across AdamW updates in fp8, where the cache holds each FP8 Linear's weight codes
// (both orientations, made on the GPU only) beside the BF16 operands of the Linears that stay
// BF16 (the head, MTP's eh_proj): the update rewrites the BF16 ones and drops the FP8 codes,
// which the next forward makes again from the new weights. Codes left stale after an update
// (lr 1e-2, large against the weights) would move the next loss far past 1e-3.
TEST_CASE("tiny model: fp8 steps with the operand cache track plain steps across updates") {
  TwoArms arms(preset("tiny"));
  ops::Context cp = context(Device::cuda, ops::Precision::fp8);
  ops::Context cc = cp;
  cc.operands = std::make_shared<ops::OperandCache>();
  size_t kept_first = 0;
  int64_t made_before = 0;
  for (int step = 1; step <= 3; ++step) {
    CAPTURE(step);
    Batch b;
    b.tokens = random_tokens(4, 32, 64, 300 + uint64_t(step));
    const StepResult rp = arms.forward_backward(0, cp, b);
    const StepResult rc = arms.forward_backward(1, cc, b);
    std::printf("fp8 cached step %d: loss plain %.7f cached %.7f\n", step, rp.loss, rc.loss);
    CHECK(std::fabs(rc.loss - rp.loss) <= 1e-3 * std::fabs(rp.loss));
    CHECK(cc.operands->made() > made_before);   // the FP8 codes made again each step
    made_before = cc.operands->made();
    const size_t before = cc.operands->entries();
    arms.update(0, cp, rp, step);
    arms.update(1, cc, rc, step);
    const size_t kept = cc.operands->entries();
    if (!ops::refreshes_operands(cc)) {   // DS_CUDA_FUSED=0: cleared
      CHECK(kept == 0);
      continue;
    }
    CHECK(kept < before);   // the FP8 codes dropped, the BF16 operands kept
    if (step == 1) kept_first = kept;
    CHECK(kept == kept_first);
  }
}

namespace {

// Calls of one op in a profile.
int64_t op_calls(const ops::Profiler& p, const char* op) {
  int64_t n = 0;
  for (const auto& e : p.entries())
    if (std::string(e.op) == op) n += e.calls;
  return n;
}

// One step of the tiny model on the GPU under each of two contexts (the same weights and
// batch): the results and the largest relative gradient difference between the two.
struct TwoSteps {
  StepResult r0, r1;
  double worst_grad = 0;
};
TwoSteps two_steps(const ops::Context& c0, const ops::Context& c1, uint64_t seed) {
  const ModelArgs a = preset("tiny");
  Side s0(a, Device::cuda), s1(a, Device::cuda);
  Batch b;
  b.tokens = random_tokens(4, 32, a.vocab_size, seed);
  TwoSteps t;
  t.r0 = s0.model->forward_backward(c0, b, LossWeights{}, 1.0f);
  t.r1 = s1.model->forward_backward(c1, b, LossWeights{}, 1.0f);
  for (size_t i = 0; i < s0.store.params().size(); ++i)
    t.worst_grad =
        std::max(t.worst_grad, rel(s1.store.params()[i].grad, s0.store.params()[i].grad));
  return t;
}

}  // namespace

// FP8 Linears' weight codes from the step's operand cache: one fp8_quantize_blocks_multi per
// weight and step makes the Fprop codes and Dgrad's transposed ones (no F32 transpose, no
// second quantisation); the same losses as the step without the cache, whose Linears
// quantise each orientation when they need it, and the same gradients (bit for bit but for
// the embedding's atomic row sums).
TEST_CASE("tiny model: fp8 steps with the weights' codes cached track plain steps") {
  ops::Context cp = context(Device::cuda, ops::Precision::fp8), cc = cp;
  cc.operands = std::make_shared<ops::OperandCache>();
  ops::Profiler pp, pc;
  cp.prof = &pp;
  cc.prof = &pc;
  const TwoSteps t = two_steps(cp, cc, 41);
  CHECK(t.r1.loss == t.r0.loss);
  CHECK(t.worst_grad <= 1e-6);
  ParamStore store;   // the FP8 Linears (the per-expert loop: every expert's matrices)
  Transformer m(preset("tiny"), store);
  int64_t fp8_weights = 0;
  for (const auto& prm : store.params()) fp8_weights += prm.info.fp8 ? 1 : 0;
  const int64_t plain = op_calls(pp, "fp8_quantize_blocks_multi");
  const int64_t cached = op_calls(pc, "fp8_quantize_blocks_multi");
  MESSAGE("fp8 step: blocks_multi calls ", plain, " plain, ", cached, " cached; transposes ",
          op_calls(pp, "transpose"), " plain, ", op_calls(pc, "transpose"), " cached; ",
          fp8_weights, " FP8 weights");
  CHECK(cached <= fp8_weights);
  CHECK(cached < plain);
}

// The FP8 Linears' quantisations on 128x128 tiles (DS_FP8_QUANT=tiles: the forward's 1x128
// codes, dy's two operands from one read, the input's Wgrad operand without the F32 round
// trip in memory): the step of the plain quantisers, the same loss and gradients (bit for bit
// but for the embedding's atomic row sums), and the tile kernels did run.
TEST_CASE("tiny model: fp8 tile quantisers give the plain quantisers' step") {
  const bool was = ds::cuda::fp8_quant_tiles();
  const ModelArgs a = preset("tiny");
  Side s0(a, Device::cuda), s1(a, Device::cuda);
  Batch b;
  b.tokens = random_tokens(4, 32, a.vocab_size, 43);
  const ops::Context c = context(Device::cuda, ops::Precision::fp8);
  ds::cuda::set_fp8_quant_tiles(false);
  const StepResult r0 = s0.model->forward_backward(c, b, LossWeights{}, 1.0f);
  ds::cuda::set_fp8_quant_tiles(true);
  using Kind = ds::cuda::Fp8TilesKind;
  const int64_t dual0 = ds::cuda::fp8_quant_tiles_launches(Kind::dual);
  const int64_t req0 = ds::cuda::fp8_quant_tiles_launches(Kind::requant);
  const int64_t before = ds::cuda::fp8_quant_tiles_launches();
  const StepResult r1 = s1.model->forward_backward(c, b, LossWeights{}, 1.0f);
  const int64_t launches = ds::cuda::fp8_quant_tiles_launches() - before;
  const int64_t dual = ds::cuda::fp8_quant_tiles_launches(Kind::dual) - dual0;
  const int64_t req = ds::cuda::fp8_quant_tiles_launches(Kind::requant) - req0;
  ds::cuda::set_fp8_quant_tiles(was);
  double worst = 0;
  for (size_t i = 0; i < s0.store.params().size(); ++i)
    worst = std::max(worst, rel(s1.store.params()[i].grad, s0.store.params()[i].grad));
  MESSAGE("fp8 step: tile quantiser launches ", launches, " (dy's two operands ", dual,
          ", the inputs' Wgrad operands ", req, "); loss ", r0.loss, " plain, ", r1.loss,
          " tiles; largest relative gradient difference ", worst);
  REQUIRE(ds::cuda::fused_ops());   // (gpu-check runs it with the fused paths on)
  CHECK(dual > 0);   // the backward's two quantisations took the tile kernel
  CHECK(req > 0);
  CHECK(r1.loss == r0.loss);
  CHECK(worst <= 1e-6);
}

// q, k, v handed to the tensor-core attention as BF16 codes by their producers (on by default
// on the GPU in bf16 and fp8): the same losses as F32 inputs, which the attention rounds to the
// same codes itself, and the same gradients (bit for bit but for the embedding's atomic row
// sums); q's RoPE writing the codes (rope_tail_codes) once per MLA layer and step is what the
// default arm adds, with no separate rounding.
TEST_CASE("tiny model: q, k, v as BF16 codes give the steps of F32 attention inputs") {
  if (!ds::cuda::fused_ops()) {   // DS_CUDA_FUSED=0 keeps the attention's inputs F32
    MESSAGE("skipped under DS_CUDA_FUSED=0");
    return;
  }
  const ModelArgs a = preset("tiny");
  for (ops::Precision p : {ops::Precision::bf16, ops::Precision::fp8}) {
    CAPTURE(int(p));
    ops::Context cf = context(Device::cuda, p), cc = cf;
    cf.attention_inputs = 0;
    REQUIRE(ops::attention_bf16_inputs(cc, a.qk_nope_head_dim + a.qk_rope_head_dim,
                                       a.v_head_dim));
    ops::Profiler pf, pc;
    cf.prof = &pf;
    cc.prof = &pc;
    const TwoSteps t = two_steps(cf, cc, 31);
    CHECK(t.r1.loss == t.r0.loss);
    CHECK(t.r1.loss_mtp == t.r0.loss_mtp);
    CHECK(t.worst_grad <= 1e-6);
    CHECK(op_calls(pc, "bf16_round") == op_calls(pf, "bf16_round"));
    CHECK(op_calls(pc, "rope_tail_codes") - op_calls(pf, "rope_tail_codes") ==
          a.n_layers + a.n_mtp_layers);
  }
}

namespace {

// The engine on the GPU against the CPU engine over the same weights: a batched prefill of two
// sequences, then one decode step per slot, then slot 0's cache copied to slot 1 and one more
// step of the same token on both; logits within tol (relative L2).
void engine_gpu_vs_cpu(DType kv_cache, double tol) {
  const ModelArgs a = preset("tiny");
  Side cpu(a, Device::cpu), gpu(a, Device::cuda);
  infer::EngineOptions eo;
  eo.slots = 2;
  eo.capacity = 64;
  eo.kv_cache = kv_cache;
  infer::Engine ec(a, cpu.store, context(Device::cpu, ops::Precision::fp32), eo);
  infer::Engine eg(a, gpu.store, context(Device::cuda, ops::Precision::fp32), eo);
  std::vector<int32_t> p0 = {5, 17, 99, 3, 250, 1024, 7}, p1 = {42, 42, 8};
  const std::vector<infer::SeqChunk> prefill = {{0, p0, true}, {1, p1, false}};
  const infer::StepOutput oc = ec.forward(prefill), og = eg.forward(prefill);
  REQUIRE(og.logits.device() == Device::cpu);   // the sampler reads them on the host
  CHECK(rel(og.logits, oc.logits) <= tol);
  std::vector<int32_t> d0 = {11}, d1 = {12};
  const std::vector<infer::SeqChunk> decode = {{0, d0, false}, {1, d1, false}};
  const infer::StepOutput dc = ec.forward(decode), dg = eg.forward(decode);
  CHECK(rel(dg.logits, dc.logits) <= tol);
  CHECK(eg.length(0) == 8);
  // slot 1 takes a copy of slot 0's cache (shared prefill); both decode the same token
  ec.copy_slot(0, 1);
  eg.copy_slot(0, 1);
  CHECK(eg.length(1) == 8);
  std::vector<int32_t> d2 = {13};
  const std::vector<infer::SeqChunk> same = {{0, d2, false}, {1, d2, false}};
  const infer::StepOutput sc = ec.forward(same), sg = eg.forward(same);
  CHECK(rel(sg.logits, sc.logits) <= tol);
  CHECK(rel(sg.logits.slice0(1, 2), sg.logits.slice0(0, 1)) <= 1e-6);
  std::printf("engine %s cache GPU vs CPU: prefill rel %.3g, decode rel %.3g\n",
              std::string(dtype_name(kv_cache)).c_str(), rel(og.logits, oc.logits),
              rel(dg.logits, dc.logits));
}

}  // namespace

TEST_CASE("tiny model: the inference engine (absorbed MLA, latent cache) on the GPU") {
  engine_gpu_vs_cpu(DType::f32, 1e-5);
}

TEST_CASE("tiny model: the engine with a BF16 latent cache (tensor-core decode) on the GPU") {
  // the same BF16 cache values on both sides; the GPU also rounds queries and attention
  // weights to BF16 (tensor cores), the CPU keeps them in FP32
  engine_gpu_vs_cpu(DType::bf16, 5e-3);
}

int main(int argc, char** argv) {
  if (ds::cuda::device_count() == 0) {
    std::fprintf(stderr, "no CUDA device: GPU tests skipped\n");
    return 77;
  }
  ds::ops::init_device(ds::Device::cuda);
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
