// The row-softmax losses' kernels (kernels/row_softmax.cuh: ops::cross_entropy_* and
// ops::token_logprob_* on the GPU) run on the CPU by the host emulator (cuda_emu.hpp: a
// fiber per CUDA thread) against the CPU reference (double): the fused cross-entropy
// with and without losses, in place, with the gradient as BF16 codes (bit for bit the F32
// gradient's rounding), the forward alone; the per-token log-probabilities with and without
// entropy and their backward (F32 and codes). Vocabularies of 1, 5, 33 (odd: the scalar path
// 32 threads, one with two loads), 1000, 4099 and DeepSeek-V3's 129,280 (1,024 threads, float4
// rows), logits of +-1, +-80 (exp would overflow unshifted) and 70..90 (a large common
// offset), ignored rows (-1) and out-of-range targets, which must read as ignored; fewer
// blocks than rows (the grid-stride loop); every output between guard bytes. The emulator's
// expf / log1pf / expm1f are glibc's, not CUDA's (each within 2 ulp): the tolerances are the
// GPU test's (test_ops_loss_route.cpp).
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "kernels/row_softmax.cuh"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"
#include "emu_buffers.hpp"
#include "moe_pairs_util.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::ref_ctx;
using ds::test::rounding_mismatches;
using ds::test::cuda_emu::Guarded;
using ds::test::cuda_emu::launch;
namespace rs = ds::cuda::rowsoftmax;

constexpr double kRel = 2e-5;   // the gradients' per-element bound (measured: 3e-6 at most)

// got against the reference: NaN/inf at the same places, and either the normalised squared
// error within nmse_tol or every element within atol (the double reference is itself only
// ~1e-15 accurate in absolute terms for logits of +-80).
// rel > 0: also every element within rel of its reference value (plus 1e-30 for subnormals):
// the gradients, whose non-target entries at V = 129,280 are ~1e-6 and weigh nothing in the
// normalised error next to the target's.
void expect_near(const float* got, const Tensor& want, double nmse_tol, double atol,
                 const std::string& what, double rel = 0) {
  double num = 0, den = 0, max_abs = 0, max_rel = 0;
  int64_t nan_mismatch = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = got[i], w = want.f32()[i];
    if (std::isfinite(g) != std::isfinite(w) || std::isnan(g) != std::isnan(w)) {
      ++nan_mismatch;
      continue;
    }
    if (!std::isfinite(w)) continue;
    num += (g - w) * (g - w);
    den += w * w;
    max_abs = std::max(max_abs, std::fabs(g - w));
    max_rel = std::max(max_rel, std::fabs(g - w) / (std::fabs(w) + 1e-30));
  }
  const double nmse = den > 0 ? num / den : num;
  INFO(what << ": nmse " << nmse << " max_abs " << max_abs << " max_rel " << max_rel
            << " nan/inf mismatches " << nan_mismatch);
  CHECK(nan_mismatch == 0);
  CHECK((nmse <= nmse_tol || max_abs <= atol));
  if (rel > 0) CHECK(max_rel <= rel);
}

struct Case {
  int64_t N, V;
  float lo, hi;
};

struct Inputs {
  Tensor x, t, t_ref;   // logits (N, V); targets; the targets as the reference sees them
};

// Row 1 (and every third after it) ignored (-1); row 2, when there are 3 rows or more, an
// out-of-range target V, which the kernel must treat as ignored (-1 for the reference).
Inputs inputs(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(c.lo, c.hi);
  Inputs in{Tensor::empty({c.N, c.V}), Tensor::empty({c.N}, DType::i32),
            Tensor::empty({c.N}, DType::i32)};
  for (int64_t i = 0; i < in.x.numel(); ++i) in.x.f32()[i] = u(rng);
  for (int64_t n = 0; n < c.N; ++n) {
    int32_t t = int32_t(rng() % uint64_t(c.V));
    if (n % 3 == 1) t = -1;
    if (n == 2) t = int32_t(c.V);
    in.t.i32()[n] = t;
    in.t_ref.i32()[n] = t >= 0 && t < c.V ? t : -1;
  }
  return in;
}

