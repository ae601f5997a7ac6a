// GPU vs CPU-reference tests of the FP8 group of the CUDA path (lib/ops/cuda/fp8.cpp over
// kernels/fp8_quant.cu, fp8_gemm.cu, sm90_fp8_gemm.cu):
//   * fp8_quantize / fp8_dequantize / fp8_fake_quant / bf16_round must be bit-identical to the
//     reference (codes, scales, values) for every grouping, both scale formats, act and weight
//     rules, on odd shapes, N-D inputs, magnitudes from subnormal scales to huge values, and
//     groups holding NaN, +-inf or only zeros. NaN codes are compared as NaN (0x7f and 0xff
//     alike): the sign of a NaN produced by inf / inf is the CPU's business (x86: negative).
//   * fp8_gemm_nt against the reference GEMM within a small normalised error (the tensor
//     cores' FP8 accumulation is not IEEE FP32 and the order differs), for every supported
//     operand grouping, through the op and through both kernels directly: the portable
//     mma.sync kernel on any shape (partial K blocks, K not a multiple of 16) and the Hopper
//     wgmma kernel on the shapes it takes (skipped with a message where it cannot run).
//   * fp8_gemm_nt_grouped / fp8_gemm_nt_kgrouped (test cases "fp8 grouped ...") against the
//     CPU op the same way: empty groups, groups of exactly 128, N and (m-grouped) K not
//     multiples of 128, both b groupings, k-grouped accumulation into a non-zero c.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "gpu_harness.hpp"
#include "kernels/fp8_gemm.cuh"
#include "kernels/fp8_ksplit.hpp"
#include "kernels/sm90_fp8_gemm.cuh"
#include "kernels/flash_attention.cuh"   // attention_wgmma_supported: the sm_90a build
#include "kernels/runtime.cuh"

namespace ds::gpu_test {
namespace {

using ops::Fp8Group;
using ops::ScaleFormat;

const char* group_name(Fp8Group g) {
  switch (g) {
    case Fp8Group::row_1x128: return "1x128";
    case Fp8Group::col_128x1: return "128x1";
    case Fp8Group::block_128x128: return "128x128";
    case Fp8Group::tensor: return "tensor";
  }
  return "?";
}

// Random values whose magnitude varies by row and column block (exercising very different
// scales), with special groups: a NaN and a -NaN, an all-zero 128-block, a +inf and a -inf in
// other blocks, and tiny values whose scale is subnormal when not clamped.
Tensor special_input(const Shape& s, bool specials) {
  Tensor x = rand_f32(s);
  const int64_t K = s.back(), n = x.numel();
  float* p = x.f32();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = i / K, cb = (i % K) / 128;
    const int e = int((r * 7 + cb * 13) % 23) - 11;   // 2^-11 .. 2^11
    p[i] = std::ldexp(p[i], e);
  }
  if (!specials || n < 4) return x;
  p[n / 3] = NAN;
  p[n / 2] = -NAN;
  if (n > 600) {
    p[n - 1] = INFINITY;
    p[n / 5] = -INFINITY;
    for (int64_t i = 0; i < std::min<int64_t>(K, 128); ++i) p[i] = 0.0f;   // row 0's first block
    const int64_t r = (n / K) / 2;                                          // a tiny row
    for (int64_t j = 0; j < K; ++j) p[r * K + j] = std::ldexp(float(j % 13) - 6.0f, -140);
  }
  return x;
}

bool same_float(float a, float b) {
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  return ua == ub || (std::isnan(a) && std::isnan(b));
}

// Bitwise comparison of F32 / BF16 / code tensors; NaNs (and NaN codes) equal each other.
void expect_bits(const Tensor& got_any, const Tensor& want, const std::string& what) {
  const Tensor got = got_any.device() == Device::cpu ? got_any : download(got_any);
  REQUIRE(got.numel() == want.numel());
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want.numel(); ++i) {
    bool same;
    if (want.dtype() == DType::f32) {
      same = same_float(got.f32()[i], want.f32()[i]);
    } else if (want.dtype() == DType::bf16) {
      const uint16_t g = got.data<uint16_t>()[i], w = want.data<uint16_t>()[i];
      same = g == w || ((g & 0x7fff) > 0x7f80 && (w & 0x7fff) > 0x7f80);
    } else {
      const uint8_t g = got.data<uint8_t>()[i], w = want.data<uint8_t>()[i];
      same = g == w || ((g & 0x7f) == 0x7f && (w & 0x7f) == 0x7f);
    }
    if (!same && bad++ == 0) first = i;
  }
  INFO(what << ": " << bad << " of " << want.numel() << " differ; first at " << first
            << (first >= 0 ? " got " + std::to_string(to_double(got, first)) + " want " +
                                 std::to_string(to_double(want, first))
                           : std::string()));
  CHECK(bad == 0);
}

