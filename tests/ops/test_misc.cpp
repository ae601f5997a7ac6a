// SwiGLU, cross-entropy, embedding, row gather/scatter (and the fused BF16 gather of the
// experts' operands), element-wise ops, reductions and
// AdamW: optimized vs reference (guard rows, NaN positions), gradients vs finite differences
// in double, AdamW against a hand-computed step, CUDA/shape errors at the boundary.
#include <cmath>
#include <cstring>

#include "cpu/ref.hpp"
#include "ds/core/dtype.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

TEST_CASE("swiglu: optimized == reference (incl. NaN/inf positions); gradients") {
  for (int64_t N : {1, 17, 130})
    for (int64_t I : {1, 3, 64}) {
      Tensor g = rand_f32({N, I}, -6, 6), u = rand_f32({N, I}), d = rand_f32({N, I});
      if (N * I > 4) { g.f32()[1] = NAN; u.f32()[3] = INFINITY; }
      Guarded r({N, I}), o({N, I}), dgr({N, I}), dur({N, I}), dgo({N, I}), duo({N, I});
      swiglu_forward(ref_ctx(), g, u, r.t);
      swiglu_forward(opt_ctx(), g, u, o.t);
      CHECK(nmse(o.t, r.t) < 1e-12);
      swiglu_backward(ref_ctx(), g, u, d, dgr.t, dur.t);
      swiglu_backward(opt_ctx(), g, u, d, dgo.t, duo.t);
      CHECK(nmse(dgo.t, dgr.t) < 1e-12);
      CHECK(nmse(duo.t, dur.t) < 1e-12);
      CHECK((r.intact() && o.intact() && dgo.intact() && duo.intact()));
    }
  std::vector<double> g = rand_vec(7, -5, 5), u = rand_vec(7), w = rand_vec(7);
  auto loss = [&] {
    std::vector<double> y(7);
    ref::swiglu_forward<double>(g.data(), u.data(), y.data(), 7);
    return dot(y, w);
  };
  std::vector<double> dg(7), du(7);
  ref::swiglu_backward<double>(g.data(), u.data(), w.data(), dg.data(), du.data(), 7);
  grad_check(g, loss, dg, "swiglu dgate");
  grad_check(u, loss, du, "swiglu dup");
}

// BF16 outputs (the next GEMM's operands): bf16_round of the F32 results, bit for bit, for
// the reference and the optimised path; mixed output dtypes are refused.
TEST_CASE("swiglu with BF16 outputs == bf16_round of the F32 outputs") {
  for (const Context& c : {ref_ctx(), opt_ctx(2)}) {
    const int64_t N = 37, I = 96;
    Tensor g = rand_f32({N, I}, -6, 6), u = rand_f32({N, I}), d = rand_f32({N, I});
    g.f32()[5] = NAN;
    u.f32()[9] = INFINITY;
    Tensor f = Tensor::empty({N, I}), dgf = Tensor::empty({N, I}), duf = Tensor::empty({N, I});
    swiglu_forward(c, g, u, f);
    swiglu_backward(c, g, u, d, dgf, duf);
    Tensor b = Tensor::empty({N, I}, DType::bf16), dgb = Tensor::empty({N, I}, DType::bf16),
           dub = Tensor::empty({N, I}, DType::bf16);
    swiglu_forward(c, g, u, b);
    swiglu_backward(c, g, u, d, dgb, dub);
    for (auto [f32, codes] : {std::pair{&f, &b}, {&dgf, &dgb}, {&duf, &dub}}) {
      Tensor want = Tensor::empty({N, I}, DType::bf16);
      bf16_round(c, *f32, want);
      CHECK(std::memcmp(codes->raw(), want.raw(), want.nbytes()) == 0);
    }
    Tensor mixed = Tensor::empty({N, I});
    CHECK_THROWS_WITH_AS(swiglu_backward(c, g, u, d, dgb, mixed),
                         doctest::Contains("all F32 or all BF16"), ds::Error);
    CHECK_THROWS_WITH_AS(swiglu_forward(c, b, u, f), doctest::Contains("inputs must be F32"),
                         ds::Error);
  }
}