// The launch shape of launch_rows / logprob_backward (kernels/cross_entropy.cu), with at most
// two blocks.
struct Launch {
  bool vec;
  unsigned blocks, threads;
};
Launch shape_for(const Case& c, const void* a, const void* b) {
  const bool vec = rs::use_vec4(c.V, a, b);
  return {vec, std::min(rs::row_grid(c.N), 2u),
          unsigned(rs::row_threads(vec ? c.V / 4 : c.V))};
}

template <bool ENT, bool GRAD, bool CODES>
void run_rows(const Launch& s, const rs::RowArgs& a) {
  auto* k = s.vec ? rs::row_softmax_kernel<4, ENT, GRAD, CODES>
                  : rs::row_softmax_kernel<1, ENT, GRAD, CODES>;
  launch(k, dim3(s.blocks), dim3(s.threads), a);
}

void check_cross_entropy(const Case& c, uint64_t seed) {
  const std::string L = "cross_entropy N=" + std::to_string(c.N) + " V=" + std::to_string(c.V) +
                        " logits [" + std::to_string(c.lo) + ", " + std::to_string(c.hi) + ")";
  INFO(L);
  const Inputs in = inputs(c, seed);
  const float scale = 0.37f;
  Tensor loss_ref = Tensor::empty({c.N}), d_ref = Tensor::empty({c.N, c.V});
  ds::ops::cross_entropy_forward(ref_ctx(), in.x, in.t_ref, loss_ref);
  ds::ops::cross_entropy_backward(ref_ctx(), in.x, in.t_ref, scale, d_ref);
  const size_t NV = size_t(c.N * c.V);

  Guarded<float> loss(size_t(c.N)), d(NV);   // fused
  const Launch s = shape_for(c, in.x.f32(), d.data());
  rs::RowArgs a{in.x.f32(), in.t.i32(), c.N, int(c.V), scale, loss.data(), nullptr, nullptr,
                nullptr, d.data(), nullptr};
  run_rows<false, true, false>(s, a);
  CHECK(loss.guards_intact());
  CHECK(d.guards_intact());
  expect_near(loss.data(), loss_ref, 1e-10, 1e-4, L + " fused losses");
  expect_near(d.data(), d_ref, 1e-9, 1e-6, L + " fused dlogits", kRel);

  Guarded<uint16_t> codes(NV);   // the gradient as BF16 codes: the F32 gradient rounded
  a.loss = nullptr;
  a.dx = nullptr;
  a.dxc = codes.data();
  run_rows<false, true, true>(s, a);
  CHECK(codes.guards_intact());
  CHECK(rounding_mismatches(codes.data(), d.data(), int64_t(NV)) == 0);

  Guarded<float> fwd(size_t(c.N));   // the forward alone
  rs::RowArgs f{in.x.f32(), in.t.i32(), c.N, int(c.V), 1.f, fwd.data(), nullptr, nullptr,
                nullptr, nullptr, nullptr};
  run_rows<false, false, false>(s, f);
  CHECK(fwd.guards_intact());
  expect_near(fwd.data(), loss_ref, 1e-10, 1e-4, L + " forward losses");

  Guarded<float> ip(NV), ip_loss(size_t(c.N));   // in place: dx is the logits
  std::memcpy(ip.data(), in.x.f32(), NV * sizeof(float));
  rs::RowArgs p{ip.data(), in.t.i32(), c.N, int(c.V), scale, ip_loss.data(), nullptr, nullptr,
                nullptr, ip.data(), nullptr};
  run_rows<false, true, false>(s, p);
  CHECK(ip.guards_intact());
  expect_near(ip_loss.data(), loss_ref, 1e-10, 1e-4, L + " in-place losses");
  expect_near(ip.data(), d_ref, 1e-9, 1e-6, L + " in-place dlogits", kRel);
}