const Fp8Group kGroups[] = {Fp8Group::row_1x128, Fp8Group::col_128x1, Fp8Group::block_128x128,
                            Fp8Group::tensor};

}  // namespace

TEST_CASE("gpu fp8 quantize / dequantize / fake_quant are bit-identical to the reference") {
  const Shape shapes[] = {{1, 1}, {1, 300}, {130, 257}, {300, 384}, {2, 3, 130}, {257, 128}};
  for (const Shape& s : shapes)
    for (Fp8Group g : kGroups)
      for (ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0})
        for (bool act : {true, false})
          for (bool specials : {false, true}) {
            const std::string what = std::string(group_name(g)) + " " + shape_str(s) +
                                     (fmt == ScaleFormat::ue8m0 ? " ue8m0" : " fp32") +
                                     (act ? " act" : " weight") + (specials ? " specials" : "");
            const Tensor x = special_input(s, specials);
            Tensor q, sc;
            ops::fp8_quantize(cpu_ref(), x, g, fmt, act, q, sc);
            Arena ar;
            Tensor gx = ar.upload(x);
            Tensor gq = ar.empty(x.shape(), DType::u8), gs = ar.empty(sc.shape());
            ops::fp8_quantize(gpu(), gx, g, fmt, act, gq, gs);
            expect_bits(gq, q, "codes " + what);
            expect_bits(gs, sc, "scales " + what);

            // Dequantise the reference's codes and scales on both sides.
            Tensor deq;
            ops::fp8_dequantize(cpu_ref(), q, sc, g, deq);
            Tensor gdeq = ar.empty(x.shape());
            ops::fp8_dequantize(gpu(), ar.upload(q), ar.upload(sc), g, gdeq);
            expect_bits(gdeq, deq, "dequantize " + what);

            Tensor fq;
            ops::fp8_fake_quant(cpu_ref(), x, g, fmt, act, fq);
            Tensor gfq = ar.empty(x.shape());
            ops::fp8_fake_quant(gpu(), gx, g, fmt, act, gfq);
            expect_bits(gfq, fq, "fake_quant " + what);
            ops::fp8_fake_quant(gpu(), gx, g, fmt, act, gx);   // in place (out aliases x)
            expect_bits(gx, fq, "fake_quant in place " + what);
            CHECK(ar.check());
          }
}

TEST_CASE("gpu fp8_quantize into an F8_E4M3 tensor and of an empty tensor") {
  const Tensor x = special_input({64, 200}, true);
  Tensor q, sc;
  ops::fp8_quantize(cpu_ref(), x, Fp8Group::row_1x128, ScaleFormat::fp32, true, q, sc);
  Arena ar;
  Tensor gq = ar.empty(x.shape(), DType::f8_e4m3), gs = ar.empty(sc.shape());
  ops::fp8_quantize(gpu(), ar.upload(x), Fp8Group::row_1x128, ScaleFormat::fp32, true, gq, gs);
  const Tensor got = download(gq);
  Tensor got_u8 = Tensor::empty(x.shape(), DType::u8);
  std::memcpy(got_u8.raw(), got.raw(), got.nbytes());
  expect_bits(got_u8, q, "codes into F8_E4M3");
  expect_bits(gs, sc, "scales into F8_E4M3");
  // An empty tensor still has its one per-tensor scale.
  for (bool act : {true, false}) {
    const Tensor e = Tensor::empty({0, 16});
    Tensor eq, es;
    ops::fp8_quantize(cpu_ref(), e, Fp8Group::tensor, ScaleFormat::fp32, act, eq, es);
    Tensor geq = ar.empty({0, 16}, DType::u8), ges = ar.empty({1});
    ops::fp8_quantize(gpu(), ar.upload(e), Fp8Group::tensor, ScaleFormat::fp32, act, geq, ges);
    expect_bits(ges, es, act ? "empty tensor scale (act)" : "empty tensor scale (weight)");
  }
  CHECK(ar.check());
}

