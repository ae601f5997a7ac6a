// GPU attention benchmarks: the training attention (flash-style, q/k head dim 192, v 128 as in
// DeepSeek-V3) forward and backward in TFLOP/s for the BF16 tensor-core path (Context
// precision bf16) and the exact FP32 path, and the absorbed-MLA decode kernels' bandwidth over
// the latent cache (R 512 + rope 64) against HBM: the exact FP32 kernel over an F32 cache and
// the tensor-core kernel over a BF16 cache, same values, one line per case (and the wgmma
// kernel over the BF16 cache, DS_MLA_KERNEL=wgmma, not yet run on a GPU, where it takes the
// dims; --no-mla-wgmma leaves it out). Random inputs;
// medians of repetitions each timed by CUDA events with the L2 flushed before it
// (bench::median_ms_events). The BF16 rows take q, k, v as BF16 codes, as training hands them
// to the kernels (ops::Context::attention_inputs); dO is F32, as in training. FLOPs, in
// FlashAttention's convention: causal forward 2 * B*H * T*T/2 * (Dk + Dv); backward 2.5 x
// forward (the products executed, P recomputed plus dQ, dK, dV, dP, come to 2 * (3Dk + 2Dv)
// per visible pair: 2.6 x forward at Dk 1.5 Dv). Useful FLOPs: a head dim the kernel pads (96
// and 64 on the mma.sync kernel's 128/128 tile) counts at its real size. Decode, in FlashMLA's
// convention: every visible cache row (R + Dr elements, 4 or 2 bytes each) read once per
// sequence, plus the queries and outputs (F32 here: 4 bytes); FLOPs 2 * N*H * L * (2R + Dr).
// --wgmma: only the BF16 rows, each also timing the forward and the backward through the wgmma
// kernels (sm_90a; the training default), beside the mma.sync kernels the plain rows time, and
// where the head dims allow it the backward with dK and dV in one pass (DS_ATTENTION_BWD=fused,
// not yet run on a GPU), which must give the split passes' bits, and the backward in one pass
// (DS_ATTENTION_BWD=onepass: dQ added by F32 atomics; not yet run on a GPU; lockstep and
// pipelined), whose dK and dV must be the split passes' bits and whose dQ is compared with
// theirs by nmse;
// and the wgmma kernels in 64-row blocks (DS_ATTENTION_ROWS=64), with staggered or pipelined
// warpgroups (DS_ATTENTION_SCHEDULE=staggered|pipelined) and with the split passes reading the
// query-stats table (DS_ATTENTION_QSTATS=table), none yet run on a GPU, each of which must give
// the defaults' bits. --no-fused, --no-onepass, --no-onepass-pipelined, --no-rows64,
// --no-staggered, --no-pipelined, --no-qstats leave those out (gpu-check.sh,
// where their tests failed). --mla-plans: only the BF16 decode kernel, under forced ring
// depths and key splits (kernels/mla_decode.cuh set_mla_bf16_plan) beside its own plan, at 16
// and 128 heads. --only-1b: only the `1b` preset's attention row (what Nsight Compute profiles).
// --profile-once: every timed call once, no warm-up (under Nsight Compute: each kernel of each
// variant launched once, so that one profiler run with a launch count covers them all).
// Usage: bench_attention [--quick] [--wgmma] [--no-fused] [--no-onepass]
// [--no-onepass-pipelined] [--no-rows64] [--no-staggered] [--no-pipelined] [--no-qstats]
// [--no-mla-wgmma] [--mla-plans] [--only-1b] [--profile-once].
// Prints a table and one JSON line per row (and cache).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"
#include "gpu_timer.hpp"
#include "kernels/flash_attention.cuh"
#include "kernels/mla_decode.cuh"

using namespace ds;

namespace {

bool g_fused = true;    // --no-fused: no fused dK/dV timing
bool g_onepass = true;  // --no-onepass: no one-pass backward timing
bool g_onepipe = true;  // --no-onepass-pipelined: no pipelined one-pass backward timing
bool g_rows64 = true;      // --no-rows64: no 64-row block timing
bool g_staggered = true;   // --no-staggered: no staggered warpgroups timing
bool g_pipelined = true;   // --no-pipelined: no pipelined warpgroups timing
bool g_qstats = true;      // --no-qstats: no query-stats table timing
bool g_mla_wgmma = true;   // --no-mla-wgmma: no wgmma MLA decode timing
int g_warm = 2;            // warm-up calls before the timed ones (--profile-once: none)

Tensor rand_gpu(const Shape& s, float scale, uint64_t seed) {
  Tensor h = Tensor::empty(s);
  std::mt19937_64 r(seed);
  std::normal_distribution<float> d(0.0f, scale);
  for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] = d(r);
  Tensor g = Tensor::empty(s, DType::f32, Device::cuda);
  g.copy_from(h);
  return g;
}

