// Per-token log-probabilities (ops::token_logprob_forward/backward, the GRPO op): optimised vs
// reference on random rows (ignored rows, guard regions, in-place backward, thread counts),
// values against a direct log-softmax, entropy bounds, and the backward against central
// finite differences in double of sum_n dlogp[n] * logp[n].
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/token_logprob.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {
std::vector<int32_t> make_targets(int64_t N, int64_t V) {
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) t[size_t(n)] = n % 5 == 4 ? -1 : int32_t((n * 13 + 3) % V);
  return t;
}
}  // namespace

TEST_CASE("token_logprob: optimized == reference, ignored rows, guards, in place") {
  for (int64_t N : {1, 7, 40})
    for (int64_t V : {1, 3, 33, 1000}) {
      INFO("N " << N << " V " << V);
      Tensor x = rand_f32({N, V}, -8, 8);
      Tensor tg = i32_from(make_targets(N, V), {N});
      Guarded lr({N}), sr({N}), er({N}), lo({N}), so({N}), eo({N});
      token_logprob_forward(ref_ctx(), x, tg, lr.t, sr.t, er.t);
      token_logprob_forward(opt_ctx(), x, tg, lo.t, so.t, eo.t);
      CHECK(max_abs_diff(lo.t, lr.t) < 2e-5);
      CHECK(max_abs_diff(so.t, sr.t) < 2e-5);
      CHECK(max_abs_diff(eo.t, er.t) < 2e-5);
      CHECK((lr.intact() && sr.intact() && er.intact() && lo.intact() && so.intact() &&
             eo.intact()));
      for (int64_t n = 0; n < N; ++n) {
        const int32_t t = tg.i32()[n];
        if (t < 0) {
          CHECK(lo.t.f32()[n] == 0.0f);
          CHECK(eo.t.f32()[n] == 0.0f);
          continue;
        }
        double mx = -1e30, z = 0;
        for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(x.f32()[n * V + v]));
        for (int64_t v = 0; v < V; ++v) z += std::exp(double(x.f32()[n * V + v]) - mx);
        CHECK(double(lr.t.f32()[n]) ==
              doctest::Approx(double(x.f32()[n * V + t]) - mx - std::log(z)).epsilon(1e-6));
        CHECK(lo.t.f32()[n] <= 1e-6f);                                    // log p <= 0
        CHECK(eo.t.f32()[n] >= -1e-5f);                                   // 0 <= H <= log V
        CHECK(double(eo.t.f32()[n]) <= std::log(double(V)) + 1e-5);
      }
      Tensor dlogp = rand_f32({N}, -2, 2);
      Guarded dr({N, V}), dop({N, V});
      token_logprob_backward(ref_ctx(), x, tg, sr.t, dlogp, dr.t);
      token_logprob_backward(opt_ctx(), x, tg, so.t, dlogp, dop.t);
      CHECK(max_abs_diff(dop.t, dr.t) < 2e-6);
      CHECK((dr.intact() && dop.intact()));
      for (int64_t n = 4; n < N; n += 5)
        for (int64_t v = 0; v < V; ++v) CHECK(dop.t.f32()[n * V + v] == 0.0f);
      Tensor inplace = x.clone();   // dlogits overwriting the logits
      token_logprob_backward(opt_ctx(), inplace, tg, so.t, dlogp, inplace);
      CHECK(max_abs_diff(inplace, dop.t) == 0);
      Tensor inplace_ref = x.clone();
      token_logprob_backward(ref_ctx(), inplace_ref, tg, sr.t, dlogp, inplace_ref);
      CHECK(max_abs_diff(inplace_ref, dr.t) == 0);
      Guarded l1({N}), s1({N}), e1({N});   // thread count does not change the result
      token_logprob_forward(opt_ctx(1), x, tg, l1.t, s1.t, e1.t);
      CHECK(max_abs_diff(l1.t, lo.t) == 0);
      CHECK(max_abs_diff(e1.t, eo.t) == 0);
    }
}

TEST_CASE("token_logprob: stability, entropy optional, bad targets, uniform row") {
  Tensor x = f32_from({1000, 0, -1000}, {1, 3}), lp = Tensor::empty({1}), l = Tensor::empty({1});
  Tensor none;
  token_logprob_forward(opt_ctx(), x, i32_from({1}, {1}), lp, l, none);
  CHECK(lp.f32()[0] == doctest::Approx(-1000.0));
  CHECK(l.f32()[0] == doctest::Approx(1000.0));
  CHECK_THROWS_AS(token_logprob_forward(opt_ctx(), x, i32_from({3}, {1}), lp, l, none),
                  InternalError);
  Tensor u = f32_from({0.5, 0.5, 0.5, 0.5}, {1, 4}), h = Tensor::empty({1});
  token_logprob_forward(opt_ctx(), u, i32_from({2}, {1}), lp, l, h);
  CHECK(h.f32()[0] == doctest::Approx(std::log(4.0)).epsilon(1e-6));
  CHECK(lp.f32()[0] == doctest::Approx(-std::log(4.0)).epsilon(1e-6));
}

TEST_CASE("token_logprob: backward == finite differences (double reference)") {
  const int64_t N = 4, V = 6;
  std::vector<double> z = rand_vec(N * V, -3, 3), c = rand_vec(N, -1, 1);
  const std::vector<int32_t> tg = {5, -1, 0, 2};
  auto loss = [&] {
    std::vector<double> lp(N), l(N);
    ref::token_logprob_forward<double>(z.data(), tg.data(), lp.data(), l.data(), nullptr, N, V);
    return dot(lp, c);
  };
  std::vector<double> lp(N), l(N), dz(N * V);
  ref::token_logprob_forward<double>(z.data(), tg.data(), lp.data(), l.data(), nullptr, N, V);
  ref::token_logprob_backward<double>(z.data(), tg.data(), l.data(), c.data(), dz.data(), N, V);
  grad_check(z, loss, dz, "token_logprob dlogits");
  // entropy = -sum p log p: compare with its definition in double
  std::vector<double> h(N);
  ref::token_logprob_forward<double>(z.data(), tg.data(), lp.data(), l.data(), h.data(), N, V);
  double want = 0;
  for (int64_t v = 0; v < V; ++v) {
    const double p = std::exp(z[size_t(v)] - l[0]);
    want -= p * std::log(p);
  }
  CHECK(h[0] == doctest::Approx(want).epsilon(1e-12));
}

// BF16 dlogits (the policy head's GEMM operand): the codes of the F32 dlogits, bit for bit.
TEST_CASE("token_logprob_backward with BF16 dlogits == bf16_round of the F32 dlogits") {
  for (const Context& c : {ref_ctx(), opt_ctx(2)}) {
    const int64_t N = 9, V = 257;
    const Tensor x = rand_f32({N, V}, -8, 8), tg = i32_from(make_targets(N, V), {N});
    const Tensor dlogp = rand_f32({N});
    Tensor lp = Tensor::empty({N}), lse = Tensor::empty({N}), none;
    token_logprob_forward(c, x, tg, lp, lse, none);
    Tensor d = Tensor::empty({N, V}), dc = Tensor::empty({N, V}, DType::bf16);
    token_logprob_backward(c, x, tg, lse, dlogp, d);
    token_logprob_backward(c, x, tg, lse, dlogp, dc);
    Tensor want = Tensor::empty({N, V}, DType::bf16);
    bf16_round(c, d, want);
    CHECK(std::memcmp(dc.raw(), want.raw(), want.nbytes()) == 0);
  }
}