TEST_CASE("gpu bf16_round is bit-identical to the reference") {
  for (int64_t n : {1, 7, 1000, 65537}) {
    Tensor x = special_input({1, n}, true);
    if (n > 3) x.f32()[2] = 3.0e38f;   // rounds up to inf
    Tensor want;
    ops::bf16_round(cpu_ref(), x, want);
    Tensor want_codes = Tensor::empty({1, n}, DType::bf16);
    ops::bf16_round(cpu_ref(), x, want_codes);
    Arena ar;
    Tensor gx = ar.upload(x);
    Tensor gy = ar.empty({1, n}), gc = ar.empty({1, n}, DType::bf16);
    ops::bf16_round(gpu(), gx, gy);
    ops::bf16_round(gpu(), gx, gc);
    expect_bits(gy, want, "bf16_round f32 n=" + std::to_string(n));
    expect_bits(gc, want_codes, "bf16_round codes n=" + std::to_string(n));
    ops::bf16_round(gpu(), gx, gx);   // in place
    expect_bits(gx, want, "bf16_round in place n=" + std::to_string(n));
    CHECK(ar.check());
  }
  // Operands 4 bytes (x, F32 out) and 2 bytes (codes) past an aligned start: the scalar kernel
  // instead of the 4-wide one, which needs 16- / 8-byte alignment.
  for (int64_t n : {5, 1001}) {
    Tensor x = special_input({1, n + 1}, true).view({n + 1});
    const Tensor xs = x.slice0(1, n + 1);
    Tensor want = Tensor::empty({n}), want_codes = Tensor::empty({n}, DType::bf16);
    ops::bf16_round(cpu_ref(), xs, want);
    ops::bf16_round(cpu_ref(), xs, want_codes);
    Arena ar;
    const Tensor gx = ar.upload(x).slice0(1, n + 1);
    Tensor gy = ar.empty({n + 1}).slice0(1, n + 1);
    Tensor gc = ar.empty({n + 1}, DType::bf16).slice0(1, n + 1);
    ops::bf16_round(gpu(), gx, gy);
    ops::bf16_round(gpu(), gx, gc);
    expect_bits(gy, want, "bf16_round misaligned f32 n=" + std::to_string(n));
    expect_bits(gc, want_codes, "bf16_round misaligned codes n=" + std::to_string(n));
    CHECK(ar.check());
  }
}

namespace {

struct GemmCase {
  int64_t M, N, K;
  Fp8Group ga, gb;
};

enum class Kernel { op, fallback, sm90 };

const char* kernel_name(Kernel k) {
  return k == Kernel::op ? "op" : k == Kernel::fallback ? "fallback" : "sm90";
}

ds::cuda::Fp8Operand fp8_operand(const Tensor& q, const Tensor& s, Fp8Group g) {
  ds::cuda::Fp8Operand o;
  o.codes = q.data<uint8_t>();
  o.scales = s.data<float>();
  o.rows_per_scale = g == Fp8Group::tensor ? 0 : g == Fp8Group::block_128x128 ? 128 : 1;
  return o;
}

// The codes' magnitudes (the E4M3 sign bit cleared; the inputs have no NaN): the reference
// GEMM over them gives each element's sum of |a||b| with the scales, the size its error is
// measured against.
Tensor abs_codes(const Tensor& q) {
  Tensor r = q.clone();
  uint8_t* p = r.data<uint8_t>();
  for (int64_t i = 0; i < r.numel(); ++i) p[i] &= 0x7f;
  return r;
}

// Every element within rel of its sum of |products| (plus FP32 rounding of its value): the
// whole-tensor nmse cannot see one K block or row gone wrong where other blocks' magnitudes
// dominate (the inputs' scales vary by 2^+-11 between blocks); this bound can. rel 2e-3 is
// well above the wgmma kernel's accumulation error within a 128-K block (its FP8 products
// carry fewer bits, spec "accumulation promotion"; modelled at a few 1e-4 of the sum at most,
// about 1e-5 judging by the nmse of the H200 run); the portable kernel's is ~1e-7.
void expect_per_element(const Tensor& got_any, const Tensor& want, const Tensor& mag,
                        const std::string& what) {
  const Tensor got = download(got_any);
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = got.f32()[i], w = want.f32()[i];
    const double bound = 2e-3 * std::fabs(double(mag.f32()[i])) + 1e-6 * std::fabs(w) + 1e-30;
    if (!(std::fabs(g - w) <= bound)) {
      if (first < 0) first = i;
      ++bad;
    }
  }
  INFO(what << ": " << bad << " elements off by more than 2e-3 of their |a||b| sum; first at "
            << first << (first >= 0 ? " got " + std::to_string(got.f32()[first]) + " want " +
                                          std::to_string(want.f32()[first])
                                    : std::string()));
  CHECK(bad == 0);
}