void attention_row(int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv, ops::Precision p,
                   int reps, bool wgmma = false) {
  ops::Context ctx;
  ctx.device = Device::cuda;
  ctx.linear.mode = p;
  const float scale = 1.0f / std::sqrt(float(Dk));
  Tensor q = rand_gpu({B, T, H, Dk}, 1.0f, 1), k = rand_gpu({B, T, H, Dk}, 1.0f, 2);
  Tensor v = rand_gpu({B, T, H, Dv}, 1.0f, 3), dout = rand_gpu({B, T, H, Dv}, 1.0f, 4);
  if (p != ops::Precision::fp32) {   // the BF16 codes training's producers write
    auto codes = [&](const Tensor& x) {
      Tensor c = Tensor::empty(x.shape(), DType::bf16, Device::cuda);
      ops::bf16_round(ctx, x, c);
      return c;
    };
    q = codes(q);
    k = codes(k);
    v = codes(v);
  }
  Tensor out = Tensor::empty({B, T, H, Dv}, DType::f32, Device::cuda);
  Tensor lse = Tensor::empty({B, H, T}, DType::f32, Device::cuda);
  Tensor dq = Tensor::empty(q.shape(), DType::f32, Device::cuda);
  Tensor dk = Tensor::empty(k.shape(), DType::f32, Device::cuda);
  Tensor dv = Tensor::empty(v.shape(), DType::f32, Device::cuda);
  const Tensor none;
  const double fwd_flops = 2.0 * double(B * H) * double(T) * double(T) / 2.0 * double(Dk + Dv);
  const bool was = cuda::attention_wgmma();
  cuda::set_attention_wgmma(false);   // the mma.sync kernels, whatever DS_ATTENTION says
  const double tf = 1e-3 * bench::median_ms_events(
      [&] { ops::attention_forward(ctx, q, k, v, none, scale, out, lse); }, g_warm, reps, true);
  const double tb = 1e-3 * bench::median_ms_events(
      [&] { ops::attention_backward(ctx, q, k, v, none, scale, out, lse, dout, dq, dk, dv); },
      g_warm, reps, true);
  cuda::set_attention_wgmma(was);
  const char* pn = p == ops::Precision::fp32 ? "fp32" : "bf16";
  std::printf("attention %-4s B=%ld T=%5ld H=%3ld Dk=%ld Dv=%ld  fwd %8.3f ms %7.1f TFLOP/s   "
              "bwd %8.3f ms %7.1f TFLOP/s\n", pn, long(B), long(T), long(H), long(Dk), long(Dv),
              tf * 1e3, fwd_flops / tf / 1e12, tb * 1e3, 2.5 * fwd_flops / tb / 1e12);
  std::printf("{\"bench\":\"attention\",\"precision\":\"%s\",\"B\":%ld,\"T\":%ld,\"H\":%ld,"
              "\"Dk\":%ld,\"Dv\":%ld,\"fwd_ms\":%.4f,\"fwd_tflops\":%.2f,\"bwd_ms\":%.4f,"
              "\"bwd_tflops\":%.2f}\n", pn, long(B), long(T), long(H), long(Dk), long(Dv),
              tf * 1e3, fwd_flops / tf / 1e12, tb * 1e3, 2.5 * fwd_flops / tb / 1e12);
  if (!wgmma || p == ops::Precision::fp32 || !cuda::attention_wgmma_supported(Dk, Dv)) return;
  // The same forward and backward through the wgmma kernels (flash_attention_sm90.cu), the
  // backward on the mma.sync forward's out and lse, and how far each result is from the
  // mma.sync kernels' (both BF16 operands, FP32 softmax: nmse ~1e-6..1e-5 expected).
  auto host = [](const Tensor& t) {
    Tensor h = Tensor::empty(t.shape());
    h.copy_from(t);
    return h;
  };
  auto nmse = [](const Tensor& a, const Tensor& b) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      const double d = double(a.f32()[i]) - double(b.f32()[i]);
      num += d * d;
      den += double(b.f32()[i]) * double(b.f32()[i]);
    }
    return num / (den + 1e-30);
  };
  const Tensor out_m = host(out), lse_m = host(lse), dq_m = host(dq), dk_m = host(dk),
               dv_m = host(dv);
  cuda::set_attention_wgmma(true);
  const int64_t launches = cuda::attention_wgmma_launches(false);
  const int64_t launches_bwd = cuda::attention_wgmma_launches(true);
  const double tw = 1e-3 * bench::median_ms_events(
      [&] { ops::attention_forward(ctx, q, k, v, none, scale, out, lse); }, g_warm, reps, true);
  const Tensor out_w = host(out), lse_w = host(lse);
  const double e_out = nmse(out_w, out_m);
  out.copy_from(out_m);
  lse.copy_from(lse_m);
  const double twb = 1e-3 * bench::median_ms_events(
      [&] { ops::attention_backward(ctx, q, k, v, none, scale, out, lse, dout, dq, dk, dv); },
      g_warm, reps, true);
  if (cuda::attention_wgmma_launches(false) == launches ||
      cuda::attention_wgmma_launches(true) == launches_bwd)
    throw std::runtime_error("the wgmma kernels did not run");
  const Tensor dq_w = host(dq), dk_w = host(dk), dv_w = host(dv);
  const double e_dq = nmse(dq_w, dq_m), e_dk = nmse(dk_w, dk_m), e_dv = nmse(dv_w, dv_m);
  auto bits = [](const Tensor& a, const Tensor& b) {   // the same F32 bits
    return std::memcmp(a.f32(), b.f32(), size_t(a.numel()) * sizeof(float)) == 0;
  };
  // The backward with dK and dV in one pass (DS_ATTENTION_BWD=fused) where the head dims
  // allow it: its time, and whether dq, dk, dv are the split passes' bits (they must be).
  double twf = NAN;
  bool same = false;
  if (g_fused && cuda::attention_bwd_fused_supported(Dk, Dv)) {
    const int mode_was = cuda::attention_bwd_mode();
    const int64_t fused0 = cuda::attention_bwd_fused_launches();
    cuda::set_attention_bwd_fused(true);
    twf = 1e-3 * bench::median_ms_events(
        [&] { ops::attention_backward(ctx, q, k, v, none, scale, out, lse, dout, dq, dk, dv); },
        g_warm, reps, true);
    cuda::set_attention_bwd_mode(mode_was);
    if (cuda::attention_bwd_fused_launches() == fused0)
      throw std::runtime_error("the fused dK/dV pass did not run");
    same = bits(host(dq), dq_w) && bits(host(dk), dk_w) && bits(host(dv), dv_w);
  }
  // The one-pass backward (DS_ATTENTION_BWD=onepass) where the head dims allow it, lockstep
  // and pipelined (--no-onepass, --no-onepass-pipelined): its time, whether dk and dv are the
  // split passes' bits (they must be), dq's nmse against theirs (F32 atomics: not
  // bit-reproducible).
  struct OnepassRun {
    const char* schedule;
    double t = NAN, e_dq = NAN;
    bool same = false;
    int64_t n = 0;
  };
  std::vector<OnepassRun> ones;
  if (cuda::attention_bwd_fused_supported(Dk, Dv)) {
    if (g_onepass) ones.push_back({"lockstep"});
    if (g_onepipe) ones.push_back({"pipelined"});
  }
  for (OnepassRun& o : ones) {
    const int mode_was = cuda::attention_bwd_mode(), sched_was = cuda::attention_schedule();
    const bool pipe = std::strcmp(o.schedule, "pipelined") == 0;
    const int64_t l0 = cuda::attention_bwd_onepass_launches();
    const int64_t p0 = cuda::attention_pipelined_launches();
    cuda::set_attention_bwd_mode(2);
    cuda::set_attention_schedule(pipe ? 2 : 0);
    o.t = 1e-3 * bench::median_ms_events(
        [&] { ops::attention_backward(ctx, q, k, v, none, scale, out, lse, dout, dq, dk, dv); },
        g_warm, reps, true);
    cuda::set_attention_bwd_mode(mode_was);
    cuda::set_attention_schedule(sched_was);
    o.n = cuda::attention_bwd_onepass_launches() - l0;
    if (o.n == 0) throw std::runtime_error("the one-pass backward did not run");
    if (pipe && cuda::attention_pipelined_launches() - p0 != o.n)
      throw std::runtime_error("the pipelined one-pass backward did not run");
    o.same = bits(host(dk), dk_w) && bits(host(dv), dv_w);
    o.e_dq = nmse(host(dq), dq_w);
  }
  // The wgmma kernels in other blocks (64 rows: DS_ATTENTION_ROWS=64, where built and two fit
  // an SM; staggered warpgroups: DS_ATTENTION_SCHEDULE=staggered, where they fit): the
  // forward, the backward (on the same out and lse as above), the fused backward where it
  // runs; and whether each gives the default blocks' bits (it must).
  struct BlockRun {
    const char *name, *json;
    void (*set)(bool);
    bool (*get)();
    int64_t (*launches)();
    double tf = NAN, tb = NAN, tfu = NAN;
    int64_t nf = 0, nb = 0;
    bool same = true;
  };
  std::vector<BlockRun> runs;
  if (g_rows64)
    runs.push_back({"64-row blocks", "attention_rows64", cuda::set_attention_rows64,
                    cuda::attention_rows64, cuda::attention_rows64_launches});
  if (g_staggered)
    runs.push_back({"staggered warpgroups", "attention_staggered", cuda::set_attention_staggered,
                    cuda::attention_staggered, cuda::attention_staggered_launches});
  if (g_pipelined)
    runs.push_back({"pipelined warpgroups", "attention_pipelined", cuda::set_attention_pipelined,
                    cuda::attention_pipelined, cuda::attention_pipelined_launches});
  if (g_qstats)   // the split passes only: the forward keeps its kernels (0 launches)
    runs.push_back({"query-stats table", "attention_qstats", cuda::set_attention_bwd_qstats,
                    cuda::attention_bwd_qstats, cuda::attention_bwd_qstats_launches});
  auto bwd = [&] {
    ops::attention_backward(ctx, q, k, v, none, scale, out, lse, dout, dq, dk, dv);
  };
  for (BlockRun& r : runs) {
    // (the schedule is three-valued: restored as such, not through r.set)
    const int sched_was = cuda::attention_schedule(), mode_was = cuda::attention_bwd_mode();
    const bool sw_was = r.get();
    r.set(true);
    cuda::set_attention_bwd_fused(false);
    int64_t n0 = r.launches();
    r.tf = 1e-3 * bench::median_ms_events(
        [&] { ops::attention_forward(ctx, q, k, v, none, scale, out, lse); }, g_warm, reps, true);
    r.nf = r.launches() - n0;
    r.same = bits(host(out), out_w) && bits(host(lse), lse_w);
    out.copy_from(out_m);
    lse.copy_from(lse_m);
    n0 = r.launches();
    r.tb = 1e-3 * bench::median_ms_events(bwd, g_warm, reps, true);
    r.nb = r.launches() - n0;
    r.same = r.same && bits(host(dq), dq_w) && bits(host(dk), dk_w) && bits(host(dv), dv_w);
    if (!std::isnan(twf)) {
      cuda::set_attention_bwd_fused(true);
      r.tfu = 1e-3 * bench::median_ms_events(bwd, g_warm, reps, true);
      r.same = r.same && bits(host(dq), dq_w) && bits(host(dk), dk_w) && bits(host(dv), dv_w);
    }
    r.set(sw_was);
    cuda::set_attention_schedule(sched_was);
    cuda::set_attention_bwd_mode(mode_was);
  }
  cuda::set_attention_wgmma(was);
  std::printf("attention bf16 B=%ld T=%5ld H=%3ld Dk=%ld Dv=%ld  wgmma fwd %8.3f ms %7.1f "
              "TFLOP/s (%.2fx)  bwd %8.3f ms %7.1f TFLOP/s (%.2fx)  nmse vs mma.sync: out "
              "%.1e dq %.1e dk %.1e dv %.1e\n", long(B), long(T), long(H), long(Dk), long(Dv),
              tw * 1e3, fwd_flops / tw / 1e12, tf / tw, twb * 1e3, 2.5 * fwd_flops / twb / 1e12,
              tb / twb, e_out, e_dq, e_dk, e_dv);
  if (!std::isnan(twf))
    std::printf("attention bf16 B=%ld T=%5ld H=%3ld Dk=%ld Dv=%ld  wgmma bwd with dK and dV "
                "fused %8.3f ms %7.1f TFLOP/s (%.2fx the split passes), the split passes' "
                "bits: %s\n", long(B), long(T), long(H), long(Dk), long(Dv), twf * 1e3,
                2.5 * fwd_flops / twf / 1e12, twb / twf, same ? "yes" : "NO");
  std::printf("{\"bench\":\"attention_wgmma\",\"B\":%ld,\"T\":%ld,\"H\":%ld,\"Dk\":%ld,"
              "\"Dv\":%ld,\"fwd_ms\":%.4f,\"fwd_tflops\":%.2f,\"fwd_speedup\":%.3f,"
              "\"bwd_ms\":%.4f,\"bwd_tflops\":%.2f,\"bwd_speedup\":%.3f,\"nmse_out\":%.3e,"
              "\"nmse_dq\":%.3e,\"nmse_dk\":%.3e,\"nmse_dv\":%.3e,\"bwd_fused_ms\":%.4f,"
              "\"bwd_fused_tflops\":%.2f,\"bwd_fused_identical\":%s}\n",
              long(B), long(T), long(H), long(Dk), long(Dv), tw * 1e3, fwd_flops / tw / 1e12,
              tf / tw, twb * 1e3, 2.5 * fwd_flops / twb / 1e12, tb / twb, e_out, e_dq, e_dk,
              e_dv, std::isnan(twf) ? -1.0 : twf * 1e3,
              std::isnan(twf) ? -1.0 : 2.5 * fwd_flops / twf / 1e12,
              std::isnan(twf) ? "null" : same ? "true" : "false");
  for (const OnepassRun& o : ones) {
    char vs_fused[32] = "not timed";
    if (!std::isnan(twf)) std::snprintf(vs_fused, sizeof vs_fused, "%.2fx", twf / o.t);
    std::printf("attention bf16 B=%ld T=%5ld H=%3ld Dk=%ld Dv=%ld  wgmma bwd in one pass, %s "
                "(dQ by atomics) %8.3f ms %7.1f TFLOP/s (%.2fx the split passes, the fused: "
                "%s; %ld launches)  dk, dv the split passes' bits: %s  dq nmse %.1e\n",
                long(B), long(T), long(H), long(Dk), long(Dv), o.schedule, o.t * 1e3,
                2.5 * fwd_flops / o.t / 1e12, twb / o.t, vs_fused, long(o.n),
                o.same ? "yes" : "NO", o.e_dq);
    std::printf("{\"bench\":\"attention_onepass\",\"schedule\":\"%s\",\"B\":%ld,\"T\":%ld,"
                "\"H\":%ld,\"Dk\":%ld,\"Dv\":%ld,\"bwd_ms\":%.4f,\"bwd_tflops\":%.2f,"
                "\"bwd_speedup\":%.3f,\"vs_fused\":%.3f,\"launches\":%ld,"
                "\"dkdv_identical\":%s,\"nmse_dq\":%.3e}\n",
                o.schedule, long(B), long(T), long(H), long(Dk), long(Dv), o.t * 1e3,
                2.5 * fwd_flops / o.t / 1e12, twb / o.t, std::isnan(twf) ? -1.0 : twf / o.t,
                long(o.n), o.same ? "true" : "false", o.e_dq);
  }
  // launches of the switched kernels in the timed calls (warm-up included): a forward is 1
  // kernel, a backward 3 (dQ, dK, dV; the query-stats table switches only dK and dV, never the
  // forward); 0: the default kernels ran (not built for these dims, or not resident)
  for (const BlockRun& r : runs) {
    std::printf("attention bf16 B=%ld T=%5ld H=%3ld Dk=%ld Dv=%ld  wgmma %s: fwd %8.3f ms "
                "%7.1f TFLOP/s (%.2fx the default; %ld launches)  bwd %8.3f ms %7.1f TFLOP/s "
                "(%.2fx; %ld launches)", long(B), long(T), long(H), long(Dk), long(Dv), r.name,
                r.tf * 1e3, fwd_flops / r.tf / 1e12, tw / r.tf, long(r.nf), r.tb * 1e3,
                2.5 * fwd_flops / r.tb / 1e12, twb / r.tb, long(r.nb));
    if (!std::isnan(r.tfu))
      std::printf("  fused bwd %8.3f ms %7.1f TFLOP/s (%.2fx the default split passes)",
                  r.tfu * 1e3, 2.5 * fwd_flops / r.tfu / 1e12, twb / r.tfu);
    std::printf("  the default blocks' bits: %s\n", r.same ? "yes" : "NO");
    std::printf("{\"bench\":\"%s\",\"B\":%ld,\"T\":%ld,\"H\":%ld,\"Dk\":%ld,\"Dv\":%ld,"
                "\"fwd_ms\":%.4f,\"fwd_tflops\":%.2f,\"fwd_speedup\":%.3f,"
                "\"fwd_launches\":%ld,\"bwd_ms\":%.4f,\"bwd_tflops\":%.2f,"
                "\"bwd_speedup\":%.3f,\"bwd_launches\":%ld,\"bwd_fused_ms\":%.4f,"
                "\"bwd_fused_tflops\":%.2f,\"identical\":%s}\n",
                r.json, long(B), long(T), long(H), long(Dk), long(Dv), r.tf * 1e3,
                fwd_flops / r.tf / 1e12, tw / r.tf, long(r.nf), r.tb * 1e3,
                2.5 * fwd_flops / r.tb / 1e12, twb / r.tb, long(r.nb),
                std::isnan(r.tfu) ? -1.0 : r.tfu * 1e3,
                std::isnan(r.tfu) ? -1.0 : 2.5 * fwd_flops / r.tfu / 1e12,
                r.same ? "true" : "false");
  }
}

