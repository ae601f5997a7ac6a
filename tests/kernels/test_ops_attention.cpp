// GPU vs CPU reference for the attention ops (lib/ops/cuda/attention.cpp): causal attention
// forward/backward with and without segment masks in both precisions (fp32 context: exact FP32
// kernels; bf16/fp8 context: BF16 tensor-core kernels where the head dims allow, else exact),
// head_matmul (both weight layouts) and the absorbed-MLA latent attention (split-K, single
// split, odd dims, wide-dim fallback, bad rows) over an F32 cache (exact kernel) and over a BF16
// cache (tensor-core kernel, against the reference over the same BF16 cache), and set_rows into
// a BF16 cache (bit-exact), and the Hopper wgmma attention kernels (opt-in, sm_90a only);
// q, k, v as BF16 codes against F32 inputs of the same values (bit-exact).
// Guard bytes are checked after every case.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <utility>

#include "ds/core/error.hpp"
#include "gpu_harness.hpp"
#include "kernels/flash_attention.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/runtime.cuh"

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

// q, k, v as BF16 codes (written by MLA's producers where the tensor-core kernels run): the
// kernels read them as they are, F32 inputs holding the same values are converted to the same
// codes first, so forward and backward give the same bits. Misaligned codes, and an fp32
// context (exact kernels), get them widened to F32: again the bits of F32 inputs.
void bf16_inputs_case(const AttnCase& c, int seg_kind, ops::Precision mode, bool misalign) {
  INFO(describe(c, seg_kind == 0 ? "none" : "runs", mode) << " misaligned " << misalign);
  const float scale = 1.0f / std::sqrt(float(c.Dk));
  auto codes_of = [](const Tensor& x) {
    Tensor r = Tensor::empty(x.shape(), DType::bf16);
    ops::bf16_round(cpu_ref(), x, r);
    return r;
  };
  auto values_of = [](const Tensor& codes) {
    Tensor f = Tensor::empty(codes.shape());
    for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = bf16_to_f32(codes.data<uint16_t>()[i]);
    return f;
  };
  const Tensor qc = codes_of(rand_f32({c.B, c.T, c.H, c.Dk}, -2, 2));
  const Tensor kc = codes_of(rand_f32({c.B, c.T, c.H, c.Dk}));
  const Tensor vc = codes_of(rand_f32({c.B, c.T, c.H, c.Dv}));
  const Tensor seg = seg_kind == 0 ? Tensor() : make_segments(c.B, c.T, true);
  Arena ar;
  Context ctx = gpu();
  ctx.linear.mode = mode;
  const Tensor gq = ar.upload(values_of(qc)), gk = ar.upload(values_of(kc));
  const Tensor gv = ar.upload(values_of(vc));
  const Tensor bq = up(ar, qc, misalign), bk = up(ar, kc, misalign), bv = up(ar, vc, misalign);
  const Tensor gseg = seg.defined() ? ar.upload(seg) : Tensor();
  Tensor o0 = ar.empty({c.B, c.T, c.H, c.Dv}), l0 = ar.empty({c.B, c.H, c.T});
  Tensor o1 = ar.empty({c.B, c.T, c.H, c.Dv}), l1 = ar.empty({c.B, c.H, c.T});
  ops::attention_forward(ctx, gq, gk, gv, gseg, scale, o0, l0);
  ops::attention_forward(ctx, bq, bk, bv, gseg, scale, o1, l1);
  expect_exact(o1, download(o0), "out");
  expect_exact(l1, download(l0), "lse");
  const Tensor gdout = ar.upload(rand_f32({c.B, c.T, c.H, c.Dv}));
  Tensor dq0 = ar.empty(gq.shape()), dk0 = ar.empty(gk.shape()), dv0 = ar.empty(gv.shape());
  Tensor dq1 = ar.empty(gq.shape()), dk1 = ar.empty(gk.shape()), dv1 = ar.empty(gv.shape());
  ops::attention_backward(ctx, gq, gk, gv, gseg, scale, o0, l0, gdout, dq0, dk0, dv0);
  ops::attention_backward(ctx, bq, bk, bv, gseg, scale, o0, l0, gdout, dq1, dk1, dv1);
  expect_exact(dq1, download(dq0), "dq");
  expect_exact(dk1, download(dk0), "dk");
  expect_exact(dv1, download(dv0), "dv");
  CHECK(ar.check());
}