// Quantised operands (CPU reference quantisation), the reference product, and a GPU run.
void run_fp8_gemm(const GemmCase& t, Kernel kernel) {
  const std::string what = std::string(kernel_name(kernel)) + " M=" + std::to_string(t.M) +
                           " N=" + std::to_string(t.N) + " K=" + std::to_string(t.K) + " a " +
                           group_name(t.ga) + " b " + group_name(t.gb);
  const Tensor x = special_input({t.M, t.K}, false), w = special_input({t.N, t.K}, false);
  Tensor qa, sa, qb, sb;
  ops::fp8_quantize(cpu_ref(), x, t.ga, ScaleFormat::fp32, true, qa, sa);
  ops::fp8_quantize(cpu_ref(), w, t.gb, ScaleFormat::fp32, false, qb, sb);
  Tensor want = Tensor::empty({t.M, t.N});
  // The reference loops are slow: the optimised CPU kernel (same per-block promotion) for the
  // big cases.
  const bool big = t.M * t.N * t.K > (int64_t(1) << 25);
  ops::fp8_gemm_nt(big ? Context{} : cpu_ref(), qa, sa, qb, sb, want, t.ga, t.gb);
  Tensor mag = Tensor::empty({t.M, t.N});
  ops::fp8_gemm_nt(Context{}, abs_codes(qa), sa, abs_codes(qb), sb, mag, t.ga, t.gb);

  Arena ar;
  Tensor gqa = ar.upload(qa), gsa = ar.upload(sa), gqb = ar.upload(qb), gsb = ar.upload(sb);
  Tensor gc = ar.empty({t.M, t.N});
  const auto oa = fp8_operand(gqa, gsa, t.ga), ob = fp8_operand(gqb, gsb, t.gb);
  if (kernel == Kernel::op) {
    ops::fp8_gemm_nt(gpu(), gqa, gsa, gqb, gsb, gc, t.ga, t.gb);
  } else if (kernel == Kernel::fallback) {
    ds::cuda::fp8_gemm_nt_fallback(oa, ob, gc.data<float>(), t.M, t.N, t.K);
  } else {
    if (!ds::cuda::fp8_gemm_nt_sm90_supported(oa, ob, t.M, t.N, t.K)) {
      MESSAGE("sm90 FP8 GEMM not available here (device or shape): skipped " << what);
      return;
    }
    ds::cuda::fp8_gemm_nt_sm90(oa, ob, gc.data<float>(), t.M, t.N, t.K);
  }
  expect_close(gc, want, 1e-6, what.c_str());
  expect_per_element(gc, want, mag, what);
  CHECK(ar.check());
}

}  // namespace

TEST_CASE("gpu fp8_gemm_nt matches the reference (op, portable and Hopper kernels)") {
  const GemmCase any_shape[] = {
      {1, 1, 1, Fp8Group::row_1x128, Fp8Group::block_128x128},
      {3, 5, 7, Fp8Group::row_1x128, Fp8Group::block_128x128},
      {129, 257, 130, Fp8Group::row_1x128, Fp8Group::block_128x128},   // K % 16 != 0
      {130, 200, 272, Fp8Group::row_1x128, Fp8Group::block_128x128},   // partial K block
      {300, 129, 384, Fp8Group::tensor, Fp8Group::row_1x128},
      {77, 300, 200, Fp8Group::row_1x128, Fp8Group::tensor},
      {256, 384, 1024, Fp8Group::row_1x128, Fp8Group::row_1x128},
  };
  const GemmCase hopper[] = {
      {128, 128, 128, Fp8Group::row_1x128, Fp8Group::block_128x128},
      {256, 384, 1024, Fp8Group::row_1x128, Fp8Group::block_128x128},
      {300, 129, 384, Fp8Group::row_1x128, Fp8Group::block_128x128},   // partial M, N tiles
      {130, 200, 272, Fp8Group::row_1x128, Fp8Group::block_128x128},   // partial K block
      {200, 256, 512, Fp8Group::tensor, Fp8Group::row_1x128},
      {64, 640, 256, Fp8Group::row_1x128, Fp8Group::tensor},
      {1, 576, 7168, Fp8Group::row_1x128, Fp8Group::block_128x128},     // decode-like
      {512, 1024, 2048, Fp8Group::row_1x128, Fp8Group::block_128x128},
  };
  for (const auto& t : any_shape) {
    run_fp8_gemm(t, Kernel::fallback);
    run_fp8_gemm(t, Kernel::op);
  }
  for (const auto& t : hopper) {
    run_fp8_gemm(t, Kernel::sm90);
    run_fp8_gemm(t, Kernel::fallback);
    run_fp8_gemm(t, Kernel::op);
  }
}

}  // namespace ds::gpu_test

