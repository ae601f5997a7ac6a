// GPU vs CPU-reference tests of the element-wise group of the CUDA path
// (lib/ops/cuda/elementwise.cpp over kernels/elementwise.cu, norm_rope.cu, adamw.cu):
// embedding, RMSNorm, RoPE, head layout, SwiGLU, row gathers/scatters, element-wise ops,
// reductions and AdamW, and the many-tensor forms (adamw_step_multi, sum_squares_multi,
// zero_multi, bf16_round_multi over tables of tensors that cross the kernels' chunk
// boundaries), forward and backward, on odd shapes (single rows, sizes that are not
// multiples of 4/32/128, large rows), on 16-byte-misaligned views (the scalar fallbacks),
// with NaN/inf inputs for the reductions and out-of-range indices (which the kernels must skip
// without touching memory out of bounds). Ops whose GPU arithmetic is the reference's in the
// same order (copies, add/scale, head sums, AdamW) must match bit for bit; the others within
// an FP32/FP64 rounding tolerance. Accumulating outputs start from the same nonzero values.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <numeric>
#include <tuple>
#include <vector>

#include "gpu_harness.hpp"
#include "kernels/runtime.cuh"

namespace ds::gpu_test {
namespace {

void expect_near(double got, double want, double tol, const char* what) {
  INFO(what << ": got " << got << " want " << want << " tol " << tol);
  if (std::isnan(want)) CHECK(std::isnan(got));
  else if (std::isinf(want)) CHECK(got == want);
  else CHECK(std::fabs(got - want) <= tol);
}

Tensor rand_bf16(int64_t n, float lo, float hi) {
  Tensor f = rand_f32({n}, lo, hi);
  Tensor t = Tensor::empty({n}, DType::bf16);
  for (int64_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = f32_to_bf16(f.f32()[i]);
  return t;
}

// Distinct random rows in [0, n): a shuffled prefix.
Tensor distinct_rows(int64_t m, int64_t n) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  std::shuffle(p.begin(), p.end(), rng());
  Tensor t = Tensor::empty({m}, DType::i32);
  for (int64_t i = 0; i < m; ++i) t.i32()[i] = p[size_t(i)];
  return t;
}

}  // namespace

// ---- flat element-wise ------------------------------------------------------------------------
TEST_CASE("elementwise: add, add_, scale_ (bit-exact, aliasing, misaligned)") {
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(7), int64_t(333), int64_t(4096),
                    int64_t((1 << 20) + 5)}) {
    for (bool mis : {false, true}) {
      CAPTURE(n);
      CAPTURE(mis);
      Arena ar;
      const Tensor a = rand_f32({n}), b = rand_f32({n});
      Tensor out_ref = Tensor::empty({n});
      ops::add(cpu_ref(), a, b, out_ref);
      Tensor ga = up(ar, a, mis), gb = up(ar, b, mis), gout = ar.empty({n});
      ops::add(gpu(), ga, gb, gout);
      expect_exact(gout, out_ref, "add");
      // out aliasing a
      ops::add(gpu(), ga, gb, ga);
      expect_exact(ga, out_ref, "add (out == a)");

      Tensor dst = a.clone();
      ops::add_(cpu_ref(), dst, b);
      Tensor gdst = up(ar, a, mis);
      ops::add_(gpu(), gdst, gb);
      expect_exact(gdst, dst, "add_");
      Tensor twice = b.clone();
      ops::add_(cpu_ref(), twice, b);
      ops::add_(gpu(), gb, gb);   // dst == src
      expect_exact(gb, twice, "add_ (dst == src)");

      Tensor s = a.clone();
      ops::scale_(cpu_ref(), s, -0.37f);
      Tensor gs = up(ar, a, mis);
      ops::scale_(gpu(), gs, -0.37f);
      expect_exact(gs, s, "scale_");
      CHECK(ar.check());
    }
  }
}

// ---- reductions -------------------------------------------------------------------------------
TEST_CASE("elementwise: sum, sum_squares, count_nonfinite") {
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(7), int64_t(333), int64_t(100003),
                    int64_t(5000001)}) {
    for (bool mis : {false, true}) {
      CAPTURE(n);
      CAPTURE(mis);
      Arena ar;
      const Tensor x = rand_f32({n}, -2, 3);
      const Tensor gx = up(ar, x, mis);
      double abs_sum = 0;
      for (int64_t i = 0; i < n; ++i) abs_sum += std::fabs(x.f32()[i]);
      const double tol = 1e-12 * (abs_sum + 1) * 4;
      expect_near(ops::sum(gpu(), gx), ops::sum(cpu_ref(), x), tol, "sum");
      expect_near(ops::sum_squares(gpu(), gx), ops::sum_squares(cpu_ref(), x), 3 * tol,
                  "sum_squares");
      CHECK(ops::count_nonfinite(gpu(), gx) == 0);
      CHECK(ar.check());
    }
  }
  // Inserted NaN / inf must be counted and must propagate into the sums.
  const int64_t n = 100003;
  struct Case {
    std::vector<int64_t> at;
    std::vector<float> val;
  };
  const std::vector<Case> cases = {
      {{0}, {NAN}},
      {{n - 1}, {INFINITY}},
      {{n / 2}, {-INFINITY}},
      {{3, 4, n - 2}, {NAN, INFINITY, -INFINITY}},
      {{1, 77, 5000, n - 1}, {INFINITY, INFINITY, INFINITY, -NAN}},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    for (bool mis : {false, true}) {
      CAPTURE(k);
      CAPTURE(mis);
      Arena ar;
      Tensor x = rand_f32({n});
      for (size_t j = 0; j < cases[k].at.size(); ++j) x.f32()[cases[k].at[j]] = cases[k].val[j];
      const Tensor gx = up(ar, x, mis);
      CHECK(ops::count_nonfinite(gpu(), gx) == int64_t(cases[k].at.size()));
      CHECK(ops::count_nonfinite(gpu(), gx) == ops::count_nonfinite(cpu_ref(), x));
      expect_near(ops::sum(gpu(), gx), ops::sum(cpu_ref(), x), 1e-6, "sum with non-finite");
      expect_near(ops::sum_squares(gpu(), gx), ops::sum_squares(cpu_ref(), x), 1e-6,
                  "sum_squares with non-finite");
      CHECK(!std::isfinite(ops::sum_squares(gpu(), gx)));
      CHECK(ar.check());
    }
  }
}