// Packed [gate | up] rows (one GEMM over stacked gate_proj / up_proj): bit for bit the
// two-tensor ops on the two halves, F32 and BF16 outputs, reference and optimised (rows of
// odd widths, and enough rows for several threads' chunks); shapes and dtypes are checked.
TEST_CASE("swiglu packed == swiglu on the two halves, bit for bit") {
  for (const Context& c : {ref_ctx(), opt_ctx(2)})
    for (auto [N, I] : {std::pair<int64_t, int64_t>{1, 1}, {5, 3}, {37, 96}, {300, 100}}) {
      CAPTURE(N);
      CAPTURE(I);
      Tensor h = rand_f32({N, 2 * I}, -6, 6), d = rand_f32({N, I});
      h.f32()[0] = NAN;
      h.f32()[2 * I - 1] = INFINITY;
      Tensor g = Tensor::empty({N, I}), u = Tensor::empty({N, I});
      for (int64_t r = 0; r < N; ++r)
        for (int64_t j = 0; j < I; ++j) {
          g.f32()[r * I + j] = h.f32()[r * 2 * I + j];
          u.f32()[r * I + j] = h.f32()[r * 2 * I + I + j];
        }
      for (const DType dt : {DType::f32, DType::bf16}) {
        CAPTURE(int(dt));
        Tensor out = Tensor::empty({N, I}, dt), dg = Tensor::empty({N, I}, dt),
               du = Tensor::empty({N, I}, dt);
        swiglu_forward(c, g, u, out);
        swiglu_backward(c, g, u, d, dg, du);
        Guarded po({N, I}), pd({N, 2 * I});   // guard rows around the F32 outputs
        Tensor pout = dt == DType::f32 ? po.t : Tensor::empty({N, I}, dt);
        Tensor pdh = dt == DType::f32 ? pd.t : Tensor::empty({N, 2 * I}, dt);
        swiglu_packed_forward(c, h, pout);
        swiglu_packed_backward(c, h, d, pdh);
        CHECK(std::memcmp(pout.raw(), out.raw(), out.nbytes()) == 0);
        const size_t es = dtype_size(dt), row = size_t(I) * es;
        bool same = true;
        for (int64_t r = 0; r < N; ++r) {
          const auto* p = static_cast<const uint8_t*>(pdh.raw()) + 2 * row * size_t(r);
          same = same && std::memcmp(p, static_cast<const uint8_t*>(dg.raw()) + row * size_t(r),
                                     row) == 0;
          same = same && std::memcmp(p + row,
                                     static_cast<const uint8_t*>(du.raw()) + row * size_t(r),
                                     row) == 0;
        }
        CHECK(same);
        CHECK((po.intact() && pd.intact()));
      }
    }
  const Context c = opt_ctx();
  Tensor h = rand_f32({4, 6}), d = rand_f32({4, 3}), out = Tensor::empty({4, 3});
  Tensor dh = Tensor::empty({4, 6}), odd = rand_f32({4, 5}), wrong = Tensor::empty({4, 6});
  CHECK_THROWS_WITH_AS(swiglu_packed_forward(c, odd, out), doctest::Contains("(N, 2I)"),
                       ds::Error);
  CHECK_THROWS_AS(swiglu_packed_forward(c, h, wrong), ds::Error);
  CHECK_THROWS_AS(swiglu_packed_backward(c, h, d, out), ds::Error);
  Tensor bh = Tensor::empty({4, 6}, DType::bf16);
  CHECK_THROWS_WITH_AS(swiglu_packed_backward(c, bh, d, dh),
                       doctest::Contains("inputs must be all F32 or all BF16"), ds::Error);
}

