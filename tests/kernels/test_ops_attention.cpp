// GPU vs CPU reference for the attention ops (lib/ops/cuda/attention.cpp): causal attention
// forward/backward with and without segment masks in both precisions (fp32 context: exact FP32
// kernels; bf16/fp8 context: BF16 tensor-core kernels where the head dims allow, else exact),
// head_matmul (both weight layouts) and the absorbed-MLA latent attention (split-K, single
// split, odd dims, wide-dim fallback, bad rows). Guard bytes are checked after every case.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "ds/core/error.hpp"
#include "gpu_harness.hpp"

using namespace ds;
using namespace ds::gpu_test;

namespace {

struct AttnCase {
  int64_t B, T, H, Dk, Dv;
};

std::string describe(const AttnCase& c, const char* seg, ops::Precision mode) {
  std::ostringstream os;
  os << "B " << c.B << " T " << c.T << " H " << c.H << " Dk " << c.Dk << " Dv " << c.Dv
     << " segments " << seg << " mode " << ops::precision_name(mode);
  return os.str();
}

// (B, T) segment ids: contiguous runs of random lengths (SFT packing), or labels drawn from
// {0, 1, 2} per token (any layout is legal: a query sees earlier keys with its label).
Tensor make_segments(int64_t B, int64_t T, bool contiguous) {
  Tensor s = Tensor::empty({B, T}, DType::i32);
  std::uniform_int_distribution<int> lab(0, 2), nseg(1, 5);
  for (int64_t b = 0; b < B; ++b) {
    if (!contiguous) {
      for (int64_t t = 0; t < T; ++t) s.i32()[b * T + t] = lab(rng());
      continue;
    }
    std::vector<int64_t> cuts;
    const int n = nseg(rng());
    std::uniform_int_distribution<int64_t> pos(1, std::max<int64_t>(1, T - 1));
    for (int i = 1; i < n; ++i) cuts.push_back(pos(rng()));
    std::sort(cuts.begin(), cuts.end());
    int id = 7 + int(b) * 10;
    size_t ci = 0;
    for (int64_t t = 0; t < T; ++t) {
      while (ci < cuts.size() && cuts[ci] == t) { ++id; ++ci; }
      s.i32()[b * T + t] = id;
    }
  }
  return s;
}

void report(const char* what, const Tensor& got, const Tensor& want) {
  const Diff d = compare(got, want);
  MESSAGE(what << ": nmse " << d.nmse << " max_abs " << d.max_abs);
}

// Forward against the reference; backward from the reference's out/lse (so it is judged on
// its own error). tol_*: nmse bounds of the outputs and the gradients.
void attention_case(const AttnCase& c, int seg_kind, ops::Precision mode, double tol_out,
                    double tol_grad) {
  const char* seg_name = seg_kind == 0 ? "none" : seg_kind == 1 ? "runs" : "labels";
  INFO(describe(c, seg_name, mode));
  const float scale = 1.0f / std::sqrt(float(c.Dk));
  const Tensor q = rand_f32({c.B, c.T, c.H, c.Dk}, -2, 2), k = rand_f32({c.B, c.T, c.H, c.Dk});
  const Tensor v = rand_f32({c.B, c.T, c.H, c.Dv});
  const Tensor seg = seg_kind == 0 ? Tensor() : make_segments(c.B, c.T, seg_kind == 1);
  Tensor out_r = Tensor::empty({c.B, c.T, c.H, c.Dv}), lse_r = Tensor::empty({c.B, c.H, c.T});
  ops::attention_forward(cpu_ref(), q, k, v, seg, scale, out_r, lse_r);

  Arena ar;
  Context ctx = gpu();
  ctx.linear.mode = mode;
  const Tensor gq = ar.upload(q), gk = ar.upload(k), gv = ar.upload(v);
  const Tensor gseg = seg.defined() ? ar.upload(seg) : Tensor();
  Tensor gout = ar.empty(out_r.shape()), glse = ar.empty(lse_r.shape());
  ops::attention_forward(ctx, gq, gk, gv, gseg, scale, gout, glse);
  expect_close(gout, out_r, tol_out, "attention out");
  expect_close(glse, lse_r, tol_out, "attention lse");

  const Tensor dout = rand_f32({c.B, c.T, c.H, c.Dv});
  Tensor dq_r = Tensor::empty(q.shape()), dk_r = Tensor::empty(k.shape()),
         dv_r = Tensor::empty(v.shape());
  ops::attention_backward(cpu_ref(), q, k, v, seg, scale, out_r, lse_r, dout, dq_r, dk_r, dv_r);
  const Tensor gout_r = ar.upload(out_r), glse_r = ar.upload(lse_r), gdout = ar.upload(dout);
  Tensor gdq = ar.empty(q.shape()), gdk = ar.empty(k.shape()), gdv = ar.empty(v.shape());
  ops::attention_backward(ctx, gq, gk, gv, gseg, scale, gout_r, glse_r, gdout, gdq, gdk, gdv);
  expect_close(gdq, dq_r, tol_grad, "attention dq");
  expect_close(gdk, dk_r, tol_grad, "attention dk");
  expect_close(gdv, dv_r, tol_grad, "attention dv");
  if (mode != ops::Precision::fp32) {   // calibration output for the BF16 path
    MESSAGE(describe(c, seg_name, mode));
    report("  out", gout, out_r);
    report("  dq", gdq, dq_r);
    report("  dk", gdk, dk_r);
    report("  dv", gdv, dv_r);
  }
  CHECK(ar.check());
}

const AttnCase kCases[] = {
    {1, 1, 1, 8, 8},     {2, 37, 3, 24, 16},  {1, 130, 2, 192, 128}, {2, 64, 4, 64, 64},
    {1, 77, 2, 64, 128}, {2, 200, 1, 32, 48}, {1, 45, 2, 5, 3},      {1, 257, 1, 128, 128},
};

}  // namespace