// ---- SwiGLU -------------------------------------------------------------------------------
TEST_CASE("elementwise: swiglu forward/backward") {
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(333 * 17), int64_t((1 << 20) + 3)}) {
    for (bool mis : {false, true}) {
      CAPTURE(n);
      CAPTURE(mis);
      Arena ar;
      Tensor gate = rand_f32({n}, -8, 8);
      const float extremes[] = {30.f, -30.f, 100.f, -100.f, 1000.f, -1000.f, 0.f, -1.2785f};
      for (int64_t i = 0; i < n && i < 8; ++i) gate.f32()[i * (n / 8 + 1) % n] = extremes[i];
      const Tensor upv = rand_f32({n}, -2, 2), dout = rand_f32({n});
      Tensor out = Tensor::empty({n}), dgate = Tensor::empty({n}), dup = Tensor::empty({n});
      ops::swiglu_forward(cpu_ref(), gate, upv, out);
      ops::swiglu_backward(cpu_ref(), gate, upv, dout, dgate, dup);
      Tensor gg = up(ar, gate, mis), gu = up(ar, upv, mis), gd = up(ar, dout, mis);
      Tensor gout = ar.empty({n}), gdg = ar.empty({n}), gdu = ar.empty({n});
      ops::swiglu_forward(gpu(), gg, gu, gout);
      ops::swiglu_backward(gpu(), gg, gu, gd, gdg, gdu);
      expect_close(gout, out, 1e-12, "swiglu out");
      expect_close(gdg, dgate, 1e-12, "swiglu dgate");
      expect_close(gdu, dup, 1e-12, "swiglu dup");
      CHECK(ar.check());
    }
  }
}

// Packed [gate | up] rows (the routed experts' stacked gate/up GEMM output): against the CPU
// reference of the packed op (F32), the BF16 codes bit for bit against bf16_round of the GPU's
// own F32 results, on widths with and without the 4-wide path and misaligned rows.
TEST_CASE("elementwise: swiglu packed forward/backward") {
  for (auto [N, I, mis] : {std::tuple<int64_t, int64_t, bool>{1, 1, false}, {7, 3, false},
                           {333, 96, false}, {333, 96, true}, {64, 130, false},
                           {3000, 384, false}}) {
    CAPTURE(N);
    CAPTURE(I);
    CAPTURE(mis);
    Arena ar;
    Tensor h = rand_f32({N, 2 * I}, -8, 8);
    h.f32()[0] = 100.f;
    h.f32()[h.numel() - 1] = -100.f;
    const Tensor d = rand_f32({N, I});
    Tensor out = Tensor::empty({N, I}), dh = Tensor::empty({N, 2 * I});
    ops::swiglu_packed_forward(cpu_ref(), h, out);
    ops::swiglu_packed_backward(cpu_ref(), h, d, dh);
    const Tensor gh = up(ar, h, mis), gd = up(ar, d, mis);
    Tensor gout = ar.empty({N, I}), gdh = ar.empty({N, 2 * I});
    ops::swiglu_packed_forward(gpu(), gh, gout);
    ops::swiglu_packed_backward(gpu(), gh, gd, gdh);
    expect_close(gout, out, 1e-12, "swiglu_packed out");
    expect_close(gdh, dh, 1e-12, "swiglu_packed dh");
    Tensor cout = ar.empty({N, I}, DType::bf16), cdh = ar.empty({N, 2 * I}, DType::bf16);
    ops::swiglu_packed_forward(gpu(), gh, cout);
    ops::swiglu_packed_backward(gpu(), gh, gd, cdh);
    Tensor want_out = Tensor::empty({N, I}, DType::bf16), want_dh = Tensor::empty({N, 2 * I},
                                                                                DType::bf16);
    ops::bf16_round(cpu_ref(), download(gout), want_out);
    ops::bf16_round(cpu_ref(), download(gdh), want_dh);
    expect_exact(cout, want_out, "swiglu_packed out codes");
    expect_exact(cdh, want_dh, "swiglu_packed dh codes");
    CHECK(ar.check());
  }
}

