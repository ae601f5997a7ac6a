// The AdamW step's kernels (kernels/adamw_step.cuh: ops::adamw_step and ops::adamw_step_multi
// on the GPU) run on the CPU by the host emulator (cuda_emu.hpp: a fiber per CUDA
// thread) against the CPU reference, bit for bit: parameters, F32 and BF16 moments, and the
// BF16 weight codes the many-tensor kernel writes; the 4-wide and the scalar paths (chosen by
// the launchers' alignment rule, adamwk::vectorised), tails of 1, 2 and 3 elements, both of ATen's
// lerp branches (beta1 0.9 and 0.3), the first step and a late one, a clipping scale, and
// gradients with inf and NaN (a NaN result compared as NaN). The many-tensor case has an
// empty entry, an entry over one 65,536-element chunk and a misaligned one in one table, laid
// out by the launcher's chunk_prefix; the one-tensor case runs on fewer blocks than elements
// need (the grid-stride loop). Outputs lie between guard bytes.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "kernels/adamw_step.cuh"

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"
#include "emu_buffers.hpp"
#include "moe_pairs_util.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::bit_mismatches;
using ds::test::code_mismatches;
using ds::test::EmuBuf;
using ds::test::ref_ctx;
using ds::test::cuda_emu::launch;
namespace ak = ds::cuda::adamwk;

// One tensor's state: param, grad, m, v (F32 or BF16 codes), as Tensors for the reference.
struct State {
  Tensor param, grad, m, v;
  State(int64_t n, bool m16, bool v16, bool specials, std::mt19937_64& rng)
      : param(Tensor::empty({n})), grad(Tensor::empty({n})),
        m(Tensor::empty({n}, m16 ? DType::bf16 : DType::f32)),
        v(Tensor::empty({n}, v16 ? DType::bf16 : DType::f32)) {
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (int64_t i = 0; i < n; ++i) {
      param.f32()[i] = u(rng);
      grad.f32()[i] = 0.1f * u(rng);
      const float mv = 0.01f * u(rng), vv = 1e-4f * std::fabs(u(rng));
      if (m16) m.data<uint16_t>()[i] = ds::f32_to_bf16(mv);
      else m.f32()[i] = mv;
      if (v16) v.data<uint16_t>()[i] = ds::f32_to_bf16(vv);
      else v.f32()[i] = vv;
    }
    if (specials && n > 6) {
      grad.f32()[1] = INFINITY;
      grad.f32()[4] = NAN;
      grad.f32()[n - 1] = -INFINITY;
    }
  }
};

void expect_same(EmuBuf& got, const Tensor& want, const char* what) {
  INFO(what);
  CHECK(got.ok());
  if (want.dtype() == DType::bf16)
    CHECK(code_mismatches(got.u(), want.data<uint16_t>(), want.numel(), true) == 0);
  else
    CHECK(bit_mismatches(got.f(), want.f32(), want.numel(), true) == 0);
}

ds::ops::AdamWParams params(float beta1, int64_t step, float wd, float grad_scale) {
  ds::ops::AdamWParams p;
  p.lr = 3e-3f;
  p.beta1 = beta1;
  p.beta2 = 0.95f;
  p.eps = 1e-8f;
  p.weight_decay = wd;
  p.step = step;
  p.grad_scale = grad_scale;
  return p;
}
ds::cuda::AdamWConsts consts(const ds::ops::AdamWParams& p) {
  return ds::cuda::adamw_consts(p.lr, p.beta1, p.beta2, p.step, p.weight_decay, p.eps,
                                p.grad_scale);
}

void check_one(int64_t n, bool m16, bool v16, size_t skew, const ds::ops::AdamWParams& p,
               uint64_t seed) {
  const std::string label = "adamw_kernel n=" + std::to_string(n) + (m16 ? " m bf16" : " m f32") +
                            (v16 ? " v bf16" : " v f32") + " skew " + std::to_string(skew) +
                            " beta1 " + std::to_string(p.beta1) + " step " +
                            std::to_string(p.step);
  INFO(label);
  std::mt19937_64 rng(seed);
  State s(n, m16, v16, true, rng);
  EmuBuf param(s.param, skew), grad(s.grad, skew), m(s.m, skew), v(s.v, skew);
  ds::ops::adamw_step(ref_ctx(), s.param, s.grad, s.m, s.v, p);

  const bool vec = ak::vectorised(param.ptr(), grad.ptr(), m.ptr(), m16, v.ptr(), v16, nullptr);
  CHECK(vec == (skew == 0));
  auto* k = m16 ? (v16 ? ak::adamw_kernel<true, true> : ak::adamw_kernel<true, false>)
                : (v16 ? ak::adamw_kernel<false, true> : ak::adamw_kernel<false, false>);
  launch(k, dim3(2), dim3(64), static_cast<float*>(param.ptr()),
         static_cast<const float*>(grad.ptr()), m.ptr(), v.ptr(), n, vec, consts(p));
  expect_same(param, s.param, "param");
  expect_same(m, s.m, "m");
  expect_same(v, s.v, "v");
}

