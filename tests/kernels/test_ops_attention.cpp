// GPU vs CPU reference for the attention ops (lib/ops/cuda/attention.cpp): causal attention
// forward/backward with and without segment masks in both precisions (fp32 context: exact FP32
// kernels; bf16/fp8 context: BF16 tensor-core kernels where the head dims allow, else exact),
// the Hopper wgmma attention kernels (sm_90a only) and their opt-ins against the defaults (bit
// for bit); q, k, v as BF16 codes against F32 inputs of the same values (bit-exact). The
// absorbed-MLA decode ops are in test_ops_mla.cpp. Guard bytes are checked after every case.
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

// The largest |x| of a host F32 tensor.
double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, double(std::fabs(t.f32()[i])));
  return m;
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

// The wgmma kernels under a switch (64-row blocks, DS_ATTENTION_ROWS=64; staggered or
// pipelined warpgroups, DS_ATTENTION_SCHEDULE; the query-stats table, DS_ATTENTION_QSTATS)
// against the defaults on the same inputs:
// every row sees the same tiles in the same order (a smaller block skips only tiles none of
// its rows sees, which add exact zeros), so out, lse, dq, dk and dv must be the same bits;
// with the fused dK/dV pass on or off (finite inputs: a skipped tile adds exact zeros).
struct BlockSwitch {
  const char* name;
  void (*set)(bool);
  bool (*get)();
};
constexpr BlockSwitch kRows64{"64-row blocks", ds::cuda::set_attention_rows64,
                              ds::cuda::attention_rows64};
constexpr BlockSwitch kStaggered{"staggered", ds::cuda::set_attention_staggered,
                                 ds::cuda::attention_staggered};
constexpr BlockSwitch kPipelined{"pipelined", ds::cuda::set_attention_pipelined,
                                 ds::cuda::attention_pipelined};
constexpr BlockSwitch kQstats{"query-stats table", ds::cuda::set_attention_bwd_qstats,
                              ds::cuda::attention_bwd_qstats};
// (the fused dK/dV pass as the switch: each accumulator sees the split passes' products in
// their order; block_switch_case's own fused flag is then overridden by it)
constexpr BlockSwitch kFused{"fused dK/dV pass", ds::cuda::set_attention_bwd_fused,
                             ds::cuda::attention_bwd_fused};

void block_switch_case(const BlockSwitch& sw, const AttnCase& c, int seg_kind, bool fused) {
  INFO(describe(c, seg_kind == 0 ? "none" : seg_kind == 1 ? "runs" : "labels",
                ops::Precision::bf16));
  INFO(sw.name << ", fused dK/dV: " << fused);
  const float scale = 1.0f / std::sqrt(float(c.Dk));
  Arena ar;
  Context ctx = gpu();
  ctx.linear.mode = ops::Precision::bf16;
  const auto [gq, gk, gv, gdout, gseg] = upload_inputs(ar, c, seg_kind);
  const bool was = sw.get();
  const int bwd_was = ds::cuda::attention_bwd_mode();      // (three-valued)
  const int sched_was = ds::cuda::attention_schedule();   // (three-valued)
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
  ds::cuda::set_attention_schedule(sched_was);
  ds::cuda::set_attention_bwd_mode(bwd_was);
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
  block_switch_case(sw, {1, 450, 1, 128, 128}, 2, false);   // 8 tiles: every ring wraps
  block_switch_case(sw, {1, 450, 1, 192, 128}, 0, false);
  block_switch_case(sw, {1, 64, 1, 96, 64}, 0, false);   // one tile
  const bool was = sw.get();
  const int sched_was = ds::cuda::attention_schedule();
  sw.set(true);
  for (int seg : {0, 2})
    attention_case({1, 257, 2, 96, 64}, seg, ops::Precision::bf16, 5e-5, 1e-4);
  attention_case({1, 200, 2, 192, 128}, 1, ops::Precision::bf16, 5e-5, 1e-4);
  sw.set(was);
  ds::cuda::set_attention_schedule(sched_was);
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
  for (int seg : {0, 1, 2}) block_switch_case(kFused, {2, 200, 2, 96, 64}, seg, false);
  block_switch_case(kFused, {1, 333, 2, 64, 64}, 1, false);
  block_switch_case(kFused, {1, 64, 1, 96, 64}, 0, false);
  block_switch_case(kFused, {1, 130, 2, 192, 128}, 0, false);   // not fused: split twice
  CHECK(ds::cuda::attention_bwd_fused_launches() - before == 5);
  // and against the CPU reference with the fused pass on, at the wgmma kernels' bounds
  const int was = ds::cuda::attention_bwd_mode();
  ds::cuda::set_attention_bwd_fused(true);
  for (int seg : {0, 2})
    attention_case({1, 257, 2, 96, 64}, seg, ops::Precision::bf16, 5e-5, 1e-4);
  ds::cuda::set_attention_bwd_mode(was);
  CHECK(ds::cuda::attention_bwd_fused_launches() - before == 7);
}