// A decode problem: N sequences of L cached rows each (one slot a sequence), R 512 + Dr 64;
// the cache as F32 values rounded to BF16 and as the same BF16 codes.
struct DecodeCase {
  Tensor q_lat, q_pe, ckv, kpe, ckv_b, kpe_b, ts, tl;
  float scale;
};
constexpr int64_t kDecR = 512, kDecDr = 64;

DecodeCase make_decode(ops::Context& ctx, int64_t N, int64_t H, int64_t L) {
  const int64_t R = kDecR, Dr = kDecDr, S = N;
  DecodeCase c;
  c.q_lat = rand_gpu({N, H, R}, 0.05f, 5);
  c.q_pe = rand_gpu({N, H, Dr}, 0.05f, 6);
  c.ckv = rand_gpu({S, L, R}, 1.0f, 7);
  c.kpe = rand_gpu({S, L, Dr}, 1.0f, 8);
  c.ckv_b = Tensor::empty({S, L, R}, DType::bf16, Device::cuda);
  c.kpe_b = Tensor::empty({S, L, Dr}, DType::bf16, Device::cuda);
  ops::bf16_round(ctx, c.ckv, c.ckv_b);   // BF16 codes, and the F32 cache rounded to the same
  ops::bf16_round(ctx, c.kpe, c.kpe_b);
  ops::bf16_round(ctx, c.ckv, c.ckv);
  ops::bf16_round(ctx, c.kpe, c.kpe);
  std::vector<int32_t> slot(static_cast<size_t>(N)), len(static_cast<size_t>(N), int32_t(L));
  for (int64_t i = 0; i < N; ++i) slot[size_t(i)] = int32_t(i);
  c.ts = Tensor::empty({N}, DType::i32, Device::cuda);
  c.tl = Tensor::empty({N}, DType::i32, Device::cuda);
  c.ts.copy_from(Tensor::borrow(slot.data(), {N}, DType::i32));
  c.tl.copy_from(Tensor::borrow(len.data(), {N}, DType::i32));
  c.scale = 1.0f / std::sqrt(192.0f);
  return c;
}