// DS_ATTENTION=wgmma for a scope, restored after; false (nothing changed) where the wgmma
// kernels cannot run (not an sm_90a device).
class WgmmaOn {
 public:
  WgmmaOn()
      : was_(ds::cuda::attention_wgmma()), ok_(ds::cuda::attention_wgmma_supported(192, 128)) {
    if (ok_) ds::cuda::set_attention_wgmma(true);
  }
  ~WgmmaOn() {
    if (ok_) ds::cuda::set_attention_wgmma(was_);
  }
  WgmmaOn(const WgmmaOn&) = delete;
  WgmmaOn& operator=(const WgmmaOn&) = delete;
  explicit operator bool() const { return ok_; }

 private:
  bool was_, ok_;
};

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

// The wgmma kernels (kernels/flash_attention_sm90.cu; DS_ATTENTION=wgmma): the same cases
// through them on an sm_90a device (forward and backward against the reference at the
// mma.sync kernels' tolerances), odd T around their 128-row blocks and 64-row tiles, every
// head-dim pair they take, segments of both kinds; both counted as having run.
TEST_CASE("gpu attention wgmma forward and backward match the reference") {
  const WgmmaOn wgmma;
  if (!wgmma) {
    // An sm_90 device must load the sm_90a build (the FP8 GEMM depends on it too).
    CHECK_MESSAGE(ds::cuda::device_name(0).find("sm_90") == std::string::npos,
                  "an sm_90 device without the sm_90a build of kernels/");
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  const int64_t before = ds::cuda::attention_wgmma_launches(false);
  const int64_t before_bwd = ds::cuda::attention_wgmma_launches(true);
  // (No T = 1 case: with one key the reference's dq, dk are exactly 0 and its lse a single
  // value near 0, so nmse measures the BF16 rounding alone.)
  const AttnCase cases[] = {{2, 37, 3, 64, 64},    {1, 130, 2, 192, 128}, {2, 200, 2, 96, 64},
                            {1, 257, 1, 128, 128}, {3, 333, 2, 192, 128}, {1, 600, 2, 96, 64},
                            {1, 64, 1, 96, 64},    {1, 129, 2, 128, 128}};
  int64_t runs = 0;
  for (const AttnCase& c : cases)
    for (int seg : {0, 1, 2}) {
      attention_case(c, seg, ops::Precision::bf16, 5e-5, 1e-4);
      ++runs;
    }
  CHECK(ds::cuda::attention_wgmma_launches(false) - before == runs);
  CHECK(ds::cuda::attention_wgmma_launches(true) - before_bwd == runs);
}

namespace {

// A case's random q (in [-2, 2]), k, v and dout, and its segment labels (none, runs, labels),
// uploaded.
struct AttnInputs {
  Tensor q, k, v, dout, seg;
};
AttnInputs upload_inputs(Arena& ar, const AttnCase& c, int seg_kind) {
  return {ar.upload(rand_f32({c.B, c.T, c.H, c.Dk}, -2, 2)),
          ar.upload(rand_f32({c.B, c.T, c.H, c.Dk})), ar.upload(rand_f32({c.B, c.T, c.H, c.Dv})),
          ar.upload(rand_f32({c.B, c.T, c.H, c.Dv})),
          seg_kind == 0 ? Tensor() : ar.upload(make_segments(c.B, c.T, seg_kind == 1))};
}

// The wgmma kernels against the mma.sync kernels on the same inputs, element by element: both
// take the same BF16 operands and differ only in where P is rounded to BF16 (relative error
// up to 2^-8, against running maxima that may differ) and in FP32 summation order. A row's
// largest weight is exactly 1 in both (rounded against its own score), so the difference of
// an output element stays well under 2^-8 of max|v| (v in [-1, 1]): |out| within 6e-3, lse
// within 1e-2, dq/dk/dv within 2% of their largest element. nmse over whole tensors (the
// test above) cannot see an error confined to a few rows or columns of a late tile; this can.
// The backward runs from each kernel's own forward out and lse, so the wgmma lse is used too.
void wgmma_vs_mma_case(const AttnCase& c, int seg_kind) {
  INFO(describe(c, seg_kind == 0 ? "none" : seg_kind == 1 ? "runs" : "labels",
                ops::Precision::bf16));
  const float scale = 1.0f / std::sqrt(float(c.Dk));
  Arena ar;
  Context ctx = gpu();
  ctx.linear.mode = ops::Precision::bf16;
  const auto [gq, gk, gv, gdout, gseg] = upload_inputs(ar, c, seg_kind);
  Tensor out[2], lse[2], dq[2], dk[2], dv[2];
  for (int w = 0; w < 2; ++w) {   // 0: mma.sync, 1: wgmma
    ds::cuda::set_attention_wgmma(w == 1);
    out[w] = ar.empty({c.B, c.T, c.H, c.Dv});
    lse[w] = ar.empty({c.B, c.H, c.T});
    dq[w] = ar.empty(gq.shape());
    dk[w] = ar.empty(gk.shape());
    dv[w] = ar.empty(gv.shape());
    ops::attention_forward(ctx, gq, gk, gv, gseg, scale, out[w], lse[w]);
    ops::attention_backward(ctx, gq, gk, gv, gseg, scale, out[w], lse[w], gdout, dq[w], dk[w],
                            dv[w]);
  }
  ds::cuda::set_attention_wgmma(true);
  auto max_abs = [](const Tensor& t) {
    double m = 0;
    for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, double(std::fabs(t.f32()[i])));
    return m;
  };
  expect_close(out[1], download(out[0]), 1e-4, "wgmma vs mma.sync out", 6e-3);
  expect_close(lse[1], download(lse[0]), 1e-4, "wgmma vs mma.sync lse", 1e-2);
  const std::pair<const Tensor*, const char*> grads[] = {
      {dq, "wgmma vs mma.sync dq"}, {dk, "wgmma vs mma.sync dk"}, {dv, "wgmma vs mma.sync dv"}};
  for (const auto& [g, what] : grads) {
    const Tensor want = download(g[0]);
    expect_close(g[1], want, 1e-4, what, 0.02 * max_abs(want));
  }
  CHECK(ar.check());
}

}  // namespace