TEST_CASE("cross_entropy: optimized == reference, ignored rows, stability, gradient") {
  for (int64_t N : {1, 5, 33})
    for (int64_t V : {1, 2, 17, 1000}) {
      Tensor x = rand_f32({N, V}, -10, 10);
      std::vector<int32_t> t(static_cast<size_t>(N));
      for (int64_t n = 0; n < N; ++n) t[size_t(n)] = n % 4 == 3 ? -1 : int32_t((n * 7) % V);
      Tensor tg = i32_from(t, {N});
      Guarded lr({N}), lo({N}), dr({N, V}), dop({N, V});
      cross_entropy_forward(ref_ctx(), x, tg, lr.t);
      cross_entropy_forward(opt_ctx(), x, tg, lo.t);
      CHECK(max_abs_diff(lo.t, lr.t) < 1e-5);
      cross_entropy_backward(ref_ctx(), x, tg, 0.25f, dr.t);
      cross_entropy_backward(opt_ctx(), x, tg, 0.25f, dop.t);
      CHECK(max_abs_diff(dop.t, dr.t) < 1e-6);
      CHECK((lr.intact() && lo.intact() && dr.intact() && dop.intact()));
      for (int64_t n = 3; n < N; n += 4) {
        CHECK(lo.t.f32()[n] == 0.0f);
        for (int64_t j = 0; j < V; ++j) CHECK(dop.t.f32()[n * V + j] == 0.0f);
      }
    }
  // huge logits stay finite (max subtraction): [1000, 0] with target 1 -> loss 1000
  Tensor x = f32_from({1000, 0}, {1, 2}), l = Tensor::empty({1});
  cross_entropy_forward(opt_ctx(), x, i32_from({1}, {1}), l);
  CHECK(l.f32()[0] == doctest::Approx(1000.0));
  CHECK_THROWS_AS(cross_entropy_forward(opt_ctx(), x, i32_from({2}, {1}), l), InternalError);
  const int64_t N = 3, V = 5;
  std::vector<double> z = rand_vec(N * V, -3, 3);
  std::vector<int32_t> tg = {4, -1, 0};
  auto loss = [&] {
    std::vector<double> ls(N);
    ref::cross_entropy_forward<double>(z.data(), tg.data(), ls.data(), N, V);
    return 0.5 * (ls[0] + ls[1] + ls[2]);
  };
  std::vector<double> dz(N * V);
  ref::cross_entropy_backward<double>(z.data(), tg.data(), 0.5, dz.data(), N, V);
  grad_check(z, loss, dz, "cross-entropy dlogits");
}

TEST_CASE("embedding: optimized == reference; backward accumulates repeated ids; gradient") {
  const int64_t V = 11, C = 130;
  Tensor table = rand_f32({V, C});
  std::vector<int32_t> idv = {3, 0, 3, 10, 3, 7, 0};
  Tensor ids = i32_from(idv, {7});
  Guarded r({7, C}), o({7, C});
  embedding_forward(ref_ctx(), table, ids, r.t);
  embedding_forward(opt_ctx(), table, ids, o.t);
  CHECK(max_abs_diff(o.t, r.t) == 0);
  CHECK(o.t.f32()[3 * C + 5] == table.f32()[10 * C + 5]);
  Tensor dout = rand_f32({7, C}), d0 = rand_f32({V, C});
  Tensor dr = d0.clone(), dop = d0.clone();
  embedding_backward(ref_ctx(), ids, dout, dr);
  embedding_backward(opt_ctx(), ids, dout, dop);
  CHECK(max_abs_diff(dop, dr) == 0);   // same summation order
  CHECK(dop.f32()[1 * C] == d0.f32()[1 * C]);
  CHECK(r.intact());
  Tensor one = r.t.slice0(0, 1);
  CHECK_THROWS_AS(embedding_forward(opt_ctx(), table, i32_from({11}, {1}), one), InternalError);
  std::vector<double> tb = rand_vec(V * 3), w = rand_vec(7 * 3);
  auto loss = [&] {
    std::vector<double> y(7 * 3);
    ref::embedding_forward<double>(tb.data(), idv.data(), y.data(), 7, 3);
    return dot(y, w);
  };
  std::vector<double> dt(V * 3, 0.0);
  ref::embedding_backward<double>(idv.data(), w.data(), dt.data(), 7, 3);
  grad_check(tb, loss, dt, "embedding dtable");
}