// The weighted gather (the experts' output gradients as each expert sees them) against the CPU,
// bit for bit: 4-wide and scalar rows, misaligned views, a bad index (zero row), -0 and a zero
// weight.
TEST_CASE("gpu gather_rows_scaled equals the CPU bit for bit") {
  for (auto [N, M, C, mis] : {std::tuple<int64_t, int64_t, int64_t, bool>{9, 23, 1024, false},
                              {9, 23, 1024, true}, {50, 333, 37, false}, {7, 1, 4, false}}) {
    CAPTURE(C);
    CAPTURE(mis);
    Arena ar;
    Tensor src = rand_f32({N, C}, -3, 3), w = rand_f32({M}, -2, 2);
    src.f32()[0] = -0.0f;
    src.f32()[1 % src.numel()] = INFINITY;
    src.f32()[(2 * C + 3) % src.numel()] = NAN;
    w.f32()[0] = 0.0f;
    Tensor rows = Tensor::empty({M}, DType::i32);
    for (int64_t m = 0; m < M; ++m) rows.i32()[m] = int32_t((m * 7 + 3) % N);
    Tensor want = Tensor::empty({M, C});
    ops::gather_rows_scaled(cpu_ref(), src, rows, w, want);
    Tensor got = ar.empty({M, C});
    ops::gather_rows_scaled(gpu(), up(ar, src, mis), ar.upload(rows), ar.upload(w), got);
    expect_exact(got, want, "gather_rows_scaled");
    if (M > 1) {   // a bad index: a zero row on the GPU (the CPU refuses it)
      rows.i32()[1] = int32_t(N);
      Tensor got2 = ar.empty({M, C});
      ops::gather_rows_scaled(gpu(), up(ar, src, mis), ar.upload(rows), ar.upload(w), got2);
      const Tensor h = download(got2);
      bool zero = true;
      for (int64_t c = 0; c < C; ++c) zero = zero && h.f32()[C + c] == 0.0f;
      CHECK(zero);
    }
    CHECK(ar.check());
  }
}

// ---- embedding -------------------------------------------------------------------------------
TEST_CASE("elementwise: embedding forward/backward") {
  for (auto [V, N, C] : {std::tuple<int64_t, int64_t, int64_t>{50, 1, 7}, {1000, 333, 128},
                         {7, 64, 7168}, {3, 7, 5}, {129, 40, 127}, {10, 0, 8}}) {
    CAPTURE(V);
    CAPTURE(N);
    CAPTURE(C);
    Arena ar;
    const Tensor table = rand_f32({V, C}), ids = rand_i32({N}, 0, int(V - 1));
    const Tensor dout = rand_f32({N, C});
    Tensor out = Tensor::empty({N, C}), dtable = rand_f32({V, C});
    Tensor gtable = ar.upload(table), gids = ar.upload(ids), gout = ar.empty({N, C});
    Tensor gdout = ar.upload(dout), gdtable = ar.upload(dtable);
    ops::embedding_forward(cpu_ref(), table, ids, out);
    ops::embedding_forward(gpu(), gtable, gids, gout);
    expect_exact(gout, out, "embedding_forward");
    ops::embedding_backward(cpu_ref(), ids, dout, dtable);   // repeated ids: atomics on the GPU
    ops::embedding_backward(gpu(), gids, gdout, gdtable);
    expect_close(gdtable, dtable, 1e-12, "embedding_backward dtable", 1e-5);
    CHECK(ar.check());
  }
}

// ---- RMSNorm ---------------------------------------------------------------------------------
TEST_CASE("elementwise: rmsnorm forward/backward") {
  std::vector<std::tuple<int64_t, int64_t, bool>> shapes;
  for (int64_t N : {1, 7, 333})
    for (int64_t C : {5, 127, 7168}) shapes.emplace_back(N, C, false);
  shapes.emplace_back(333, 512, false);
  shapes.emplace_back(64, 1536, false);
  shapes.emplace_back(7, 128, true);       // misaligned rows: scalar path
  shapes.emplace_back(3, 30000, false);    // dg partials too large for shared memory
  shapes.emplace_back(2, 30001, false);
  shapes.emplace_back(1024, 64, false);    // many rows per block
  for (auto [N, C, mis] : shapes) {
    CAPTURE(N);
    CAPTURE(C);
    CAPTURE(mis);
    Arena ar;
    const float eps = 1e-6f;
    const Tensor x = rand_f32({N, C}, -2, 2), g = rand_f32({C}, 0.5f, 1.5f);
    const Tensor dy = rand_f32({N, C});
    Tensor y = Tensor::empty({N, C}), rstd = Tensor::empty({N});
    ops::rmsnorm_forward(cpu_ref(), x, g, eps, y, rstd);
    Tensor gx = up(ar, x, mis), gg = up(ar, g, mis), gy = ar.empty({N, C}), grstd = ar.empty({N});
    ops::rmsnorm_forward(gpu(), gx, gg, eps, gy, grstd);
    expect_close(gy, y, 1e-13, "rmsnorm y", 1e-5);
    expect_close(grstd, rstd, 1e-13, "rmsnorm rstd");

    Tensor dx = Tensor::empty({N, C}), dg = rand_f32({C});
    Tensor gdg = ar.upload(dg);
    ops::rmsnorm_backward(cpu_ref(), x, g, rstd, dy, dx, dg);
    Tensor grstd_ref = ar.upload(rstd), gdy = up(ar, dy, mis), gdx = ar.empty({N, C});
    ops::rmsnorm_backward(gpu(), gx, gg, grstd_ref, gdy, gdx, gdg);
    expect_close(gdx, dx, 1e-12, "rmsnorm dx");
    // the reference adds FP32-rounded row terms into FP32 dg; the GPU sums them in double
    expect_close(gdg, dg, 1e-9, "rmsnorm dg (+=)");
    CHECK(ar.check());
  }
}