TEST_CASE("gpu attention wgmma: element by element close to the mma.sync kernels") {
  const WgmmaOn wgmma;
  if (!wgmma) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  const int64_t before = ds::cuda::attention_wgmma_launches(false);
  const int64_t before_bwd = ds::cuda::attention_wgmma_launches(true);
  wgmma_vs_mma_case({1, 333, 2, 192, 128}, 0);
  wgmma_vs_mma_case({1, 333, 2, 192, 128}, 1);
  wgmma_vs_mma_case({2, 200, 2, 96, 64}, 2);
  CHECK(ds::cuda::attention_wgmma_launches(false) - before == 3);
  CHECK(ds::cuda::attention_wgmma_launches(true) - before_bwd == 3);
}

namespace {

// The wgmma backward with dK and dV in one pass (DS_ATTENTION_BWD=fused) against the split
// passes on the same inputs, forward and dout: each accumulator sees the same products in the
// same order, so dq, dk and dv must be the split passes' to the bit.
void fused_vs_split_case(const AttnCase& c, int seg_kind) {
  INFO(describe(c, seg_kind == 0 ? "none" : seg_kind == 1 ? "runs" : "labels",
                ops::Precision::bf16));
  const float scale = 1.0f / std::sqrt(float(c.Dk));
  Arena ar;
  Context ctx = gpu();
  ctx.linear.mode = ops::Precision::bf16;
  const auto [gq, gk, gv, gdout, gseg] = upload_inputs(ar, c, seg_kind);
  Tensor out = ar.empty({c.B, c.T, c.H, c.Dv}), lse = ar.empty({c.B, c.H, c.T});
  ops::attention_forward(ctx, gq, gk, gv, gseg, scale, out, lse);
  const bool was = ds::cuda::attention_bwd_fused();
  Tensor dq[2], dk[2], dv[2];
  for (int f = 0; f < 2; ++f) {   // 0: split, 1: fused
    ds::cuda::set_attention_bwd_fused(f == 1);
    dq[f] = ar.empty(gq.shape());
    dk[f] = ar.empty(gk.shape());
    dv[f] = ar.empty(gv.shape());
    ops::attention_backward(ctx, gq, gk, gv, gseg, scale, out, lse, gdout, dq[f], dk[f], dv[f]);
  }
  ds::cuda::set_attention_bwd_fused(was);
  expect_exact(dq[1], download(dq[0]), "fused vs split dq");
  expect_exact(dk[1], download(dk[0]), "fused vs split dk");
  expect_exact(dv[1], download(dv[0]), "fused vs split dv");
  CHECK(ar.check());
}

}  // namespace