// One decode case over the same cache values (rounded to BF16 first) as an F32 cache (exact
// FP32 kernel) and a BF16 cache (tensor-core kernel), side by side on one line; nmse: the BF16
// kernel's output against the F32 kernel's (only q and p rounding differ, ~5e-6 expected).
void decode_row(int64_t N, int64_t H, int64_t L, int reps) {
  ops::Context ctx;
  ctx.device = Device::cuda;
  const int64_t R = kDecR, Dr = kDecDr;
  const DecodeCase dc = make_decode(ctx, N, H, L);
  const Tensor &q_lat = dc.q_lat, &q_pe = dc.q_pe, &ckv = dc.ckv, &kpe = dc.kpe;
  const Tensor &ckv_b = dc.ckv_b, &kpe_b = dc.kpe_b, &ts = dc.ts, &tl = dc.tl;
  const float scale = dc.scale;
  Tensor out = Tensor::empty({N, H, R}, DType::f32, Device::cuda);
  Tensor out_b = Tensor::empty({N, H, R}, DType::f32, Device::cuda);
  const double t = 1e-3 * bench::median_ms_events(
      [&] { ops::mla_latent_attention(ctx, q_lat, q_pe, ckv, kpe, ts, tl, scale, out); }, 2, reps,
      true);
  const double tb = 1e-3 * bench::median_ms_events(
      [&] { ops::mla_latent_attention(ctx, q_lat, q_pe, ckv_b, kpe_b, ts, tl, scale, out_b); }, 2,
      reps, true);
  Tensor h = Tensor::empty(out.shape()), hb = Tensor::empty(out.shape());
  h.copy_from(out);
  hb.copy_from(out_b);
  double num = 0, den = 0;
  for (int64_t i = 0; i < h.numel(); ++i) {
    const double d = double(hb.f32()[i]) - h.f32()[i];
    num += d * d;
    den += double(h.f32()[i]) * h.f32()[i];
  }
  const double nmse = den > 0 ? num / den : num;
  const double rows = double(N) * double(L) * double(R + Dr);   // cache elements read
  const double qo = double(N * H) * double(2 * R + Dr);          // F32 q_lat, q_pe, out
  const double bytes = 4.0 * (rows + qo), bytes_b = 2.0 * rows + 4.0 * qo;
  const double flops = 2.0 * double(N * H) * double(L) * double(2 * R + Dr);
  std::printf("mla decode  N=%3ld H=%3ld L=%5ld R=512 Dr=64  F32 cache %7.3f ms %5.0f GB/s "
              "(%4.1f%%) %5.1f TFLOP/s | BF16 cache (tensor cores) %7.3f ms %5.0f GB/s "
              "(%4.1f%% of 4800) %5.1f TFLOP/s, nmse vs F32 %.1e\n",
              long(N), long(H), long(L), t * 1e3, bytes / t / 1e9, 100.0 * bytes / t / 4.8e12,
              flops / t / 1e12, tb * 1e3, bytes_b / tb / 1e9, 100.0 * bytes_b / tb / 4.8e12,
              flops / tb / 1e12, nmse);
  std::printf("{\"bench\":\"mla_decode\",\"cache\":\"f32\",\"N\":%ld,\"H\":%ld,\"L\":%ld,"
              "\"ms\":%.4f,\"gbps\":%.1f,\"hbm_fraction\":%.4f,\"tflops\":%.2f}\n",
              long(N), long(H), long(L), t * 1e3, bytes / t / 1e9, bytes / t / 4.8e12,
              flops / t / 1e12);
  std::printf("{\"bench\":\"mla_decode\",\"cache\":\"bf16\",\"N\":%ld,\"H\":%ld,\"L\":%ld,"
              "\"ms\":%.4f,\"gbps\":%.1f,\"hbm_fraction\":%.4f,\"tflops\":%.2f,"
              "\"nmse_vs_f32\":%.3e}\n",
              long(N), long(H), long(L), tb * 1e3, bytes_b / tb / 1e9, bytes_b / tb / 4.8e12,
              flops / tb / 1e12, nmse);
  // The wgmma kernel over the same BF16 cache (DS_MLA_KERNEL=wgmma, not yet run on a GPU)
  // where it takes the dims; nmse against the F32 kernel as above.
  if (!g_mla_wgmma || !cuda::mla_wgmma_supported(H, R, Dr)) return;
  const bool was = cuda::mla_wgmma();
  const int64_t l0 = cuda::mla_wgmma_launches();
  cuda::set_mla_wgmma(true);
  const double tw = 1e-3 * bench::median_ms_events(
      [&] { ops::mla_latent_attention(ctx, q_lat, q_pe, ckv_b, kpe_b, ts, tl, scale, out_b); }, 2,
      reps, true);
  cuda::set_mla_wgmma(was);
  if (cuda::mla_wgmma_launches() == l0)
    throw std::runtime_error("the wgmma MLA kernel did not run");
  hb.copy_from(out_b);
  double wn = 0;
  for (int64_t i = 0; i < h.numel(); ++i) {
    const double d = double(hb.f32()[i]) - h.f32()[i];
    wn += d * d;
  }
  const double nmse_w = den > 0 ? wn / den : wn;
  std::printf("mla decode  N=%3ld H=%3ld L=%5ld R=512 Dr=64  BF16 cache (wgmma) %7.3f ms %5.0f "
              "GB/s (%4.1f%% of 4800) %5.1f TFLOP/s (%.2fx mma.sync), nmse vs F32 %.1e\n",
              long(N), long(H), long(L), tw * 1e3, bytes_b / tw / 1e9,
              100.0 * bytes_b / tw / 4.8e12, flops / tw / 1e12, tb / tw, nmse_w);
  std::printf("{\"bench\":\"mla_decode\",\"cache\":\"bf16_wgmma\",\"N\":%ld,\"H\":%ld,"
              "\"L\":%ld,\"ms\":%.4f,\"gbps\":%.1f,\"hbm_fraction\":%.4f,\"tflops\":%.2f,"
              "\"nmse_vs_f32\":%.3e}\n",
              long(N), long(H), long(L), tw * 1e3, bytes_b / tw / 1e9, bytes_b / tw / 4.8e12,
              flops / tw / 1e12, nmse_w);
}