// ---- grouped FP8 GEMMs (the routed experts) -------------------------------------------------
// Against the CPU op (which runs fp8_gemm_nt on each group's slice), through the op and both
// kernels directly, with groups that are empty, exactly 128 rows / K columns, or several tiles.

namespace ds::gpu_test {
namespace {

std::string offsets_str(const std::vector<int64_t>& offsets) {
  std::string s = "{";
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(offsets[i]);
  }
  return s + "}";
}

struct MGroupedCase {
  std::vector<int64_t> offsets;   // (G + 1) row offsets, M = offsets[G]
  int64_t N, K;
  Fp8Group gb;
};

// a (M, K) 1x128, b[g] (N, K) grouped gb; c (M, N) poisoned before the call.
void run_fp8_mgrouped(const MGroupedCase& t, Kernel kernel) {
  const int64_t M = t.offsets.back(), N = t.N, K = t.K;
  const size_t G = t.offsets.size() - 1;
  const std::string what = std::string("m-grouped ") + kernel_name(kernel) +
                           " offsets=" + offsets_str(t.offsets) + " N=" + std::to_string(N) +
                           " K=" + std::to_string(K) + " b " + group_name(t.gb);
  Tensor qa, sa;
  ops::fp8_quantize(cpu_ref(), special_input({M, K}, false), Fp8Group::row_1x128,
                    ScaleFormat::fp32, true, qa, sa);
  std::vector<Tensor> qb(G), sb(G);
  for (size_t g = 0; g < G; ++g)
    ops::fp8_quantize(cpu_ref(), special_input({N, K}, false), t.gb, ScaleFormat::fp32, false,
                      qb[g], sb[g]);
  Tensor want = Tensor::empty({M, N});
  const bool big = M * N * K > (int64_t(1) << 25);
  ops::fp8_gemm_nt_grouped(big ? Context{} : cpu_ref(), qa, sa, qb, sb, t.offsets, want, t.gb);
  std::vector<Tensor> qb_abs;
  for (const Tensor& q : qb) qb_abs.push_back(abs_codes(q));
  Tensor mag = Tensor::empty({M, N});
  ops::fp8_gemm_nt_grouped(Context{}, abs_codes(qa), sa, qb_abs, sb, t.offsets, mag, t.gb);

  Arena ar;
  const Tensor gqa = ar.upload(qa), gsa = ar.upload(sa);
  std::vector<Tensor> gqb, gsb;
  std::vector<ds::cuda::Fp8Operand> ob;   // (G)
  for (size_t g = 0; g < G; ++g) {
    gqb.push_back(ar.upload(qb[g]));
    gsb.push_back(ar.upload(sb[g]));
    ob.push_back(fp8_operand(gqb[g], gsb[g], t.gb));
  }
  Tensor gc = ar.empty({M, N});
  const auto oa = fp8_operand(gqa, gsa, Fp8Group::row_1x128);
  if (kernel == Kernel::op) {
    ops::fp8_gemm_nt_grouped(gpu(), gqa, gsa, gqb, gsb, t.offsets, gc, t.gb);
  } else if (kernel == Kernel::fallback) {
    ds::cuda::fp8_gemm_nt_grouped_fallback(oa, ob.data(), t.offsets.data(), int(G),
                                           gc.data<float>(), N, K);
  } else {
    if (!ds::cuda::fp8_gemm_nt_grouped_sm90_supported(oa, ob.data(), int(G), N, K)) {
      MESSAGE("sm90 FP8 GEMM not available here (device or shape): skipped " << what);
      return;
    }
    ds::cuda::fp8_gemm_nt_grouped_sm90(oa, ob.data(), t.offsets.data(), int(G), gc.data<float>(),
                                       N, K);
  }
  expect_close(gc, want, 1e-6, what.c_str());
  expect_per_element(gc, want, mag, what);
  CHECK(ar.check());
}

struct KGroupedCase {
  std::vector<int64_t> offsets;   // (G + 1) K offsets, Ktot = offsets[G]
  int64_t M, N;
};

// a (M, Ktot) and b (N, Ktot) 1x128; c[g] (M, N) starts from values of the size of the group's
// product (so that overwriting instead of adding, or adding twice, shows).
void run_fp8_kgrouped(const KGroupedCase& t, Kernel kernel) {
  const int64_t M = t.M, N = t.N, Ktot = t.offsets.back();
  const size_t G = t.offsets.size() - 1;
  const std::string what = std::string("k-grouped ") + kernel_name(kernel) +
                           " offsets=" + offsets_str(t.offsets) + " M=" + std::to_string(M) +
                           " N=" + std::to_string(N);
  Tensor qa, sa, qb, sb;
  ops::fp8_quantize(cpu_ref(), special_input({M, Ktot}, false), Fp8Group::row_1x128,
                    ScaleFormat::fp32, true, qa, sa);
  ops::fp8_quantize(cpu_ref(), special_input({N, Ktot}, false), Fp8Group::row_1x128,
                    ScaleFormat::fp32, true, qb, sb);
  const Context cpu = M * N * Ktot > (int64_t(1) << 25) ? Context{} : cpu_ref();
  std::vector<Tensor> c0, want;   // (G) of (M, N)
  for (size_t g = 0; g < G; ++g) want.push_back(Tensor::zeros({M, N}));
  ops::fp8_gemm_nt_kgrouped(cpu, qa, sa, qb, sb, t.offsets, want);   // the sums alone
  for (size_t g = 0; g < G; ++g) {
    Tensor init = rand_f32({M, N});
    for (int64_t i = 0; i < init.numel(); ++i) init.f32()[i] *= 1.0f + std::fabs(want[g].f32()[i]);
    c0.push_back(init);
    want[g] = init.clone();
  }
  ops::fp8_gemm_nt_kgrouped(cpu, qa, sa, qb, sb, t.offsets, want);
  std::vector<Tensor> mag;   // (G) of (M, N): each group's sum of |a||b|
  for (size_t g = 0; g < G; ++g) mag.push_back(Tensor::zeros({M, N}));
  ops::fp8_gemm_nt_kgrouped(Context{}, abs_codes(qa), sa, abs_codes(qb), sb, t.offsets, mag);

  Arena ar;
  const Tensor gqa = ar.upload(qa), gsa = ar.upload(sa), gqb = ar.upload(qb), gsb = ar.upload(sb);
  std::vector<Tensor> gc;
  std::vector<float*> cp;   // (G)
  for (size_t g = 0; g < G; ++g) {
    gc.push_back(ar.upload(c0[g]));
    cp.push_back(gc[g].data<float>());
  }
  const auto oa = fp8_operand(gqa, gsa, Fp8Group::row_1x128);
  const auto ob = fp8_operand(gqb, gsb, Fp8Group::row_1x128);
  if (kernel == Kernel::op) {
    ops::fp8_gemm_nt_kgrouped(gpu(), gqa, gsa, gqb, gsb, t.offsets, gc);
  } else if (kernel == Kernel::fallback) {
    ds::cuda::fp8_gemm_nt_kgrouped_fallback(oa, ob, t.offsets.data(), int(G), cp.data(), M, N);
  } else {
    if (!ds::cuda::fp8_gemm_nt_kgrouped_sm90_supported(oa, ob, t.offsets.data(), int(G), M, N)) {
      MESSAGE("sm90 FP8 GEMM not available here (device or shape): skipped " << what);
      return;
    }
    ds::cuda::fp8_gemm_nt_kgrouped_sm90(oa, ob, t.offsets.data(), int(G), cp.data(), M, N);
  }
  for (size_t g = 0; g < G; ++g) {
    const std::string wg = what + " group " + std::to_string(g);
    if (t.offsets[g] == t.offsets[g + 1]) expect_close(gc[g], c0[g], 0.0, wg.c_str(), 0.0);
    else {
      expect_close(gc[g], want[g], 1e-6, wg.c_str());
      expect_per_element(gc[g], want[g], mag[g], wg);
    }
  }
  CHECK(ar.check());
}

// Sets the FP8 k-grouped split (set_fp8_ksplit) for a scope.
struct KsplitSet {
  explicit KsplitSet(bool on) { ds::cuda::set_fp8_ksplit(on); }
  ~KsplitSet() { ds::cuda::set_fp8_ksplit(was); }
  KsplitSet(const KsplitSet&) = delete;
  KsplitSet& operator=(const KsplitSet&) = delete;
  bool was = ds::cuda::fp8_ksplit();
};

}  // namespace