// (Named apart from the "gpu attention wgmma" cases: scripts/gpu-check.sh runs it in a process
// of its own, group ops-attn-fused, until it has run on a GPU.)
TEST_CASE("gpu attention fused dK/dV pass (wgmma): the split passes' bits") {
  const WgmmaOn wgmma;
  if (!wgmma) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  REQUIRE(ds::cuda::attention_bwd_fused_supported(96, 64));
  CHECK_FALSE(ds::cuda::attention_bwd_fused_supported(192, 128));   // registers: split passes
  const int64_t before = ds::cuda::attention_bwd_fused_launches();
  for (int seg : {0, 1, 2}) fused_vs_split_case({2, 200, 2, 96, 64}, seg);
  fused_vs_split_case({1, 333, 2, 64, 64}, 1);
  fused_vs_split_case({1, 64, 1, 96, 64}, 0);
  fused_vs_split_case({1, 130, 2, 192, 128}, 0);   // not fused: the same split passes twice
  CHECK(ds::cuda::attention_bwd_fused_launches() - before == 5);
  // and against the CPU reference with the fused pass on, at the wgmma kernels' bounds
  const bool was = ds::cuda::attention_bwd_fused();
  ds::cuda::set_attention_bwd_fused(true);
  for (int seg : {0, 2})
    attention_case({1, 257, 2, 96, 64}, seg, ops::Precision::bf16, 5e-5, 1e-4);
  ds::cuda::set_attention_bwd_fused(was);
  CHECK(ds::cuda::attention_bwd_fused_launches() - before == 7);
}

namespace {

// The wgmma kernels under a switch (64-row blocks, DS_ATTENTION_ROWS=64; staggered
// warpgroups, DS_ATTENTION_SCHEDULE=staggered; the query-stats table, DS_ATTENTION_QSTATS)
// against the defaults on the same inputs:
// every row sees the same tiles in the same order (a smaller block skips only tiles none of
// its rows sees, which add exact zeros), so out, lse, dq, dk and dv must be the same bits;
// with the fused dK/dV pass on or off.
struct BlockSwitch {
  const char* name;
  void (*set)(bool);
  bool (*get)();
};
constexpr BlockSwitch kRows64{"64-row blocks", ds::cuda::set_attention_rows64,
                              ds::cuda::attention_rows64};
constexpr BlockSwitch kStaggered{"staggered", ds::cuda::set_attention_staggered,
                                 ds::cuda::attention_staggered};
constexpr BlockSwitch kQstats{"query-stats table", ds::cuda::set_attention_bwd_qstats,
                              ds::cuda::attention_bwd_qstats};

void block_switch_case(const BlockSwitch& sw, const AttnCase& c, int seg_kind, bool fused) {
  INFO(describe(c, seg_kind == 0 ? "none" : seg_kind == 1 ? "runs" : "labels",
                ops::Precision::bf16));
  INFO(sw.name << ", fused dK/dV: " << fused);
  const float scale = 1.0f / std::sqrt(float(c.Dk));
  Arena ar;
  Context ctx = gpu();
  ctx.linear.mode = ops::Precision::bf16;
  const auto [gq, gk, gv, gdout, gseg] = upload_inputs(ar, c, seg_kind);
  const bool was = sw.get(), fused_was = ds::cuda::attention_bwd_fused();
  ds::cuda::set_attention_bwd_fused(fused);
  Tensor out[2], lse[2], dq[2], dk[2], dv[2];
  for (int r = 0; r < 2; ++r) {   // 0: the default blocks, 1: the switch's
    sw.set(r == 1);
    out[r] = ar.empty({c.B, c.T, c.H, c.Dv});
    lse[r] = ar.empty({c.B, c.H, c.T});
    ops::attention_forward(ctx, gq, gk, gv, gseg, scale, out[r], lse[r]);
    dq[r] = ar.empty(gq.shape());
    dk[r] = ar.empty(gk.shape());
    dv[r] = ar.empty(gv.shape());
    ops::attention_backward(ctx, gq, gk, gv, gseg, scale, out[r], lse[r], gdout, dq[r], dk[r],
                            dv[r]);
  }
  sw.set(was);
  ds::cuda::set_attention_bwd_fused(fused_was);
  expect_exact(out[1], download(out[0]), "out");
  expect_exact(lse[1], download(lse[0]), "lse");
  expect_exact(dq[1], download(dq[0]), "dq");
  expect_exact(dk[1], download(dk[0]), "dk");
  expect_exact(dv[1], download(dv[0]), "dv");
  CHECK(ar.check());
}

// The cases of one switch, then against the CPU reference with it on.
void block_switch_cases(const BlockSwitch& sw) {
  for (int seg : {0, 1, 2}) block_switch_case(sw, {2, 200, 2, 96, 64}, seg, false);
  block_switch_case(sw, {2, 200, 2, 96, 64}, 2, true);
  block_switch_case(sw, {1, 333, 2, 64, 64}, 1, true);
  block_switch_case(sw, {1, 130, 2, 128, 128}, 0, false);
  block_switch_case(sw, {1, 130, 2, 192, 128}, 1, false);
  block_switch_case(sw, {1, 64, 1, 96, 64}, 0, false);   // one tile
  const bool was = sw.get();
  sw.set(true);
  for (int seg : {0, 2})
    attention_case({1, 257, 2, 96, 64}, seg, ops::Precision::bf16, 5e-5, 1e-4);
  attention_case({1, 200, 2, 192, 128}, 1, ops::Precision::bf16, 5e-5, 1e-4);
  sw.set(was);
}

}  // namespace