TEST_CASE("gather_rows / scatter_add_rows / gather_rows_dot: opt == ref; gradients") {
  for (int64_t C : {1, 17, 130}) {
    const int64_t N = 9, M = 23;
    std::vector<int32_t> rv(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) rv[size_t(m)] = int32_t((m * 5 + m / 3) % N);
    Tensor rows = i32_from(rv, {M}), src = rand_f32({N, C}), msrc = rand_f32({M, C}),
           w = rand_f32({M});
    Guarded gr({M, C}), go({M, C});
    gather_rows(ref_ctx(), src, rows, gr.t);
    gather_rows(opt_ctx(), src, rows, go.t);
    CHECK(max_abs_diff(go.t, gr.t) == 0);
    for (int with_w = 0; with_w < 2; ++with_w) {
      Tensor d0 = rand_f32({N, C});
      Guarded sr({N, C}), so({N, C});
      sr.t.copy_from(d0);
      so.t.copy_from(d0);
      scatter_add_rows(ref_ctx(), msrc, rows, with_w ? w : Tensor(), sr.t);
      scatter_add_rows(opt_ctx(), msrc, rows, with_w ? w : Tensor(), so.t);
      CHECK(max_abs_diff(so.t, sr.t) == 0);   // same order of m per destination row
      CHECK((sr.intact() && so.intact()));
    }
    Guarded dr({M}), dop({M});
    gather_rows_dot(ref_ctx(), src, rows, msrc, dr.t);
    gather_rows_dot(opt_ctx(), src, rows, msrc, dop.t);
    CHECK(max_abs_diff(dop.t, dr.t) < 1e-6);
    CHECK((gr.intact() && go.intact() && dr.intact() && dop.intact()));
  }
  // scatter gradient w.r.t. src and w; gather gradient (= scatter of dout)
  const int64_t N = 4, M = 6, C = 3;
  std::vector<int32_t> rows = {1, 3, 1, 0, 3, 3};
  std::vector<double> src = rand_vec(M * C), w = rand_vec(M), W = rand_vec(N * C),
                      x = rand_vec(N * C);
  auto loss = [&] {
    std::vector<double> dst(N * C, 0.0);
    ref::scatter_add_rows<double>(src.data(), rows.data(), w.data(), dst.data(), M, C);
    return dot(dst, W);
  };
  std::vector<double> dsrc(M * C), dw(M);
  ref::gather_rows<double>(W.data(), rows.data(), dsrc.data(), M, C);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < C; ++c) dsrc[size_t(m * C + c)] *= w[size_t(m)];
  ref::gather_rows_dot<double>(W.data(), rows.data(), src.data(), dw.data(), M, C);
  grad_check(src, loss, dsrc, "scatter dsrc");
  grad_check(w, loss, dw, "scatter dw");
  std::vector<double> wg = rand_vec(M * C);
  auto gloss = [&] {
    std::vector<double> y(M * C);
    ref::gather_rows<double>(x.data(), rows.data(), y.data(), M, C);
    return dot(y, wg);
  };
  std::vector<double> dx(N * C, 0.0);
  ref::scatter_add_rows<double>(wg.data(), rows.data(), nullptr, dx.data(), M, C);
  grad_check(x, gloss, dx, "gather dsrc");
}