// The BF16 decode kernel's launch plans side by side (set_mla_bf16_plan): every ring depth
// that fits and several key splits per row, beside the launcher's own plan, on one problem.
// What the next change to the kernel's plan needs (Nsight Compute put it at 25% of DRAM
// bandwidth at 16 heads with one block per SM and no split).
void decode_sweep(int64_t N, int64_t H, int64_t L, int reps) {
  ops::Context ctx;
  ctx.device = Device::cuda;
  const DecodeCase dc = make_decode(ctx, N, H, L);
  Tensor out = Tensor::empty({N, H, kDecR}, DType::f32, Device::cuda);
  const double bytes = 2.0 * double(N) * double(L) * double(kDecR + kDecDr) +
                       4.0 * double(N * H) * double(2 * kDecR + kDecDr);
  auto run = [&] {
    ops::mla_latent_attention(ctx, dc.q_lat, dc.q_pe, dc.ckv_b, dc.kpe_b, dc.ts, dc.tl,
                              dc.scale, out);
  };
  const int plans[][2] = {{0, 0}, {2, 0}, {3, 0}, {4, 0}, {0, 1}, {0, 2}, {0, 4}, {0, 8},
                          {2, 2}, {2, 4}, {4, 2}, {4, 4}};
  const bool wgmma_was = cuda::mla_wgmma();
  cuda::set_mla_wgmma(false);   // the plans are the mma.sync kernel's
  for (const auto& pl : plans) {
    cuda::set_mla_bf16_plan(pl[0], pl[1]);
    const double t = 1e-3 * bench::median_ms_events(run, 2, reps, true);
    const cuda::MlaPlan p = cuda::mla_bf16_last_plan();
    std::printf("mla plan   N=%3ld H=%3ld L=%5ld asked stages %d splits %d -> heads/block %d, "
                "stages %d, splits %d (%d keys), %d blocks/SM: %7.3f ms %5.0f GB/s (%4.1f%% of "
                "4800)\n", long(N), long(H), long(L), pl[0], pl[1], 16 * p.mtiles, p.stages,
                p.splits, p.keys_per_split, p.blocks_per_sm, t * 1e3, bytes / t / 1e9,
                100.0 * bytes / t / 4.8e12);
    std::printf("{\"bench\":\"mla_plan\",\"N\":%ld,\"H\":%ld,\"L\":%ld,\"ask_stages\":%d,"
                "\"ask_splits\":%d,\"stages\":%d,\"splits\":%d,\"keys_per_split\":%d,"
                "\"blocks_per_sm\":%d,\"ms\":%.4f,\"gbps\":%.1f}\n", long(N), long(H), long(L),
                pl[0], pl[1], p.stages, p.splits, p.keys_per_split, p.blocks_per_sm, t * 1e3,
                bytes / t / 1e9);
  }
  cuda::set_mla_bf16_plan(0, 0);
  cuda::set_mla_wgmma(wgmma_was);
}

}  // namespace