TEST_CASE("fp8 grouped m-grouped GEMM matches the CPU op (op, portable and Hopper kernels)") {
  const MGroupedCase cases[] = {
      {{0, 128}, 128, 128, Fp8Group::block_128x128},                        // one 128-row group
      {{0, 128, 128, 384, 640}, 200, 256, Fp8Group::block_128x128},         // an empty group
      {{0, 128, 128, 384, 640}, 300, 272, Fp8Group::row_1x128},             // partial K block
      {{0, 0, 256, 256, 384}, 129, 200, Fp8Group::block_128x128},           // K % 16 != 0
      {{0, 0, 256, 256, 384}, 129, 200, Fp8Group::row_1x128},
      {{0, 384, 384, 640, 1024, 1152, 1152, 1536}, 576, 1024, Fp8Group::block_128x128},
      {{0, 256, 256, 512}, 1024, 384, Fp8Group::row_1x128},
  };
  for (const auto& t : cases)
    for (Kernel k : {Kernel::fallback, Kernel::sm90, Kernel::op}) run_fp8_mgrouped(t, k);
}

TEST_CASE("fp8 grouped k-grouped GEMM accumulates into c like the CPU op (op, both kernels)") {
  const KGroupedCase cases[] = {
      {{0, 128}, 128, 128},                        // one group of exactly 128
      {{0, 128, 128, 384, 768}, 200, 130},         // an empty group; partial M, N tiles
      {{0, 0, 128, 128}, 77, 300},                 // empty first and last groups
      {{0, 256, 512, 512, 1024, 1536}, 384, 256},
      {{0, 128, 896}, 130, 140},                   // 6 K blocks from K block 1: the ring wraps
      {{0, 0, 0}, 64, 64},                         // every group empty: c untouched
      {{0, 272}, 130, 140},                        // one group, a partial last K block (Wgrad)
      {{0, 128, 128, 400}, 200, 300},              // a partial last block after full ones
      {{0, 200}, 64, 96},                          // K % 16 != 0: the portable kernel only
  };
  for (const auto& t : cases)
    for (Kernel k : {Kernel::fallback, Kernel::sm90, Kernel::op}) run_fp8_kgrouped(t, k);
}