// (Named apart from the "gpu attention wgmma" cases: scripts/gpu-check.sh runs it in a process
// of its own, group ops-attn-rows64, until it has run on a GPU.)
TEST_CASE("gpu attention 64-row blocks (wgmma): the 128-row blocks' bits") {
  const WgmmaOn wgmma;
  if (!wgmma) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  const int64_t before = ds::cuda::attention_rows64_launches();
  block_switch_cases(kRows64);   // at 128 / 128 the forward and dV, at 192 / 128 dV only
  const int64_t ran = ds::cuda::attention_rows64_launches() - before;
  MESSAGE("64-row kernels launched: " << ran);   // where two blocks are resident
  CHECK(ran > 0);
}

// The split dK and dV passes reading the query-stats table (group ops-attn-qstats).
TEST_CASE("gpu attention query-stats table (wgmma): the inline loads' bits") {
  const WgmmaOn wgmma;
  if (!wgmma) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  const int64_t before = ds::cuda::attention_bwd_qstats_launches();
  block_switch_cases(kQstats);   // with the fused pass on, 96 / 64 and 64 / 64 read it anyway
  CHECK(ds::cuda::attention_bwd_qstats_launches() - before >= 12);   // 2 a split backward
}

// (scripts/gpu-check.sh: group ops-attn-staggered, until it has run on a GPU.)
TEST_CASE("gpu attention staggered warpgroups (wgmma): the lockstep bits") {
  const WgmmaOn wgmma;
  if (!wgmma) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  const int64_t before = ds::cuda::attention_staggered_launches();
  block_switch_cases(kStaggered);   // at 192 / 128 the forward and dV only
  const int64_t ran = ds::cuda::attention_staggered_launches() - before;
  MESSAGE("staggered kernels launched: " << ran);
  CHECK(ran >= 28);   // the switched runs of the cases: every kernel but dQ, dK at 192 / 128
}

TEST_CASE("gpu attention: BF16-code q, k, v give the bits of F32 inputs of the same values") {
  const AttnCase cases[] = {{2, 37, 3, 24, 16}, {1, 130, 2, 192, 128}, {2, 200, 2, 96, 64},
                            {1, 45, 2, 5, 3}};
  for (const AttnCase& c : cases)
    for (int seg : {0, 1}) {
      bf16_inputs_case(c, seg, ops::Precision::bf16, false);   // tensor cores, or widened
      bf16_inputs_case(c, seg, ops::Precision::bf16, true);    // misaligned: widened
    }
  bf16_inputs_case({2, 37, 3, 24, 16}, 1, ops::Precision::fp32, false);   // exact: widened
}

// The same through the wgmma kernels, whose transposed operands (V^T; Q^T, K^T in the
// backward) are then copied from the codes instead of converted from F32.
TEST_CASE("gpu attention wgmma: BF16-code q, k, v give the bits of F32 inputs") {
  const WgmmaOn wgmma;
  if (!wgmma) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  const int64_t before = ds::cuda::attention_wgmma_launches(false);
  for (const AttnCase& c : {AttnCase{1, 130, 2, 192, 128}, AttnCase{2, 200, 2, 96, 64}})
    for (int seg : {0, 1}) bf16_inputs_case(c, seg, ops::Precision::bf16, false);
  CHECK(ds::cuda::attention_wgmma_launches(false) - before == 8);
}