// Several tensors in one launch of adamw_multi_kernel, laid out as adamw_step_multi_f32 does.
void check_multi(bool m16, bool v16, uint64_t seed) {
  const std::string label =
      std::string("adamw_multi_kernel") + (m16 ? " m bf16" : " m f32") +
      (v16 ? " v bf16" : " v f32");
  INFO(label);
  struct Spec {
    int64_t n;
    float wd;
    bool codes;
    size_t skew;
  };
  const Spec specs[] = {{1000, 0.1f, true, 0},  {0, 0.1f, true, 0},  {5, 0.f, false, 0},
                        {65539, 0.1f, true, 0}, {130, 0.1f, true, 4}, {64, 0.f, true, 0}};
  const ds::ops::AdamWParams p = params(0.9f, 7, 0.f, 0.8f);
  std::mt19937_64 rng(seed);
  std::vector<State> st;
  std::vector<Tensor> codes;
  for (const Spec& sp : specs) {
    st.emplace_back(sp.n, m16, v16, sp.n == 1000, rng);
    codes.push_back(Tensor::empty({sp.n}, DType::bf16));
  }
  std::vector<std::unique_ptr<EmuBuf>> bufs;   // param, grad, m, v, codes of each entry
  std::vector<ds::cuda::AdamWEntry> entries;
  for (size_t i = 0; i < st.size(); ++i) {
    for (const Tensor* t : {&st[i].param, &st[i].grad, &st[i].m, &st[i].v, &codes[i]})
      bufs.push_back(std::make_unique<EmuBuf>(*t, specs[i].skew));
    const size_t o = 5 * i;
    ds::ops::AdamWParams q = p;
    q.weight_decay = specs[i].wd;
    entries.push_back({static_cast<float*>(bufs[o]->ptr()),
                       static_cast<const float*>(bufs[o + 1]->ptr()), bufs[o + 2]->ptr(),
                       bufs[o + 3]->ptr(), specs[i].n, consts(q),
                       specs[i].codes ? static_cast<uint16_t*>(bufs[o + 4]->ptr()) : nullptr});
  }
  std::vector<ds::ops::AdamWTensors> ts;
  for (size_t i = 0; i < st.size(); ++i)
    ts.push_back({&st[i].param, &st[i].grad, &st[i].m, &st[i].v, specs[i].wd,
                  specs[i].codes ? &codes[i] : nullptr});
  ds::ops::adamw_step_multi(ref_ctx(), ts, p);

  const int count = int(entries.size());
  std::vector<int64_t> ns, first(entries.size() + 1);
  for (const auto& e : entries) ns.push_back(e.n);
  const int64_t chunks = ds::cuda::chunk_prefix(ns.data(), count, ak::kMultiChunk, first.data());
  std::vector<ak::MultiEntry> tab;
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    tab.push_back({e, first[i], ak::vectorised(e.param, e.grad, e.m, m16, e.v, v16, e.codes)});
    CHECK(tab.back().vec == (specs[i].skew == 0));
  }
  using ak::adamw_multi_kernel;
  auto* k = m16 ? (v16 ? adamw_multi_kernel<true, true> : adamw_multi_kernel<true, false>)
                : (v16 ? adamw_multi_kernel<false, true> : adamw_multi_kernel<false, false>);
  launch(k, dim3(unsigned(chunks)), dim3(unsigned(ak::kMultiThreads)),
         static_cast<const ak::MultiEntry*>(tab.data()), count);
  for (size_t i = 0; i < st.size(); ++i) {
    INFO("entry " << i << " n=" << specs[i].n);
    const size_t o = 5 * i;
    expect_same(*bufs[o], st[i].param, "param");
    expect_same(*bufs[o + 2], st[i].m, "m");
    expect_same(*bufs[o + 3], st[i].v, "v");
    if (specs[i].codes) expect_same(*bufs[o + 4], codes[i], "codes");
  }
}

}  // namespace

TEST_CASE("emulated adamw_kernel equals the CPU reference bit for bit") {
  uint64_t seed = 1;
  for (bool m16 : {false, true})
    for (bool v16 : {false, true})
      for (int64_t n : {1, 6, 7, 1027})
        for (size_t skew : {size_t(0), size_t(4)}) {
          check_one(n, m16, v16, skew, params(0.9f, 1, 0.1f, 1.f), seed++);
          check_one(n, m16, v16, skew, params(0.3f, 1000, 0.01f, 0.37f), seed++);
        }
}

TEST_CASE("emulated adamw_multi_kernel equals the CPU reference bit for bit") {
  uint64_t seed = 100;
  for (bool m16 : {false, true})
    for (bool v16 : {false, true}) check_multi(m16, v16, seed++);
}