int main(int argc, char** argv) {
  if (!bench::gpu_ready("bench_attention")) return 77;
  bool quick = false, wgmma = false, sweep = false, only_1b = false, once = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--wgmma") == 0) wgmma = true;
    else if (std::strcmp(argv[i], "--no-fused") == 0) g_fused = false;
    else if (std::strcmp(argv[i], "--no-onepass") == 0) g_onepass = false;
    else if (std::strcmp(argv[i], "--no-onepass-pipelined") == 0) g_onepipe = false;
    else if (std::strcmp(argv[i], "--no-rows64") == 0) g_rows64 = false;
    else if (std::strcmp(argv[i], "--no-staggered") == 0) g_staggered = false;
    else if (std::strcmp(argv[i], "--no-pipelined") == 0) g_pipelined = false;
    else if (std::strcmp(argv[i], "--no-qstats") == 0) g_qstats = false;
    else if (std::strcmp(argv[i], "--no-mla-wgmma") == 0) g_mla_wgmma = false;
    else if (std::strcmp(argv[i], "--mla-plans") == 0) sweep = true;
    else if (std::strcmp(argv[i], "--only-1b") == 0) only_1b = true;
    else if (std::strcmp(argv[i], "--profile-once") == 0) once = true;
    else {
      std::fprintf(stderr, "bench_attention: unknown argument %s (expected --quick, --wgmma, "
                   "--no-fused, --no-onepass, --no-onepass-pipelined, --no-rows64, "
                   "--no-staggered, --no-pipelined, --no-qstats, --no-mla-wgmma, --mla-plans, "
                   "--only-1b, --profile-once)\n",
                   argv[i]);
      return 2;
    }
  }
  if (once) g_warm = 0;
  const int reps = once ? 1 : quick ? 5 : 20;
  try {
    if (sweep) {   // the BF16 decode kernel's plans only
      decode_sweep(128, 16, 2048, reps);
      decode_sweep(64, 128, 4096, reps);
      return 0;
    }
    if (!only_1b) {
      attention_row(2, 4096, 16, 192, 128, ops::Precision::bf16, reps, wgmma);
      attention_row(1, 8192, 16, 192, 128, ops::Precision::bf16, reps, wgmma);
    }
    attention_row(4, 4096, 16, 96, 64, ops::Precision::bf16, reps, wgmma);   // the 1b preset
    if (wgmma || only_1b) return 0;
    attention_row(2, 4096, 16, 192, 128, ops::Precision::fp32, quick ? 2 : 5);
    decode_row(64, 128, 4096, reps);
    decode_row(1, 128, 32768, reps);
    decode_row(128, 16, 2048, reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
  return 0;
}