// ---- RoPE --------------------------------------------------------------------------------------
TEST_CASE("elementwise: rope forward/backward") {
  for (int64_t N : {1, 7, 333})
    for (int64_t H : {1, 3, 128})
      for (int64_t Dr : {2, 64}) {
        CAPTURE(N);
        CAPTURE(H);
        CAPTURE(Dr);
        Arena ar;
        const int64_t P = Dr / 2;
        Tensor freqs = Tensor::empty({P});
        for (int64_t i = 0; i < P; ++i) {   // base 10000, the low frequencies YaRN-scaled by 1/40
          float f = float(std::pow(10000.0, -2.0 * double(i) / double(Dr)));
          freqs.f32()[i] = i >= P / 2 ? f / 40.0f : f;
        }
        Tensor pos = rand_i32({N}, 0, 100000);
        pos.i32()[0] = N > 1 ? 100000 : pos.i32()[0];
        const Tensor x = rand_f32({N, H, Dr});
        Tensor gx = ar.upload(x), gpos = ar.upload(pos), gfreqs = ar.upload(freqs);
        for (int dir : {+1, -1}) {
          CAPTURE(dir);
          Tensor out = Tensor::empty({N, H, Dr}), gout = ar.empty({N, H, Dr});
          if (dir > 0) {
            ops::rope_forward(cpu_ref(), x, pos, freqs, out);
            ops::rope_forward(gpu(), gx, gpos, gfreqs, gout);
          } else {
            ops::rope_backward(cpu_ref(), x, pos, freqs, out);
            ops::rope_backward(gpu(), gx, gpos, gfreqs, gout);
          }
          expect_close(gout, out, 1e-13, "rope", 1e-6);
          // in place (out == x)
          Tensor gin = ar.upload(x);
          if (dir > 0) ops::rope_forward(gpu(), gin, gpos, gfreqs, gin);
          else ops::rope_backward(gpu(), gin, gpos, gfreqs, gin);
          expect_close(gin, out, 1e-13, "rope in place", 1e-6);
        }
        // the tail of longer rows in place (MLA's q): Dn = 64 untouched elements first
        for (int dir : {+1, -1}) {
          CAPTURE(dir);
          const Tensor xl = rand_f32({N, H, 64 + Dr});
          Tensor want = xl.clone(), got = ar.upload(xl);
          ops::rope_tail_inplace(cpu_ref(), want, pos, freqs, dir);
          ops::rope_tail_inplace(gpu(), got, gpos, gfreqs, dir);
          expect_close(got, want, 1e-13, "rope tail in place", 1e-6);
        }
        // backward undoes forward
        Tensor gf = ar.empty({N, H, Dr}), gb = ar.empty({N, H, Dr});
        ops::rope_forward(gpu(), gx, gpos, gfreqs, gf);
        ops::rope_backward(gpu(), gf, gpos, gfreqs, gb);
        expect_close(gb, x, 1e-12, "rope round trip", 1e-5);
        CHECK(ar.check());
      }
}

// ---- head layout -------------------------------------------------------------------------------
TEST_CASE("elementwise: split_last / concat_last") {
  for (auto [N, H, A, B] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{1, 1, 1, 1},
                            {7, 3, 5, 3}, {333, 4, 128, 64}, {16, 1, 512, 64}, {5, 2, 4, 3},
                            {9, 2, 8, 4}}) {
    for (bool mis : {false, true}) {
      CAPTURE(N);
      CAPTURE(H);
      CAPTURE(A);
      CAPTURE(B);
      CAPTURE(mis);
      Arena ar;
      const Tensor x = rand_f32({N, H, A + B});
      Tensor a = Tensor::empty({N, H, A}), b = Tensor::empty({N, H, B});
      ops::split_last(cpu_ref(), x, a, b);
      Tensor gx = up(ar, x, mis), ga = ar.empty({N, H, A}), gb = ar.empty({N, H, B});
      ops::split_last(gpu(), gx, ga, gb);
      expect_exact(ga, a, "split_last a");
      expect_exact(gb, b, "split_last b");
      Tensor x2 = Tensor::empty({N, H, A + B}), gx2 = ar.empty({N, H, A + B});
      const Tensor a2 = rand_f32({N, H, A}), b2 = rand_f32({N, H, B});
      ops::concat_last(cpu_ref(), a2, b2, x2);
      Tensor ga2 = up(ar, a2, mis), gb2 = ar.upload(b2);
      ops::concat_last(gpu(), ga2, gb2, gx2);
      expect_exact(gx2, x2, "concat_last");
      CHECK(ar.check());
    }
  }
  // 2-D operands
  Arena ar;
  const Tensor x = rand_f32({37, 576});
  Tensor a = Tensor::empty({37, 512}), b = Tensor::empty({37, 64});
  ops::split_last(cpu_ref(), x, a, b);
  Tensor gx = ar.upload(x), ga = ar.empty({37, 512}), gb = ar.empty({37, 64});
  ops::split_last(gpu(), gx, ga, gb);
  expect_exact(ga, a, "split_last 2-D a");
  expect_exact(gb, b, "split_last 2-D b");
  CHECK(ar.check());
}