// The fused gather of the experts' BF16 operands against the three reference ops it replaces
// (gather, a weighted scatter into zeros, bf16_round), bit for bit, for both output forms,
// with NaN, infinities, -0 (0 + w * -0 is +0), rounding ties and overflow past BF16's range.
TEST_CASE("gather_rows_bf16 == gather, weighted scatter into zeros and bf16_round, bit for bit") {
  for (int64_t C : {1, 5, 130}) {
    const int64_t N = 9, M = 23;
    std::vector<int32_t> rv(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) rv[size_t(m)] = int32_t((m * 5 + m / 3) % N);
    Tensor rows = i32_from(rv, {M}), src = rand_f32({N, C}, -3, 3), w = rand_f32({M}, -2, 2);
    float* sp = src.f32();
    sp[0] = NAN;
    sp[C > 1 ? 1 : 0] = INFINITY;
    sp[src.numel() - 1] = -0.0f;
    sp[src.numel() / 2] = bf16_to_f32(0x3f81) + 0x1p-16f;   // halfway between two BF16 values
    sp[src.numel() / 3] = 3.4e38f;                            // rounds to inf
    sp[src.numel() / 4] = -1e-30f;   // times 1e-20 underflows to -0: 0 + (-0) is +0
    for (int64_t m = 0; m < M; ++m)
      if (rv[size_t(m)] == (src.numel() / 4) / C) w.f32()[m] = 1e-20f;
    w.f32()[3] = 0.0f;
    for (int with_w = 0; with_w < 2; ++with_w)
      for (DType dt : {DType::f32, DType::bf16}) {
        CAPTURE(C);
        CAPTURE(with_w);
        const Tensor wt = with_w ? w : Tensor();
        Tensor g = Tensor::empty({M, C}), want = Tensor::empty({M, C}, dt);
        gather_rows(ref_ctx(), src, rows, g);
        if (with_w) {
          std::vector<int32_t> iota(static_cast<size_t>(M));
          for (int64_t m = 0; m < M; ++m) iota[size_t(m)] = int32_t(m);
          Tensor gw = Tensor::empty({M, C});
          gw.zero_();
          scatter_add_rows(ref_ctx(), g, i32_from(iota, {M}), wt, gw);
          g = gw;
        }
        bf16_round(ref_ctx(), g, want);
        Tensor got = Tensor::empty({M, C}, dt);
        gather_rows_bf16(opt_ctx(), src, rows, wt, got);
        CHECK(std::memcmp(got.raw(), want.raw(), size_t(got.nbytes())) == 0);
      }
    Tensor bad = Tensor::empty({M, C + 1}, DType::bf16);
    CHECK_THROWS_AS(gather_rows_bf16(opt_ctx(), src, rows, Tensor(), bad), Error);
  }
}

// The weighted F32 gather: what gather_rows and a weighted scatter into zeros give, value for
// value (NaN, inf, -0 made +0 by 0 + x, a zero weight), both implementations; shapes checked.
TEST_CASE("gather_rows_scaled == gather and weighted scatter into zeros, bit for bit") {
  for (int64_t C : {1, 5, 130}) {
    CAPTURE(C);
    const int64_t N = 9, M = 23;
    std::vector<int32_t> rv(static_cast<size_t>(M)), iota(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) {
      rv[size_t(m)] = int32_t((m * 5 + m / 3) % N);
      iota[size_t(m)] = int32_t(m);
    }
    Tensor rows = i32_from(rv, {M}), src = rand_f32({N, C}, -3, 3), w = rand_f32({M}, -2, 2);
    src.f32()[0] = NAN;
    src.f32()[src.numel() - 1] = INFINITY;
    src.f32()[src.numel() / 2] = -0.0f;
    w.f32()[3] = 0.0f;
    w.f32()[4] = -1.0f;
    Tensor g = Tensor::empty({M, C}), want = Tensor::zeros({M, C});
    gather_rows(ref_ctx(), src, rows, g);
    scatter_add_rows(ref_ctx(), g, i32_from(iota, {M}), w, want);
    for (const Context& c : {ref_ctx(), opt_ctx(2)}) {
      Guarded got({M, C});
      gather_rows_scaled(c, src, rows, w, got.t);
      CHECK(std::memcmp(got.t.raw(), want.raw(), size_t(want.nbytes())) == 0);
      CHECK(got.intact());
    }
  }
  Tensor src = rand_f32({4, 3}), w = rand_f32({2}), dst = Tensor::empty({2, 3});
  CHECK_THROWS_AS(gather_rows_scaled(opt_ctx(), src, i32_from({0, 4}, {2}), w, dst), Error);
  Tensor w3 = rand_f32({3});
  CHECK_THROWS_AS(gather_rows_scaled(opt_ctx(), src, i32_from({0, 1}, {2}), w3, dst), Error);
}