TEST_CASE("gpu attention rejects mixed operand dtypes") {
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

// ---- BF16 latent cache: the tensor-core kernel (kernels/mla_decode_tc.cu) -------------------
namespace {

Tensor to_bf16(const Tensor& x) {
  Tensor t = Tensor::empty(x.shape(), DType::bf16);
  for (int64_t i = 0; i < x.numel(); ++i) t.data<uint16_t>()[i] = f32_to_bf16(x.f32()[i]);
  return t;
}

// Tolerance of the BF16-cache kernel against the reference over the same BF16 cache. Its only
// roundings are q and p to BF16 (RNE: relative error <= 2^-8, RMS ~1.7e-3 for log-uniform
// mantissas) and FP32 sums. The output o = sum_j w_j v_j is a convex combination of cache rows;
// weights perturbed to w_j (1 + e_j) move it by sum_j w_j e_j (v_j - o). P rounding gives e_j
// of RMS ~1.7e-3; q rounding shifts each score by scale * sum_d q_d eps_d k_jd, which with the
// inputs below (q ~ U(-3,3), cache ~ U(-1,1), scale = 1/sqrt(R+Dr): scores ~ N(0, 1)) is also
// ~1.7e-3 RMS. With v independent of the weights, |delta o|^2 / |o|^2 ~ E[e^2] ~ 5e-6 per
// (row, head) whatever the number of keys (1 key: exact). A host emulation of the kernel
// (warp-level PTX emulator, these shapes, 6 seeds) gave per-(row, head) NMSE up to 2.6e-5 and
// whole-output NMSE up to 4.9e-6. Bounds: 2e-4 per (row, head) (1.4% RMS), 3e-5 overall; a
// wrong fragment mapping or a lost tile gives O(1e-2 .. 1).
constexpr double kBf16RowTol = 2e-4, kBf16Tol = 3e-5;

// One batch: valid rows with visible lengths `lens` (slots drawn from [0, S)), and, when `bad`,
// rows with slot -1 / S / INT_MIN or len 0 / L+1 / INT_MAX interleaved (they must come out 0).
void mla_bf16_case(int64_t H, int64_t R, int64_t Dr, int64_t S, int64_t L,
                   const std::vector<int32_t>& lens, bool bad) {
  std::vector<int32_t> slot, len;
  std::vector<bool> valid;
  const int32_t bad_slot[] = {-1, int32_t(S), INT_MIN, 0, 0, 0};
  const int32_t bad_len[] = {5, 5, 3, 0, int32_t(L + 1), INT_MAX};
  std::uniform_int_distribution<int> pick(0, int(S) - 1);
  for (size_t i = 0; i < lens.size(); ++i) {
    slot.push_back(pick(rng()));
    len.push_back(lens[i]);
    valid.push_back(true);
    if (bad && i < 6) {
      slot.push_back(bad_slot[i]);
      len.push_back(bad_len[i]);
      valid.push_back(false);
    }
  }
  const int64_t N = int64_t(slot.size());
  INFO("BF16 cache: N " << N << " H " << H << " R " << R << " Dr " << Dr << " S " << S << " L "
                        << L);
  const Tensor q_lat = rand_f32({N, H, R}, -3, 3), q_pe = rand_f32({N, H, Dr}, -3, 3);
  const Tensor ckv = to_bf16(rand_f32({S, L, R})), kpe = to_bf16(rand_f32({S, L, Dr}));
  const float scale = 1.0f / std::sqrt(float(R + Dr));
  // reference over the same BF16 cache; bad rows replaced by (slot 0, len 1) there
  Tensor slot_h = Tensor::empty({N}, DType::i32), len_h = Tensor::empty({N}, DType::i32);
  Tensor slot_r = Tensor::empty({N}, DType::i32), len_r = Tensor::empty({N}, DType::i32);
  for (int64_t n = 0; n < N; ++n) {
    slot_h.i32()[n] = slot[size_t(n)];
    len_h.i32()[n] = len[size_t(n)];
    slot_r.i32()[n] = valid[size_t(n)] ? slot[size_t(n)] : 0;
    len_r.i32()[n] = valid[size_t(n)] ? len[size_t(n)] : 1;
  }
  Tensor out_r = Tensor::empty({N, H, R});
  ops::mla_latent_attention(cpu_ref(), q_lat, q_pe, ckv, kpe, slot_r, len_r, scale, out_r);
  Arena ar;
  Tensor out = ar.empty({N, H, R});
  ops::mla_latent_attention(gpu(), ar.upload(q_lat), ar.upload(q_pe), ar.upload(ckv),
                            ar.upload(kpe), ar.upload(slot_h), ar.upload(len_h), scale, out);
  const Tensor got = download(out);
  double num = 0, den = 0, worst = 0;
  int64_t nonfinite = 0, bad_nonzero = 0, rows_over = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const float* g = got.f32() + (n * H + h) * R;
      const float* w = out_r.f32() + (n * H + h) * R;
      double rn = 0, rd = 0;
      for (int64_t r = 0; r < R; ++r) {
        if (!std::isfinite(g[r])) ++nonfinite;
        if (!valid[size_t(n)]) {
          bad_nonzero += g[r] != 0.0f;
          continue;
        }
        rn += (double(g[r]) - w[r]) * (double(g[r]) - w[r]);
        rd += double(w[r]) * w[r];
      }
      if (!valid[size_t(n)]) continue;
      num += rn;
      den += rd;
      const double row = rd > 0 ? rn / rd : rn;
      worst = std::max(worst, row);
      rows_over += row > kBf16RowTol;
    }
  MESSAGE("BF16-cache MLA H " << H << " R " << R << " Dr " << Dr << ": nmse " << num / den
                              << ", worst (row, head) nmse " << worst);
  CHECK(nonfinite == 0);
  CHECK(bad_nonzero == 0);
  CHECK(rows_over == 0);
  CHECK(num / den <= kBf16Tol);
  CHECK(ar.check());
}

// Byte-exact comparison of a BF16 (or any) tensor with the CPU's.
void expect_same_bytes(const Tensor& got_any, const Tensor& want, const char* what) {
  const Tensor got = got_any.device() == Device::cpu ? got_any : download(got_any);
  REQUIRE(got.nbytes() == want.nbytes());
  const auto* a = static_cast<const uint8_t*>(got.data<uint8_t>());
  const auto* b = static_cast<const uint8_t*>(want.data<uint8_t>());
  size_t diff = 0;
  for (size_t i = 0; i < got.nbytes(); ++i) diff += a[i] != b[i];
  INFO(what << ": " << diff << " bytes differ of " << got.nbytes());
  CHECK(diff == 0);
}

}  // namespace

