// The vectorisable exp of the optimised kernels (cpu/vec_math.hpp) against the correctly
// rounded float of a double exp (<= 2 ulp over the softmax range, exact special values), the
// fused cross-entropy forward+backward (in place and not) against the reference, GEMM
// partitioning over threads against the reference, the ops profiler's bookkeeping, and
// AdamW's grad_scale (clipping folded into the update).
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/ref.hpp"
#include "cpu/vec_math.hpp"
#include "ds/ops/fp8.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {
// Distance in units in the last place between two finite non-negative floats.
int64_t ulp_dist(float a, float b) {
  return std::abs(int64_t(std::bit_cast<int32_t>(a)) - int64_t(std::bit_cast<int32_t>(b)));
}
}  // namespace

TEST_CASE("exp_f: <= 2 ulp on [-103, 88.7], special values") {
  int64_t worst = 0;
  float worst_x = 0;
  // every 97th float of the range (both signs), plus dense sampling near 0
  for (uint32_t bits = 0; bits < 0x42B20000u; bits += 97)   // |x| < 89
    for (float s : {1.0f, -1.0f}) {
      const float x = s * std::bit_cast<float>(bits);
      if (x < -103.0f || x > 88.7f) continue;
      const float want = float(std::exp(double(x)));
      const int64_t d = ulp_dist(ops::opt::exp_f(x), want);
      if (d > worst) { worst = d; worst_x = x; }
    }
  INFO("worst x " << worst_x);
  CHECK(worst <= 2);
  CHECK(ops::opt::exp_f(0.0f) == 1.0f);
  CHECK(ops::opt::exp_f(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(ops::opt::exp_f(-200.0f) == 0.0f);
  CHECK(std::isnan(ops::opt::exp_f(NAN)));
  CHECK(std::isfinite(ops::opt::exp_f(88.72f)));
  CHECK(std::isinf(ops::opt::exp_f(88.8f)));
  CHECK(std::isinf(ops::opt::exp_f(std::numeric_limits<float>::infinity())));
  // a vectorised loop (the form the kernels use) gives the same values as scalar calls
  std::vector<float> x(1003), y(x.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = -90.0f + 0.09f * float(i);
  for (size_t i = 0; i < x.size(); ++i) y[i] = ops::opt::exp_f(x[i]);
  for (size_t i = 0; i < x.size(); ++i) CHECK(ulp_dist(y[i], float(std::exp(double(x[i])))) <= 2);
}

TEST_CASE("cross_entropy_forward_backward == forward + backward (in place too)") {
  for (int64_t N : {1, 7, 40})
    for (int64_t V : {1, 3, 513, 4096}) {
      Tensor x = rand_f32({N, V}, -12, 12);
      std::vector<int32_t> t(static_cast<size_t>(N));
      for (int64_t n = 0; n < N; ++n) t[size_t(n)] = n % 5 == 2 ? -1 : int32_t((n * 13) % V);
      Tensor tg = i32_from(t, {N});
      Guarded lr({N}), dr({N, V}), lo({N}), dop({N, V});
      cross_entropy_forward(ref_ctx(), x, tg, lr.t);
      cross_entropy_backward(ref_ctx(), x, tg, 0.5f, dr.t);
      cross_entropy_forward_backward(opt_ctx(), x, tg, 0.5f, lo.t, dop.t);
      CHECK(max_abs_diff(lo.t, lr.t) < 1e-5);
      CHECK(max_abs_diff(dop.t, dr.t) < 1e-6);
      CHECK((lo.intact() && dop.intact()));
      for (const Context& c : {opt_ctx(1), ref_ctx()}) {   // in place, no losses
        Tensor y = x.clone(), none;
        cross_entropy_forward_backward(c, y, tg, 0.5f, none, y);
        CHECK(max_abs_diff(y, dr.t) < 1e-6);
      }
    }
  // a NaN logit reaches the loss
  Tensor x = f32_from({0.5, NAN, 1.0}, {1, 3}), l = Tensor::empty({1}), d = Tensor::empty({1, 3});
  cross_entropy_forward_backward(opt_ctx(), x, i32_from({0}, {1}), 1.0f, l, d);
  CHECK(std::isnan(l.f32()[0]));
}

// BF16 dlogits (the head's GEMM operand): the codes of the F32 dlogits, bit for bit, with the
// same losses; ignored rows all zero codes.
TEST_CASE("cross_entropy_forward_backward with BF16 dlogits == bf16_round of the F32 dlogits") {
  for (const Context& c : {ref_ctx(), opt_ctx(2)})
    for (int64_t V : {3, 513}) {
      const int64_t N = 9;
      const Tensor x = rand_f32({N, V}, -12, 12);
      std::vector<int32_t> t(static_cast<size_t>(N));
      for (int64_t n = 0; n < N; ++n) t[size_t(n)] = n % 4 == 1 ? -1 : int32_t((n * 7) % V);
      const Tensor tg = i32_from(t, {N});
      Tensor l = Tensor::empty({N}), d = Tensor::empty({N, V});
      Tensor lc = Tensor::empty({N}), dc = Tensor::empty({N, V}, DType::bf16);
      cross_entropy_forward_backward(c, x, tg, 0.25f, l, d);
      cross_entropy_forward_backward(c, x, tg, 0.25f, lc, dc);
      Tensor want = Tensor::empty({N, V}, DType::bf16);
      bf16_round(c, d, want);
      CHECK(std::memcmp(dc.raw(), want.raw(), want.nbytes()) == 0);
      CHECK(std::memcmp(lc.raw(), l.raw(), l.nbytes()) == 0);
    }
}

TEST_CASE("matmul split over threads == reference, every transpose, odd shapes") {
  for (int nt : {1, 2, 3})
    for (auto [M, N, K] : {std::array<int64_t, 3>{300, 70, 90}, {33, 517, 64}, {129, 129, 129},
                           {1024, 16, 200}, {17, 2000, 40}})
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          Tensor a = rand_f32(ta ? Shape{K, M} : Shape{M, K});
          Tensor b = rand_f32(tb ? Shape{N, K} : Shape{K, N});
          Tensor c0 = rand_f32({M, N});
          Tensor cr = c0.clone(), co = c0.clone();
          matmul(ref_ctx(), a, b, cr, ta, tb, 0.75f, 0.5f);
          matmul(opt_ctx(nt), a, b, co, ta, tb, 0.75f, 0.5f);
          CHECK(nmse(co, cr) < 1e-10);
        }
}

TEST_CASE("profiler: calls, seconds, GEMM FLOPs and operand bytes per op, families") {
  Profiler prof;
  Context c = opt_ctx(1);
  c.prof = &prof;
  Tensor a = rand_f32({8, 4}), b = rand_f32({4, 5}), y = Tensor::empty({8, 5});
  matmul(c, a, b, y, false, false);
  matmul(c, a, b, y, false, false);
  add_(c, y, y);
  REQUIRE(prof.entries().size() == 2);
  CHECK(prof.entries()[0].calls == 2);
  CHECK(prof.flops("gemm") == 2 * 2.0 * 8 * 5 * 4);
  CHECK(prof.flops("elementwise") == 0);
  CHECK(prof.seconds() >= prof.seconds("gemm"));
  CHECK(Profiler::family_of("attention_backward") == "attention");
  CHECK(Profiler::family_of("scatter_add_rows") == "moe");
  // operand bytes: matmul reads a, b and writes y (beta 0); add_ reads y twice, writes it
  CHECK(prof.bytes("gemm") == 2 * 4.0 * (8 * 4 + 4 * 5 + 8 * 5));
  CHECK(prof.bytes("elementwise") == 3 * 4.0 * (8 * 5));
  matmul(c, a, b, y, false, false, 1.0f, 1.0f);   // beta 1: y is read too
  CHECK(prof.bytes("gemm") ==
        2 * 4.0 * (8 * 4 + 4 * 5 + 8 * 5) + 4.0 * (8 * 4 + 4 * 5 + 2 * 8 * 5));
  // a gather counts the rows it takes, not the whole source
  Tensor src = rand_f32({100, 6}), rows = Tensor::empty({3}, DType::i32);
  Tensor dst = Tensor::empty({3, 6});
  for (int i = 0; i < 3; ++i) rows.i32()[i] = 10 * i;
  gather_rows(c, src, rows, dst);
  CHECK(prof.bytes("moe") == 3 * 4.0 + 2 * 4.0 * (3 * 6));
  prof.clear();
  CHECK(prof.entries().empty());
  CHECK(prof.bytes() == 0);
}

TEST_CASE("adamw_step: grad_scale == scaling the gradient first (bit-exact), F32 and BF16") {
  for (DType mt : {DType::f32, DType::bf16})
    for (const Context& c : {opt_ctx(2), ref_ctx()}) {
      const int64_t n = 70000;   // several chunks
      Tensor p0 = rand_f32({n}), g = rand_f32({n}, -3, 3);
      Tensor pa = p0.clone(), pb = p0.clone(), gs = g.clone();
      Tensor ma = Tensor::zeros({n}, mt), va = Tensor::zeros({n}, mt);
      Tensor mb = Tensor::zeros({n}, mt), vb = Tensor::zeros({n}, mt);
      AdamWParams ap;
      ap.lr = 1e-2f;
      ap.weight_decay = 0.1f;
      scale_(c, gs, 0.37f);
      adamw_step(c, pa, gs, ma, va, ap);           // pre-scaled gradient
      ap.grad_scale = 0.37f;
      adamw_step(c, pb, g, mb, vb, ap);            // scale applied while reading
      CHECK(max_abs_diff(pa, pb) == 0);
      CHECK(max_abs_diff(p0, pb) > 0);
    }
}