TEST_CASE("elementwise: broadcast_heads / sum_heads") {
  for (auto [N, H, D] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 5}, {7, 3, 64},
                         {333, 128, 64}, {5, 7, 3}, {2, 1, 128}}) {
    for (bool mis : {false, true}) {
      CAPTURE(N);
      CAPTURE(H);
      CAPTURE(D);
      CAPTURE(mis);
      Arena ar;
      const Tensor x = rand_f32({N, D}), dout = rand_f32({N, H, D});
      Tensor out = Tensor::empty({N, H, D}), dx = Tensor::empty({N, D});
      ops::broadcast_heads(cpu_ref(), x, out);
      ops::sum_heads(cpu_ref(), dout, dx);
      Tensor gx = up(ar, x, mis), gout = ar.empty({N, H, D});
      Tensor gdout = up(ar, dout, mis), gdx = ar.empty({N, D});
      ops::broadcast_heads(gpu(), gx, gout);
      ops::sum_heads(gpu(), gdout, gdx);
      expect_exact(gout, out, "broadcast_heads");
      expect_exact(gdx, dx, "sum_heads");   // same FP32 additions in the same head order
      CHECK(ar.check());
    }
  }
}

// ---- row gathers / scatters -------------------------------------------------------------------
TEST_CASE("elementwise: gather_rows / scatter_add_rows / gather_rows_dot") {
  for (auto [N, M, C] : {std::tuple<int64_t, int64_t, int64_t>{100, 1, 5}, {100, 7, 7168},
                         {37, 333, 128}, {5, 64, 127}, {1, 9, 4}, {20, 0, 16}}) {
    for (bool mis : {false, true}) {
      CAPTURE(N);
      CAPTURE(M);
      CAPTURE(C);
      CAPTURE(mis);
      Arena ar;
      const Tensor src = rand_f32({N, C}), rows = rand_i32({M}, 0, int(N - 1));
      const Tensor msrc = rand_f32({M, C}), w = rand_f32({M});
      Tensor grows = ar.upload(rows);

      Tensor dst = Tensor::empty({M, C}), gdst = ar.empty({M, C});
      ops::gather_rows(cpu_ref(), src, rows, dst);
      Tensor gsrc = up(ar, src, mis);
      ops::gather_rows(gpu(), gsrc, grows, gdst);
      expect_exact(gdst, dst, "gather_rows");

      for (bool weighted : {true, false}) {
        CAPTURE(weighted);
        Tensor acc = rand_f32({N, C});
        Tensor gacc = up(ar, acc, mis), gmsrc = up(ar, msrc, mis);
        Tensor gw = weighted ? ar.upload(w) : Tensor();
        ops::scatter_add_rows(cpu_ref(), msrc, rows, weighted ? w : Tensor(), acc);
        ops::scatter_add_rows(gpu(), gmsrc, grows, gw, gacc);
        expect_close(gacc, acc, 1e-12, "scatter_add_rows (+=)", 1e-5);
      }

      Tensor dot = Tensor::empty({M}), gdot = ar.empty({M});
      ops::gather_rows_dot(cpu_ref(), src, rows, msrc, dot);
      Tensor gmsrc = up(ar, msrc, mis);
      ops::gather_rows_dot(gpu(), gsrc, grows, gmsrc, gdot);
      expect_close(gdot, dot, 1e-13, "gather_rows_dot", 1e-5);
      CHECK(ar.check());
    }
  }
}

TEST_CASE("elementwise: set_rows") {
  for (auto [N, M, C] : {std::tuple<int64_t, int64_t, int64_t>{100, 7, 7168}, {333, 333, 5},
                         {50, 1, 128}, {64, 20, 576}}) {
    CAPTURE(N);
    CAPTURE(M);
    CAPTURE(C);
    Arena ar;
    const Tensor src = rand_f32({M, C}), rows = distinct_rows(M, N);
    Tensor dst = rand_f32({N, C});
    Tensor gdst = ar.upload(dst), gsrc = ar.upload(src), grows = ar.upload(rows);
    ops::set_rows(cpu_ref(), src, rows, dst);
    ops::set_rows(gpu(), gsrc, grows, gdst);
    expect_exact(gdst, dst, "set_rows");
    CHECK(ar.check());
  }
}