TEST_CASE("gpu mla_latent_attention over a BF16 cache (tensor cores) matches the reference") {
  const std::vector<int32_t> lens = {1, 7, 63, 64, 65, 1000, 4096};
  struct Dims { int64_t R, Dr; };
  for (const Dims d : {Dims{512, 64}, Dims{128, 32}, Dims{256, 32}})
    for (int64_t H : {1, 16, 128}) mla_bf16_case(H, d.R, d.Dr, 3, 4096, lens, true);
  // 3 m-tiles per CTA; two 512-column groups; the tiny preset's dims; many rows (one split,
  // direct output) with bad rows among them
  mla_bf16_case(40, 256, 32, 2, 300, {300, 1, 31, 32, 33, 299}, true);
  mla_bf16_case(20, 640, 64, 2, 700, {700, 5, 64, 129}, true);
  mla_bf16_case(4, 32, 16, 2, 100, {100, 1, 17, 50}, true);
  std::vector<int32_t> many(200);
  for (size_t i = 0; i < many.size(); ++i) many[i] = int32_t(1 + (i * 37) % 256);
  mla_bf16_case(16, 512, 64, 4, 256, many, true);
  mla_bf16_case(128, 512, 64, 2, 96, std::vector<int32_t>(80, 96), false);
}

// The launch plans a benchmark can force (set_mla_bf16_plan): every ring depth and several
// splits per row give the reference's numbers, and the plan is the one asked for.
TEST_CASE("gpu mla_latent_attention over a BF16 cache: forced ring depths and splits") {
  for (int stages : {2, 3, 4})
    for (int splits : {1, 3, 8}) {
      ds::cuda::set_mla_bf16_plan(stages, splits);
      mla_bf16_case(16, 512, 64, 3, 1000, {1, 63, 64, 65, 1000}, false);
      const ds::cuda::MlaPlan p = ds::cuda::mla_bf16_last_plan();
      CHECK(p.stages == stages);   // 16 heads: every depth fits
      CHECK(p.splits == splits);   // 1000 keys: 1000, 352 or 128 a split
    }
  ds::cuda::set_mla_bf16_plan(0, 0);
}