// The experts' backward gather (gather_rows_bf16_dot): the operand of gather_rows_bf16 and the
// dots of gather_rows_dot over the same rows, bit for bit, both output forms, with and without
// weights, in both implementations; shapes checked.
TEST_CASE("gather_rows_bf16_dot == gather_rows_bf16 and gather_rows_dot, bit for bit") {
  for (int64_t C : {1, 5, 132}) {
    const int64_t N = 9, M = 23;
    std::vector<int32_t> rv(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) rv[size_t(m)] = int32_t((m * 7 + 2) % N);
    const Tensor rows = i32_from(rv, {M}), src = rand_f32({N, C}, -3, 3);
    const Tensor w = rand_f32({M}, -2, 2), b = rand_f32({M, C});
    for (const Context& c : {ref_ctx(), opt_ctx(2)})
      for (int with_w = 0; with_w < 2; ++with_w)
        for (DType dt : {DType::f32, DType::bf16}) {
          CAPTURE(C);
          CAPTURE(with_w);
          const Tensor wt = with_w ? w : Tensor();
          Tensor want = Tensor::empty({M, C}, dt), want_dot = Tensor::empty({M});
          gather_rows_bf16(c, src, rows, wt, want);
          gather_rows_dot(c, src, rows, b, want_dot);
          Tensor got = Tensor::empty({M, C}, dt), dot = Tensor::empty({M});
          gather_rows_bf16_dot(c, src, rows, wt, b, got, dot);
          CHECK(std::memcmp(got.raw(), want.raw(), size_t(got.nbytes())) == 0);
          CHECK(std::memcmp(dot.raw(), want_dot.raw(), size_t(dot.nbytes())) == 0);
        }
    Tensor got = Tensor::empty({M, C}, DType::bf16), dot = Tensor::empty({M});
    CHECK_THROWS_AS(gather_rows_bf16_dot(opt_ctx(), src, rows, w, Tensor::empty({M, C + 1}),
                                         got, dot), Error);
  }
}

TEST_CASE("element-wise ops and reductions: opt == ref, deterministic across threads") {
  for (int64_t n : {1, 3, 1000, 100003}) {
    Tensor a = rand_f32({n}), b = rand_f32({n});
    Tensor o1 = Tensor::empty({n}), o2 = Tensor::empty({n});
    add(ref_ctx(), a, b, o1);
    add(opt_ctx(), a, b, o2);
    CHECK(max_abs_diff(o1, o2) == 0);
    add_(opt_ctx(), o2, a);
    scale_(opt_ctx(), o2, 0.5f);
    CHECK(o2.f32()[n - 1] == (a.f32()[n - 1] + b.f32()[n - 1] + a.f32()[n - 1]) * 0.5f);
    CHECK(sum_squares(opt_ctx(), a) == doctest::Approx(sum_squares(ref_ctx(), a)).epsilon(1e-12));
    CHECK(sum(opt_ctx(), a) == doctest::Approx(sum(ref_ctx(), a)).epsilon(1e-9));
    CHECK(sum(opt_ctx(1), a) == sum(opt_ctx(2), a));   // thread-count independent
    CHECK(sum_squares(opt_ctx(1), a) == sum_squares(opt_ctx(2), a));
    CHECK(count_nonfinite(opt_ctx(), a) == 0);
    a.f32()[n / 2] = NAN;
    a.f32()[0] = -INFINITY;
    const int64_t want = n > 1 ? 2 : 1;
    CHECK(count_nonfinite(opt_ctx(), a) == want);
    CHECK(count_nonfinite(ref_ctx(), a) == want);
  }
  Context cu = opt_ctx();
  cu.device = Device::cuda;
  Tensor x = rand_f32({4});
  CHECK_THROWS_AS(scale_(cu, x, 2.0f), Error);   // mixed devices (or no CUDA in this build)
}