// Indices outside the table are not range-checked for GPU tensors: the kernels must skip them
// (scatters) or zero the row (gathers), never touching memory outside the tensors.
TEST_CASE("elementwise: out-of-range indices are skipped") {
  Arena ar;
  const int64_t V = 11, N = 9, C = 132;
  const int32_t bad[] = {-1, int32_t(V), INT_MAX, INT_MIN};
  Tensor ids = rand_i32({N}, 0, int(V - 1));
  for (int k = 0; k < 4; ++k) ids.i32()[2 * k + 1] = bad[k];
  Tensor good = ids.clone();   // bad entries pointed at row 0 for the reference
  for (int64_t i = 0; i < N; ++i)
    if (good.i32()[i] < 0 || good.i32()[i] >= V) good.i32()[i] = 0;
  const Tensor table = rand_f32({V, C}), dout = rand_f32({N, C});
  Tensor gtable = ar.upload(table), gids = ar.upload(ids);

  // gather: bad rows zero-filled
  Tensor out = Tensor::empty({N, C});
  ops::embedding_forward(cpu_ref(), table, good, out);
  for (int k = 0; k < 4; ++k) std::memset(out.f32() + (2 * k + 1) * C, 0, size_t(C) * 4);
  Tensor gout = ar.empty({N, C});
  ops::embedding_forward(gpu(), gtable, gids, gout);
  expect_exact(gout, out, "embedding_forward with bad ids");
  Tensor gg = ar.empty({N, C});
  ops::gather_rows(gpu(), gtable, gids, gg);
  expect_exact(gg, out, "gather_rows with bad rows");

  // scatter: bad rows skipped (reference: their dout rows zeroed)
  Tensor dout_ref = dout.clone();
  for (int k = 0; k < 4; ++k) std::memset(dout_ref.f32() + (2 * k + 1) * C, 0, size_t(C) * 4);
  Tensor dtable = rand_f32({V, C});
  Tensor gdtable = ar.upload(dtable), gdout = ar.upload(dout);
  ops::embedding_backward(cpu_ref(), good, dout_ref, dtable);
  ops::embedding_backward(gpu(), gids, gdout, gdtable);
  expect_close(gdtable, dtable, 1e-12, "embedding_backward with bad ids", 1e-5);

  // gather_rows_dot: 0 for bad rows
  Tensor dot = Tensor::empty({N}), gdot = ar.empty({N});
  ops::gather_rows_dot(cpu_ref(), table, good, dout, dot);
  for (int k = 0; k < 4; ++k) dot.f32()[2 * k + 1] = 0;
  ops::gather_rows_dot(gpu(), gtable, gids, gdout, gdot);
  expect_close(gdot, dot, 1e-13, "gather_rows_dot with bad rows", 1e-5);

  // set_rows: bad rows skipped
  Tensor dst = rand_f32({V, C});
  Tensor gdst = ar.upload(dst);
  Tensor rows = Tensor::empty({4}, DType::i32);
  rows.i32()[0] = 3; rows.i32()[1] = -5; rows.i32()[2] = int32_t(V); rows.i32()[3] = 7;
  const Tensor src = rand_f32({4, C});
  std::memcpy(dst.f32() + 3 * C, src.f32(), size_t(C) * 4);
  std::memcpy(dst.f32() + 7 * C, src.f32() + 3 * C, size_t(C) * 4);
  Tensor grows = ar.upload(rows), gsrc = ar.upload(src);
  ops::set_rows(gpu(), gsrc, grows, gdst);
  expect_exact(gdst, dst, "set_rows with bad rows");
  CHECK(ar.check());
}

// ---- AdamW --------------------------------------------------------------------------------------
TEST_CASE("elementwise: adamw_step (F32 and BF16 moments, bit-exact)") {
  struct Hp {
    float lr, beta1, beta2, wd, gs;
    int64_t step;
  };
  const Hp hps[] = {
      {1e-3f, 0.9f, 0.95f, 0.1f, 1.0f, 1},       // first step, weight decay
      {3e-4f, 0.9f, 0.95f, 0.0f, 0.37f, 7},      // clipped gradient, no decay
      {1e-2f, 0.3f, 0.999f, 0.01f, 2.5f, 1000},  // 1 - beta1 >= 0.5: the other lerp branch
  };
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(333), int64_t(100003)})
    for (int mode = 0; mode < 4; ++mode)   // bit 0: m BF16, bit 1: v BF16
      for (const Hp& hp : hps)
        for (bool mis : {false, true}) {
          const bool mb = mode & 1, vb = mode & 2;
          CAPTURE(n);
          CAPTURE(mb);
          CAPTURE(vb);
          CAPTURE(hp.step);
          CAPTURE(mis);
          Arena ar;
          Tensor param = rand_f32({n}, -1, 1);
          Tensor m = mb ? rand_bf16(n, -1e-2f, 1e-2f) : rand_f32({n}, -1e-2f, 1e-2f);
          Tensor v = vb ? rand_bf16(n, 0, 1e-3f) : rand_f32({n}, 0, 1e-3f);
          Tensor gp = up(ar, param, mis), gm = up(ar, m, mis), gv = up(ar, v, mis);
          for (int s = 0; s < 3; ++s) {   // consecutive steps: the moments carry over
            CAPTURE(s);
            const Tensor grad = rand_f32({n}, -0.1f, 0.1f);
            ops::AdamWParams p;
            p.lr = hp.lr;
            p.beta1 = hp.beta1;
            p.beta2 = hp.beta2;
            p.weight_decay = hp.wd;
            p.grad_scale = hp.gs;
            p.step = hp.step + s;
            ops::adamw_step(cpu_ref(), param, grad, m, v, p);
            Tensor gg = up(ar, grad, mis);
            ops::adamw_step(gpu(), gp, gg, gm, gv, p);
            expect_exact(gp, param, "adamw param");
            expect_exact(gm, m, "adamw m");
            expect_exact(gv, v, "adamw v");
          }
          CHECK(ar.check());
        }
}

}  // namespace ds::gpu_test