TEST_CASE("gpu attention fp32 (exact kernels) matches the reference") {
  for (const AttnCase& c : kCases)
    for (int seg : {0, 1, 2}) attention_case(c, seg, ops::Precision::fp32, 1e-10, 1e-9);
}

TEST_CASE("gpu attention bf16 (tensor-core kernels) matches the reference") {
  for (const AttnCase& c : kCases)
    for (int seg : {0, 1, 2}) attention_case(c, seg, ops::Precision::bf16, 5e-5, 1e-4);
  // fp8 Linear precision takes the same BF16 attention path.
  attention_case({1, 600, 2, 192, 128}, 1, ops::Precision::fp8, 5e-5, 1e-4);
  attention_case({3, 333, 2, 192, 128}, 0, ops::Precision::bf16, 5e-5, 1e-4);
}

TEST_CASE("gpu attention rejects non-F32 operands") {
  Arena ar;
  const Tensor q = ar.zeros({1, 4, 1, 16}, DType::bf16), k = ar.zeros({1, 4, 1, 16}),
               v = ar.zeros({1, 4, 1, 16});
  Tensor out = ar.empty({1, 4, 1, 16}), lse = ar.empty({1, 1, 4});
  CHECK_THROWS_AS(ops::attention_forward(gpu(), q, k, v, Tensor(), 0.25f, out, lse),
                  InternalError);
  CHECK(ar.check());
}

TEST_CASE("gpu head_matmul matches the reference") {
  struct C { int64_t N, H, I, O; };
  for (const C c : {C{5, 3, 7, 11}, C{1, 1, 1, 1}, C{33, 16, 128, 512}, C{17, 8, 512, 128}})
    for (bool trans : {false, true}) {
      INFO("N " << c.N << " H " << c.H << " I " << c.I << " O " << c.O << " trans " << trans);
      const Tensor x = rand_f32({c.N, c.H, c.I});
      const Tensor w = trans ? rand_f32({c.H, c.O, c.I}) : rand_f32({c.H, c.I, c.O});
      Tensor y_r = Tensor::empty({c.N, c.H, c.O});
      ops::head_matmul(cpu_ref(), x, w, trans, y_r);
      Arena ar;
      Tensor y = ar.empty(y_r.shape());
      ops::head_matmul(gpu(), ar.upload(x), ar.upload(w), trans, y);
      expect_close(y, y_r, 1e-10, "head_matmul");
      CHECK(ar.check());
    }
}