void check_token_logprob(const Case& c, uint64_t seed) {
  const std::string L = "token_logprob N=" + std::to_string(c.N) + " V=" + std::to_string(c.V) +
                        " logits [" + std::to_string(c.lo) + ", " + std::to_string(c.hi) + ")";
  INFO(L);
  const Inputs in = inputs(c, seed);
  Tensor logp_ref = Tensor::empty({c.N}), lse_ref = Tensor::empty({c.N}),
         ent_ref = Tensor::empty({c.N}), dlogp = Tensor::empty({c.N});
  ds::ops::token_logprob_forward(ref_ctx(), in.x, in.t_ref, logp_ref, lse_ref, ent_ref);
  std::mt19937_64 rng(seed + 1);
  for (int64_t n = 0; n < c.N; ++n) dlogp.f32()[n] = float(int64_t(rng() % 400) - 200) / 100.f;
  Tensor d_ref = Tensor::empty({c.N, c.V});
  ds::ops::token_logprob_backward(ref_ctx(), in.x, in.t_ref, lse_ref, dlogp, d_ref);
  const size_t NV = size_t(c.N * c.V);

  Guarded<float> logp(size_t(c.N)), lse(size_t(c.N)), ent(size_t(c.N));
  const Launch s = shape_for(c, in.x.f32(), nullptr);
  rs::RowArgs a{in.x.f32(), in.t.i32(), c.N, int(c.V), 1.f, nullptr, logp.data(), lse.data(),
                ent.data(), nullptr, nullptr};
  run_rows<true, false, false>(s, a);
  CHECK((logp.guards_intact() && lse.guards_intact() && ent.guards_intact()));
  expect_near(logp.data(), logp_ref, 1e-10, 1e-4, L + " logp");
  expect_near(lse.data(), lse_ref, 1e-12, 1e-4, L + " lse");
  expect_near(ent.data(), ent_ref, 1e-9, 1e-5, L + " entropy");
  a.ent = nullptr;   // without the entropy
  run_rows<false, false, false>(s, a);
  expect_near(logp.data(), logp_ref, 1e-10, 1e-4, L + " logp (no entropy)");

  // The backward reads lse as given: the reference's.
  Guarded<float> d(NV);
  Guarded<uint16_t> codes(NV);
  const Launch sb = shape_for(c, in.x.f32(), d.data());
  auto back = [&](auto kernel, float* dx, uint16_t* dxc) {
    launch(kernel, dim3(sb.blocks), dim3(sb.threads), static_cast<const float*>(in.x.f32()),
           static_cast<const int32_t*>(in.t.i32()), static_cast<const float*>(lse_ref.f32()),
           static_cast<const float*>(dlogp.f32()), c.N, int(c.V), dx, dxc);
  };
  if (sb.vec) {
    back(rs::logprob_backward_kernel<4, false>, d.data(), nullptr);
    back(rs::logprob_backward_kernel<4, true>, nullptr, codes.data());
  } else {
    back(rs::logprob_backward_kernel<1, false>, d.data(), nullptr);
    back(rs::logprob_backward_kernel<1, true>, nullptr, codes.data());
  }
  CHECK((d.guards_intact() && codes.guards_intact()));
  expect_near(d.data(), d_ref, 1e-9, 1e-6, L + " backward dlogits", kRel);
  CHECK(rounding_mismatches(codes.data(), d.data(), int64_t(NV)) == 0);
}

const Case kCases[] = {
    {3, 1, -1.f, 1.f},      {4, 5, -1.f, 1.f},      {4, 33, -4.f, 4.f},
    {4, 1000, -1.f, 1.f},   {3, 1000, -80.f, 80.f}, {3, 1000, 70.f, 90.f},
    {3, 4099, -80.f, 80.f}, {3, 129280, -1.f, 1.f},
};

}  // namespace

TEST_CASE("emulated cross-entropy kernels match the CPU reference") {
  uint64_t seed = 1;
  for (const Case& c : kCases) check_cross_entropy(c, seed++);
}

TEST_CASE("emulated token log-probability kernels match the CPU reference") {
  uint64_t seed = 100;
  for (const Case& c : kCases) check_token_logprob(c, seed++);
}