// An FP8 Linear's Wgrad on the GPU (model::Linear, ops::gemm_accumulates): the k-grouped
// GEMM with one group {0, K} adds into the gradient what fp8_gemm_nt then add_ add, bit for
// bit on the card (the same kernel and K-block order; one F32 addition per element), for K
// (tokens) a multiple of 128, a partial last block, and K % 16 != 0 (the portable kernel).
TEST_CASE("fp8 grouped: one k-group == fp8_gemm_nt then add_ (an FP8 Linear's Wgrad)") {
  const KsplitSet unsplit(false);   // (DS_FP8_KSPLIT=on would sum in another order)
  for (const auto& [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{384, 1024, 512},
                                {130, 200, 272}, {96, 64, 200}, {256, 128, 4096}}) {
    CAPTURE(M);
    CAPTURE(N);
    CAPTURE(K);
    Tensor qa, sa, qb, sb;
    ops::fp8_quantize(cpu_ref(), special_input({M, K}, false), Fp8Group::row_1x128,
                      ScaleFormat::fp32, false, qa, sa);
    ops::fp8_quantize(cpu_ref(), special_input({N, K}, false), Fp8Group::row_1x128,
                      ScaleFormat::fp32, true, qb, sb);
    const Tensor g0 = rand_f32({M, N});
    Arena ar;
    const Tensor gqa = ar.upload(qa), gsa = ar.upload(sa), gqb = ar.upload(qb),
                 gsb = ar.upload(sb);
    Tensor tmp = ar.empty({M, N}), want = ar.upload(g0);
    ops::fp8_gemm_nt(gpu(), gqa, gsa, gqb, gsb, tmp, Fp8Group::row_1x128, Fp8Group::row_1x128);
    ops::add_(gpu(), want, tmp);
    std::vector<Tensor> got{ar.upload(g0)};
    ops::fp8_gemm_nt_kgrouped(gpu(), gqa, gsa, gqb, gsb, {0, K}, got);
    expect_exact(got[0], download(want), "one-group k-grouped vs fp8_gemm_nt + add_");
    CHECK(ar.check());
  }
}