namespace {

struct MlaCase {
  int64_t N, H, R, Dr, S, L;
};

void mla_case(const MlaCase& c) {
  INFO("N " << c.N << " H " << c.H << " R " << c.R << " Dr " << c.Dr << " S " << c.S << " L "
            << c.L);
  const Tensor q_lat = rand_f32({c.N, c.H, c.R}, -3, 3), q_pe = rand_f32({c.N, c.H, c.Dr}, -3, 3);
  const Tensor ckv = rand_f32({c.S, c.L, c.R}), kpe = rand_f32({c.S, c.L, c.Dr});
  Tensor slot = rand_i32({c.N}, 0, int(c.S) - 1), len = rand_i32({c.N}, 1, int(c.L));
  len.i32()[0] = int(c.L);
  len.i32()[c.N - 1] = 1;
  const float scale = 1.0f / std::sqrt(float(c.R + c.Dr));
  Tensor out_r = Tensor::empty({c.N, c.H, c.R});
  ops::mla_latent_attention(cpu_ref(), q_lat, q_pe, ckv, kpe, slot, len, scale, out_r);
  Arena ar;
  Tensor out = ar.empty(out_r.shape());
  ops::mla_latent_attention(gpu(), ar.upload(q_lat), ar.upload(q_pe), ar.upload(ckv),
                            ar.upload(kpe), ar.upload(slot), ar.upload(len), scale, out);
  expect_close(out, out_r, 1e-10, "mla_latent_attention");
  CHECK(ar.check());
}

}  // namespace

TEST_CASE("gpu mla_latent_attention matches the reference") {
  const MlaCase cases[] = {
      {1, 16, 512, 64, 1, 1},      // one key
      {1, 128, 512, 64, 2, 2048},  // DeepSeek-V3 heads, one sequence: many splits
      {4, 20, 512, 64, 3, 700},    // partial head group
      {5, 3, 37, 7, 3, 50},        // odd dims: 4-byte copies
      {300, 2, 64, 16, 2, 128},    // many rows: one split, direct output
      {3, 4, 600, 36, 2, 100},     // two column groups per thread
      {2, 2, 700, 9, 2, 40},       // wide: fallback kernel
  };
  for (const MlaCase& c : cases) mla_case(c);
}

TEST_CASE("gpu mla_latent_attention zeroes rows with bad slot or len") {
  const int64_t N = 4, H = 3, R = 32, Dr = 8, S = 2, L = 16;
  const Tensor q_lat = rand_f32({N, H, R}), q_pe = rand_f32({N, H, Dr});
  const Tensor ckv = rand_f32({S, L, R}), kpe = rand_f32({S, L, Dr});
  Tensor slot = Tensor::empty({N}, DType::i32), len = Tensor::empty({N}, DType::i32);
  const int32_t sl[] = {1, -1, 2, 0}, ln[] = {5, 3, 4, 0};   // rows 1..3 invalid
  std::copy(sl, sl + N, slot.i32());
  std::copy(ln, ln + N, len.i32());
  Arena ar;
  Tensor out = ar.empty({N, H, R});
  ops::mla_latent_attention(gpu(), ar.upload(q_lat), ar.upload(q_pe), ar.upload(ckv),
                            ar.upload(kpe), ar.upload(slot), ar.upload(len), 0.1f, out);
  const Tensor h = download(out);
  for (int64_t i = H * R; i < N * H * R; ++i) REQUIRE(h.f32()[i] == 0.0f);
  // row 0 is valid: compare it with the reference
  Tensor out_r = Tensor::empty({1, H, R});
  ops::mla_latent_attention(cpu_ref(), q_lat.slice0(0, 1), q_pe.slice0(0, 1), ckv, kpe,
                            slot.slice0(0, 1), len.slice0(0, 1), 0.1f, out_r);
  expect_close(download(out).slice0(0, 1), out_r, 1e-10, "mla row 0");
  CHECK(ar.check());
}