// ---- many tensors in one launch (kernels/multi_tensor.cu, adamw.cu) -------------------------
namespace ds::gpu_test {
namespace {

// Sizes around the 65536-element chunks of the many-tensor kernels, empty ones included.
// 300007 F32 = 1.2 MB: more than one 1 MiB zeroing chunk (multi_tensor.cu kZeroChunk)
const int64_t kMultiSizes[] = {7, 0, 65536, 1, 65537, 200003, 3, 0, 131072, 33, 300007};

// With the updated weights' BF16 operands written in the same pass (AdamWTensors::operand,
// the refreshed operand cache): codes aligned and 2 bytes past alignment, F32 rounded values,
// none; each bit for bit bf16_round of the CPU's new weight.
TEST_CASE("multi-tensor: adamw_step_multi == adamw_step per tensor (bit-exact)") {
  for (int mode = 0; mode < 4; ++mode) {   // bit 0: m BF16, bit 1: v BF16
    const bool mb = mode & 1, vb = mode & 2;
    CAPTURE(mb);
    CAPTURE(vb);
    Arena ar;
    std::vector<Tensor> p, g, m, v, gp, gg, gm, gv, go;
    std::vector<float> wd;
    size_t i = 0;
    for (int64_t n : kMultiSizes) {
      const bool mis = i % 3 == 1;   // some entries 16-byte misaligned: the scalar path
      p.push_back(rand_f32({n}));
      g.push_back(rand_f32({n}, -0.1f, 0.1f));
      m.push_back(mb ? rand_bf16(n, -1e-2f, 1e-2f) : rand_f32({n}, -1e-2f, 1e-2f));
      v.push_back(vb ? rand_bf16(n, 0, 1e-3f) : rand_f32({n}, 0, 1e-3f));
      gp.push_back(up(ar, p.back(), mis));
      gg.push_back(up(ar, g.back(), mis));
      gm.push_back(up(ar, m.back(), mis));
      gv.push_back(up(ar, v.back(), mis));
      const int kind = int(i % 4);   // operand: 0 codes, 1 codes misaligned, 2 F32, 3 none
      go.push_back(kind == 3   ? Tensor()
                   : kind == 2 ? ar.empty({n})
                               : ar.empty({n + kind}, DType::bf16).slice0(kind, n + kind));
      wd.push_back(i % 2 ? 0.1f : 0.0f);
      ++i;
    }
    ops::AdamWParams hp;
    hp.lr = 1e-3f;
    hp.grad_scale = 0.7f;
    for (int s = 1; s <= 2; ++s) {
      hp.step = s;
      std::vector<ops::AdamWTensors> ts;
      for (size_t k = 0; k < p.size(); ++k) {
        ops::AdamWParams q = hp;
        q.weight_decay = wd[k];
        ops::adamw_step(cpu_ref(), p[k], g[k], m[k], v[k], q);
        Tensor* op = go[k].defined() ? &go[k] : nullptr;
        ts.push_back({&gp[k], &gg[k], &gm[k], &gv[k], wd[k], op});
      }
      ops::adamw_step_multi(gpu(), ts, hp);
      for (size_t k = 0; k < p.size(); ++k) {
        CAPTURE(k);
        expect_exact(gp[k], p[k], "multi adamw param");
        expect_exact(gm[k], m[k], "multi adamw m");
        expect_exact(gv[k], v[k], "multi adamw v");
        if (!go[k].defined()) continue;
        Tensor want = Tensor::empty(p[k].shape(), go[k].dtype());
        ops::bf16_round(cpu_ref(), p[k], want);
        expect_exact(go[k], want, "multi adamw operand");
      }
    }
    CHECK(ar.check());
  }
}

TEST_CASE("multi-tensor: sum_squares_multi, zero_multi, bf16_round_multi") {
  Arena ar;
  std::vector<Tensor> x, gx;
  size_t i = 0;
  for (int64_t n : kMultiSizes) {
    x.push_back(rand_f32({n}, -3, 3));
    gx.push_back(up(ar, x.back(), i++ % 3 == 1));
  }
  std::vector<const Tensor*> px, pgx;
  for (size_t k = 0; k < x.size(); ++k) {
    px.push_back(&x[k]);
    pgx.push_back(&gx[k]);
  }
  const std::vector<double> want = ops::sum_squares_multi(cpu_ref(), px);
  std::vector<double> got = ops::sum_squares_multi(gpu(), pgx);
  REQUIRE(got.size() == want.size());
  for (size_t k = 0; k < want.size(); ++k)
    expect_near(got[k], want[k], 1e-12 * (1 + want[k]), "sum_squares_multi");
  // a NaN in one tensor and an inf in another poison only their own sums
  x[2].f32()[40000] = NAN;
  x[5].f32()[7] = INFINITY;
  gx[2] = up(ar, x[2]);
  gx[5] = up(ar, x[5], true);
  pgx[2] = &gx[2];
  pgx[5] = &gx[5];
  got = ops::sum_squares_multi(gpu(), pgx);
  CHECK(std::isnan(got[2]));
  CHECK(std::isinf(got[5]));
  CHECK(std::isfinite(got[4]));

  for (bool codes : {false, true}) {   // bf16_round_multi against bf16_round per tensor
    CAPTURE(codes);
    std::vector<Tensor> gout;
    std::vector<Tensor*> pout;
    for (size_t k = 0; k < x.size(); ++k)
      gout.push_back(ar.empty(x[k].shape(), codes ? DType::bf16 : DType::f32));
    for (Tensor& t : gout) pout.push_back(&t);
    ops::bf16_round_multi(gpu(), pgx, pout);
    for (size_t k = 0; k < x.size(); ++k) {
      Tensor w = Tensor::empty(x[k].shape(), codes ? DType::bf16 : DType::f32);
      ops::bf16_round(cpu_ref(), x[k], w);
      expect_exact(gout[k], w, "bf16_round_multi");
    }
  }

  std::vector<Tensor> z;   // zero_multi over F32 and BF16 tensors of odd byte counts
  std::vector<Tensor*> pz;
  i = 0;
  for (int64_t n : kMultiSizes) {
    const bool b = i % 2 == 1;
    z.push_back(up(ar, b ? rand_bf16(n, -1, 1) : rand_f32({n}), i % 3 == 1));
    ++i;
  }
  for (Tensor& t : z) pz.push_back(&t);
  ops::zero_multi(gpu(), pz);
  for (const Tensor& t : z) {
    const Tensor h = download(t);
    int64_t nonzero = 0;
    for (size_t b = 0; b < h.nbytes(); ++b) nonzero += static_cast<const uint8_t*>(h.raw())[b] != 0;
    CHECK(nonzero == 0);
  }
  CHECK(ar.check());
}

// The launch tables' uploads (kernels/runtime.cu copy_to_device_async): a table larger than one
// pinned staging slot (6,000 AdamW entries, 562 KiB) goes through two slots; 100 tables queued
// behind a long GEMM wrap the 64-slot ring, so the host must wait for a slot's previous copy
// before refilling it (a slot refilled too early would hand call i the tensors of call i+64,
// leaving call i's outputs unwritten).
TEST_CASE("multi-tensor: a table past one staging slot, and the staging ring wrapped") {
  Arena ar;
  const int n = 6000;
  std::vector<Tensor> p, g, m, v, gp, gg, gm, gv;
  for (int i = 0; i < n; ++i) {
    const int64_t len = 1 + i % 7;
    p.push_back(rand_f32({len}));
    g.push_back(rand_f32({len}, -0.1f, 0.1f));
    m.push_back(rand_f32({len}, -1e-2f, 1e-2f));
    v.push_back(rand_f32({len}, 0, 1e-3f));
    gp.push_back(ar.upload(p.back()));
    gg.push_back(ar.upload(g.back()));
    gm.push_back(ar.upload(m.back()));
    gv.push_back(ar.upload(v.back()));
  }
  ops::AdamWParams hp;
  hp.lr = 1e-3f;
  hp.step = 3;
  std::vector<ops::AdamWTensors> ts;
  for (int i = 0; i < n; ++i) {
    ops::adamw_step(cpu_ref(), p[size_t(i)], g[size_t(i)], m[size_t(i)], v[size_t(i)], hp);
    ts.push_back({&gp[size_t(i)], &gg[size_t(i)], &gm[size_t(i)], &gv[size_t(i)], 0.0f});
  }
  ops::adamw_step_multi(gpu(), ts, hp);
  for (int i = 0; i < n; i += 97) {
    CAPTURE(i);
    expect_exact(gp[size_t(i)], p[size_t(i)], "adamw_step_multi, 6000 entries");
    expect_exact(gv[size_t(i)], v[size_t(i)], "adamw_step_multi, 6000 entries");
  }
  expect_exact(gp.back(), p.back(), "adamw_step_multi, last entry");

  const int calls = 100;
  std::vector<Tensor> x, gx, out;   // everything uploaded first: an upload waits for the GPU
  for (int i = 0; i < 2 * calls; ++i) {
    x.push_back(rand_f32({int64_t(33 + i)}, -3, 3));
    gx.push_back(ar.upload(x.back()));
    out.push_back(ar.empty(x.back().shape(), DType::bf16));
  }
  Tensor warm = ar.empty({4}, DType::bf16);   // the ring exists before the GPU gets busy
  const Tensor warm_x = ar.upload(rand_f32({4}));
  ops::bf16_round_multi(gpu(), {&warm_x}, {&warm});
  const Tensor a = ar.upload(rand_f32({8192, 8192}));   // ~20 ms of FP32 GEMM ahead of the uploads
  Tensor c = ar.empty({8192, 8192});
  ops::matmul(gpu(), a, a, c, false, true);
  void* busy = ds::cuda::timing_event_record();   // reached once the GEMM is done
  for (int i = 0; i < calls; ++i) {   // two tensors a call, each call its own
    // One slot a call: call 64 is the first to reuse a slot whose copy (call 0's) still
    // waits behind the GEMM.
    if (i == 64)
      WARN_MESSAGE(!ds::cuda::timing_event_done(busy),
                   "the GEMM ended before the ring wrapped: the wrap was not tested under load");
    ops::bf16_round_multi(gpu(), {&gx[size_t(2 * i)], &gx[size_t(2 * i + 1)]},
                          {&out[size_t(2 * i)], &out[size_t(2 * i + 1)]});
  }
  void* end = ds::cuda::timing_event_record();
  ds::cuda::sync();
  MESSAGE("the 100 calls ended " << ds::cuda::timing_event_elapsed_release(busy, end)
                                  << " ms after the GEMM");
  for (size_t k = 0; k < x.size(); ++k) {
    CAPTURE(k);
    Tensor w = Tensor::empty(x[k].shape(), DType::bf16);
    ops::bf16_round(cpu_ref(), x[k], w);
    expect_exact(out[k], w, "bf16_round_multi through the wrapped ring");
  }
  CHECK(ar.check());
}

}  // namespace
}  // namespace ds::gpu_test