TEST_CASE("fp8 grouped: the overlapped wgmma main loop (DS_FP8_GEMM=overlap) matches too") {
  // Promotion of K block kb - 1 while block kb's wgmma run: 1, 2, 3, 4, 8, 16 and 56 K blocks
  // (the loop runs blocks in pairs; odd counts end on the first set of partial sums), all
  // three modes, both b groupings.
  struct Restore {
    bool was = ds::cuda::fp8_gemm_overlap();
    ~Restore() { ds::cuda::set_fp8_gemm_overlap(was); }
  } restore;
  ds::cuda::set_fp8_gemm_overlap(true);
  const GemmCase plain[] = {
      {128, 128, 128, Fp8Group::row_1x128, Fp8Group::block_128x128},
      {130, 200, 256, Fp8Group::row_1x128, Fp8Group::block_128x128},
      {130, 200, 272, Fp8Group::row_1x128, Fp8Group::block_128x128},   // partial K block
      {300, 129, 384, Fp8Group::row_1x128, Fp8Group::block_128x128},
      {200, 256, 512, Fp8Group::tensor, Fp8Group::row_1x128},
      {256, 384, 1024, Fp8Group::row_1x128, Fp8Group::row_1x128},
      {512, 1024, 2048, Fp8Group::row_1x128, Fp8Group::block_128x128},
      {1, 576, 7168, Fp8Group::row_1x128, Fp8Group::block_128x128},
  };
  for (const auto& t : plain) run_fp8_gemm(t, Kernel::sm90);
  const MGroupedCase mg[] = {
      {{0, 128, 128, 384, 640}, 200, 256, Fp8Group::block_128x128},
      {{0, 256, 256, 512}, 1024, 384, Fp8Group::row_1x128},
  };
  for (const auto& t : mg) run_fp8_mgrouped(t, Kernel::sm90);
  const KGroupedCase kg[] = {
      {{0, 128, 128, 384, 768}, 200, 130},   // 1, 0, 2 and 3 K blocks
      {{0, 128, 896}, 130, 140},             // 6 K blocks from K block 1
  };
  for (const auto& t : kg) run_fp8_kgrouped(t, Kernel::sm90);
}

// (gpu-check.sh runs it in a process of its own, group ops-fp8-ksplit, until it has run on a
// GPU.)
TEST_CASE("fp8 grouped: k-split of one group (DS_FP8_KSPLIT=on) adds the same sums") {
  // One group over few tiles: its K blocks split among several blocks summing into a
  // workspace, then added into c in order (kernels/fp8_ksplit.hpp), against the CPU op as
  // every k-grouped case; the split runs where the plan says so, else the kernel as before.
  const KsplitSet split_on(true);
  const int64_t before = ds::cuda::fp8_ksplit_launches();
  const KGroupedCase split[] = {   // (on 132 SMs)
      {{0, 2048}, 256, 384},    // 6 tiles, 16 K blocks: 4 parts of 4
      {{0, 4176}, 130, 200},    // 4 tiles, 33 K blocks (the last partial): 8 parts of 4 or 5
      {{0, 2560}, 384, 1024},   // 24 tiles (q_a's shape), 20 K blocks: 5 parts of 4
  };
  // the op takes the Hopper kernel unless DS_FP8_GEMM=fallback
  const char* f8 = std::getenv("DS_FP8_GEMM");
  const int64_t per_case = f8 && std::strcmp(f8, "fallback") == 0 ? 1 : 2;
  int64_t want = 0;
  for (const auto& t : split) {
    const int64_t tiles = (t.M + 127) / 128 * ((t.N + 127) / 128);
    const int64_t nkb = (t.offsets.back() + 127) / 128;
    if (ds::cuda::ksplit::splits(tiles, nkb, ds::cuda::sm_count()) > 1) want += per_case;
    run_fp8_kgrouped(t, Kernel::sm90);
    run_fp8_kgrouped(t, Kernel::op);
  }
  const int64_t ran = ds::cuda::fp8_ksplit_launches() - before;
  MESSAGE("split launches: " << ran << " (the plan: " << want << ")");
  // (none without the Hopper kernel, which the sm_90a build's wgmma attention also needs)
  const bool hopper = ds::cuda::attention_wgmma_supported(64, 64);
  CHECK(ran == (hopper ? want : 0));
  if (hopper) CHECK(want > 0);   // the cases are ones the plan splits
  const KGroupedCase whole[] = {
      {{0, 384}, 256, 384},                  // 3 K blocks: too short to split
      {{0, 128, 128, 384, 768}, 200, 130},   // several groups: never split
  };
  for (const auto& t : whole) run_fp8_kgrouped(t, Kernel::sm90);
  CHECK(ds::cuda::fp8_ksplit_launches() - before == ran);
}

}  // namespace ds::gpu_test