namespace {

// The one-pass backward (mode 2) against the fused pass (mode 1) on the same inputs: out and
// lse untouched, dK and dV the same bits (each accumulator sees the fused pass's products in
// its order; a tile no key of a warpgroup sees adds exact zeros). dQ comes from F32 atomics
// in no fixed order and from dS^T (the key-row pass's S^T, dP^T), where the dQ pass computes
// S and dP: within 1e-6 nmse and 1e-3 of its largest element of the fused pass's dQ (a BF16
// rounding of dS may differ), and within 1e-10 and 1e-5 of a second one-pass run's (the
// order of the adds alone).
void onepass_case(const AttnCase& c, int seg_kind, int schedule) {
  INFO(describe(c, seg_kind == 0 ? "none" : seg_kind == 1 ? "runs" : "labels",
                ops::Precision::bf16));
  INFO("one-pass schedule " << schedule << " (0 lockstep, 2 pipelined)");
  const float scale = 1.0f / std::sqrt(float(c.Dk));
  Arena ar;
  Context ctx = gpu();
  ctx.linear.mode = ops::Precision::bf16;
  const auto [gq, gk, gv, gdout, gseg] = upload_inputs(ar, c, seg_kind);
  const int was = ds::cuda::attention_bwd_mode(), sched_was = ds::cuda::attention_schedule();
  Tensor out[3], lse[3], dq[3], dk[3], dv[3];
  for (int r = 0; r < 3; ++r) {   // 0: fused (lockstep), 1 and 2: one pass (the schedule's)
    ds::cuda::set_attention_bwd_mode(r == 0 ? 1 : 2);
    ds::cuda::set_attention_schedule(r == 0 ? 0 : schedule);
    out[r] = ar.empty({c.B, c.T, c.H, c.Dv});
    lse[r] = ar.empty({c.B, c.H, c.T});
    ops::attention_forward(ctx, gq, gk, gv, gseg, scale, out[r], lse[r]);
    dq[r] = ar.empty(gq.shape());
    dk[r] = ar.empty(gk.shape());
    dv[r] = ar.empty(gv.shape());
    ops::attention_backward(ctx, gq, gk, gv, gseg, scale, out[r], lse[r], gdout, dq[r], dk[r],
                            dv[r]);
  }
  ds::cuda::set_attention_bwd_mode(was);
  ds::cuda::set_attention_schedule(sched_was);
  const Tensor dq0 = download(dq[0]);
  for (int r = 1; r < 3; ++r) {
    expect_exact(out[r], download(out[0]), "out");
    expect_exact(lse[r], download(lse[0]), "lse");
    expect_exact(dk[r], download(dk[0]), "dk");
    expect_exact(dv[r], download(dv[0]), "dv");
    expect_close(dq[r], dq0, 1e-6, "dq", 1e-3 * std::max(1e-30, max_abs(dq0)));
  }
  expect_close(dq[2], download(dq[1]), 1e-10, "dq, two one-pass runs",
               1e-5 * std::max(1e-30, max_abs(dq0)));
  CHECK(ar.check());
}

// The one-pass backward in one schedule (0 lockstep, 2 pipelined): against the fused pass on
// 6 problems (12 one-pass launches), then against the CPU reference at the wgmma kernels'
// bounds (3 more).
void onepass_cases(int schedule) {
  const int64_t before = ds::cuda::attention_bwd_onepass_launches();
  for (int seg : {0, 1, 2}) onepass_case({2, 200, 2, 96, 64}, seg, schedule);
  onepass_case({1, 333, 2, 64, 64}, 1, schedule);
  onepass_case({1, 64, 1, 96, 64}, 0, schedule);    // one tile
  onepass_case({1, 450, 1, 96, 64}, 2, schedule);   // 8 tiles: the ring wraps
  CHECK(ds::cuda::attention_bwd_onepass_launches() - before == 12);
  const int was = ds::cuda::attention_bwd_mode(), sched_was = ds::cuda::attention_schedule();
  ds::cuda::set_attention_bwd_mode(2);
  ds::cuda::set_attention_schedule(schedule);
  for (int seg : {0, 2})
    attention_case({1, 257, 2, 96, 64}, seg, ops::Precision::bf16, 5e-5, 1e-4);
  attention_case({2, 100, 3, 64, 64}, 1, ops::Precision::bf16, 5e-5, 1e-4);
  ds::cuda::set_attention_bwd_mode(was);
  ds::cuda::set_attention_schedule(sched_was);
  CHECK(ds::cuda::attention_bwd_onepass_launches() - before == 15);
}

}  // namespace