TEST_CASE("gpu mla_latent_attention: a BF16 cache with one visible key returns that row") {
  // p = 1 exactly, so the output is the BF16 row widened, whatever q.
  const int64_t N = 3, H = 16, R = 128, Dr = 32, S = 2, L = 64;
  const Tensor q_lat = rand_f32({N, H, R}, -3, 3), q_pe = rand_f32({N, H, Dr}, -3, 3);
  const Tensor ckv = to_bf16(rand_f32({S, L, R})), kpe = to_bf16(rand_f32({S, L, Dr}));
  Tensor slot = Tensor::empty({N}, DType::i32), len = Tensor::empty({N}, DType::i32);
  const int32_t sl[] = {1, 0, 1};
  for (int64_t n = 0; n < N; ++n) { slot.i32()[n] = sl[n]; len.i32()[n] = 1; }
  Arena ar;
  Tensor out = ar.empty({N, H, R});
  ops::mla_latent_attention(gpu(), ar.upload(q_lat), ar.upload(q_pe), ar.upload(ckv),
                            ar.upload(kpe), ar.upload(slot), ar.upload(len), 0.3f, out);
  const Tensor got = download(out);
  int64_t wrong = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t r = 0; r < R; ++r)
        wrong += got.f32()[(n * H + h) * R + r] !=
                 bf16_to_f32(ckv.data<uint16_t>()[int64_t(sl[n]) * L * R + r]);
  CHECK(wrong == 0);
  CHECK(ar.check());
}

TEST_CASE("gpu mla_latent_attention rejects BF16 caches the kernel cannot take") {
  Arena ar;
  const Tensor q_lat = ar.zeros({1, 2, 40}), q_pe = ar.zeros({1, 2, 8});
  const Tensor ckv = ar.zeros({1, 4, 40}, DType::bf16), kpe = ar.zeros({1, 4, 8}, DType::bf16);
  const Tensor slot = ar.zeros({1}, DType::i32), len = ar.zeros({1}, DType::i32);
  Tensor out = ar.empty({1, 2, 40});
  CHECK_THROWS_WITH_AS(
      ops::mla_latent_attention(gpu(), q_lat, q_pe, ckv, kpe, slot, len, 0.1f, out),
      doctest::Contains("needs R and Dr multiples of 16"), InternalError);
  CHECK(ar.check());
}

TEST_CASE("gpu set_rows into a BF16 cache is bit-exact") {
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t C : {576, 7, 64}) {   // vector paths, scalar path
    INFO("C " << C);
    const int64_t M = 5, Nd = 9;
    Tensor src = rand_f32({M, C}, -100, 100);
    // rounding ties both ways, specials, a subnormal
    const float special[] = {1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8), inf,
                             -inf, std::numeric_limits<float>::quiet_NaN(), 1.0e-40f, -0.0f};
    for (int i = 0; i < 7; ++i) src.f32()[i * 3 % (M * C)] = special[i];
    Tensor rows = Tensor::empty({M}, DType::i32);
    const int32_t rv[] = {8, 0, 3, 5, 1};
    std::copy(rv, rv + M, rows.i32());
    Tensor init = to_bf16(rand_f32({Nd, C}));
    // F32 -> BF16
    Tensor want = init.clone();
    ops::set_rows(cpu_ref(), src, rows, want);
    Arena ar;
    Tensor gdst = ar.upload(init);
    ops::set_rows(gpu(), ar.upload(src), ar.upload(rows), gdst);
    expect_same_bytes(gdst, want, "set_rows F32 -> BF16");
    // BF16 -> BF16
    const Tensor bsrc = to_bf16(rand_f32({M, C}));
    Tensor want_b = init.clone();
    ops::set_rows(cpu_ref(), bsrc, rows, want_b);
    Tensor gdst_b = ar.upload(init);
    ops::set_rows(gpu(), ar.upload(bsrc), ar.upload(rows), gdst_b);
    expect_same_bytes(gdst_b, want_b, "set_rows BF16 -> BF16");
    // bad rows are skipped on the GPU (the CPU rejects them): expected = the valid writes
    const int32_t bv[] = {-1, 2, INT_MIN, int32_t(Nd), INT_MAX};
    Tensor brows = Tensor::empty({M}, DType::i32);
    std::copy(bv, bv + M, brows.i32());
    Tensor want_s = init.clone(), row2 = Tensor::empty({1}, DType::i32);
    row2.i32()[0] = 2;
    ops::set_rows(cpu_ref(), src.slice0(1, 2), row2, want_s);
    Tensor gdst_s = ar.upload(init);
    ops::set_rows(gpu(), ar.upload(src), ar.upload(brows), gdst_s);
    expect_same_bytes(gdst_s, want_s, "set_rows F32 -> BF16 with bad rows");
    CHECK(ar.check());
  }
}