TEST_CASE("adamw_step: hand-computed step; opt == ref; BF16 moments") {
  AdamWParams p;
  p.lr = 0.01f; p.beta1 = 0.9f; p.beta2 = 0.95f; p.eps = 1e-8f; p.weight_decay = 0.1f; p.step = 3;
  Tensor prm = f32_from({1.0, -2.0}, {2}), g = f32_from({0.5, 0.25}, {2});
  Tensor m = f32_from({0.1, -0.2}, {2}), v = f32_from({0.01, 0.04}, {2});
  adamw_step(ref_ctx(), prm, g, m, v, p);
  for (int i = 0; i < 2; ++i) {   // textbook form in double
    const double p0 = i ? -2.0 : 1.0, g0 = i ? 0.25 : 0.5, m0 = i ? -0.2 : 0.1,
                 v0 = i ? 0.04 : 0.01;
    const double b1 = double(0.9f), b2 = double(0.95f), lr = double(0.01f), wd = double(0.1f);
    const double m1 = b1 * m0 + (1 - b1) * g0, v1 = b2 * v0 + (1 - b2) * g0 * g0;
    const double mh = m1 / (1 - b1 * b1 * b1), vh = v1 / (1 - b2 * b2 * b2);
    const double want = p0 * (1 - lr * wd) - lr * mh / (std::sqrt(vh) + double(1e-8f));
    CHECK(prm.f32()[i] == doctest::Approx(want).epsilon(1e-6));
    CHECK(m.f32()[i] == doctest::Approx(m1).epsilon(1e-6));
    CHECK(v.f32()[i] == doctest::Approx(v1).epsilon(1e-6));
  }
  const int64_t n = 70001;
  Tensor P = rand_f32({n}), G = rand_f32({n}), M = rand_f32({n}, -0.1, 0.1),
         Vv = rand_f32({n}, 0, 0.1);
  Tensor P2 = P.clone(), M2 = M.clone(), V2 = Vv.clone();
  adamw_step(ref_ctx(), P, G, M, Vv, p);
  adamw_step(opt_ctx(), P2, G, M2, V2, p);
  CHECK(max_abs_diff(P, P2) == 0);
  CHECK(max_abs_diff(M, M2) == 0);
  // BF16 moments: stored rounded-to-nearest-even from the FP32 update
  Tensor mb = Tensor::empty({2}, DType::bf16), vb = Tensor::empty({2}, DType::bf16);
  Tensor pf = f32_from({1.0, -2.0}, {2}), mf = f32_from({0, 0}, {2}), vf = f32_from({0, 0}, {2});
  for (int i = 0; i < 2; ++i) mb.data<uint16_t>()[i] = vb.data<uint16_t>()[i] = 0;
  Tensor pb = pf.clone();
  adamw_step(opt_ctx(), pf, g, mf, vf, p);
  adamw_step(opt_ctx(), pb, g, mb, vb, p);
  CHECK(max_abs_diff(pf, pb) == 0);   // zero moments are exact in BF16
  for (int i = 0; i < 2; ++i) {
    CHECK(mb.data<uint16_t>()[i] == f32_to_bf16(mf.f32()[i]));
    CHECK(vb.data<uint16_t>()[i] == f32_to_bf16(vf.f32()[i]));
  }
}