// (Named apart from the "gpu attention wgmma" cases: scripts/gpu-check.sh runs it in a process
// of its own, group ops-attn-onepass, until it has run on a GPU.)
TEST_CASE("gpu attention one-pass backward (wgmma): dK, dV the fused pass's bits, dQ close") {
  const WgmmaOn wgmma;
  if (!wgmma) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  onepass_cases(0);
  // not taken where the fused pass does not fit: the split passes, as in mode 0
  const int64_t before = ds::cuda::attention_bwd_onepass_launches();
  const int was = ds::cuda::attention_bwd_mode();
  ds::cuda::set_attention_bwd_mode(2);
  attention_case({1, 130, 2, 192, 128}, 1, ops::Precision::bf16, 5e-5, 1e-4);
  ds::cuda::set_attention_bwd_mode(was);
  CHECK(ds::cuda::attention_bwd_onepass_launches() == before);
}

// (Named apart from the one-pass and pipelined cases: gpu-check.sh runs it in a process of its
// own, group ops-attn-onepipe, so that a fault in it leaves the lockstep one-pass kernel's
// results standing.)
TEST_CASE("gpu attention onepass pipelined (wgmma): the same against the fused pass") {
  const WgmmaOn wgmma;
  if (!wgmma) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  const int64_t pipe0 = ds::cuda::attention_pipelined_launches();
  onepass_cases(2);
  // 15 runs of a forward and a one-pass backward, each a pipelined kernel
  CHECK(ds::cuda::attention_pipelined_launches() - pipe0 == 30);
}

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
  CHECK(ds::cuda::attention_bwd_qstats_launches() - before >= 18);   // 2 a split backward
  for (const BlockSwitch* other : {&kRows64, &kStaggered}) {   // with the other blocks too
    const bool was = other->get();
    other->set(true);
    block_switch_case(kQstats, {2, 200, 2, 96, 64}, 1, false);
    block_switch_case(kQstats, {1, 450, 1, 128, 128}, 0, false);
    other->set(was);
  }
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
  CHECK(ran >= 34);   // the switched runs of the cases: every kernel but dQ, dK at 192 / 128
}

// (scripts/gpu-check.sh: group ops-attn-pipelined, until it has run on a GPU.)
TEST_CASE("gpu attention pipelined warpgroups (wgmma): the lockstep bits") {
  const WgmmaOn wgmma;
  if (!wgmma) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  const int64_t before = ds::cuda::attention_pipelined_launches();
  block_switch_cases(kPipelined);   // where the staggered ring fits: the same kernels
  const int64_t ran = ds::cuda::attention_pipelined_launches() - before;
  MESSAGE("pipelined kernels launched: " << ran);
  CHECK(ran >= 34);
  const int was = ds::cuda::attention_schedule();   // with the query-stats table too
  ds::cuda::set_attention_pipelined(true);
  block_switch_case(kQstats, {2, 200, 2, 96, 64}, 1, false);
  ds::cuda::set_attention_schedule(was);
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
