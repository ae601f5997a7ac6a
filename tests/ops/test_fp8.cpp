// FP8 numerics of the ops layer (include/ds/ops/fp8.hpp): the E4M3 cast at the format's edges
// (every code round-trips, ties to even at every midpoint, saturation at 448, subnormals, NaN),
// the vectorisable rounding of the optimised kernels against the core cast, quantise /
// dequantise for every grouping with partial edge groups (scales equal an independently
// computed amax / 448; every error within half an ulp of its binade; UE8M0 scales the smallest
// power of two >= amax / 448), bit-identity of the optimised and reference kernels at 1-3
// threads, and BF16 rounding.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/fp8_kernels.hpp"
#include "ds/core/dtype.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// Random (M, K) values whose magnitudes span many binades: uniform mantissas times 2^e with e
// in [-12, 6], a few exact zeros, and per-row and per-column magnitude tilts so that groups
// see different amax (a grouping error changes the scales).
Tensor spread_f32(int64_t M, int64_t K) {
  Tensor t = Tensor::empty({M, K});
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < K; ++j) {
      const double e = std::floor(urand(-12, 6)) + double(i % 5) - double((j / 128) % 3);
      double v = urand(-1, 1) * std::ldexp(1.0, int(e));
      if (urand(0, 1) < 0.02) v = 0;
      t.f32()[i * K + j] = float(v);
    }
  return t;
}

// Scale of group (gi, gj) computed here from its definition (not from the kernels' layout).
float expected_scale(const Tensor& x, Fp8Group g, int64_t gi, int64_t gj, ScaleFormat fmt,
                     bool act) {
  const int64_t M = x.size(0), K = x.size(1);
  int64_t r0 = 0, r1 = M, c0 = 0, c1 = K;
  if (g == Fp8Group::row_1x128) { r0 = gi; r1 = gi + 1; c0 = gj * 128; c1 = std::min(K, c0 + 128); }
  if (g == Fp8Group::col_128x1) { r0 = gi * 128; r1 = std::min(M, r0 + 128); c0 = gj; c1 = gj + 1; }
  if (g == Fp8Group::block_128x128) {
    r0 = gi * 128; r1 = std::min(M, r0 + 128); c0 = gj * 128; c1 = std::min(K, c0 + 128);
  }
  float amax = 0;
  for (int64_t i = r0; i < r1; ++i)
    for (int64_t j = c0; j < c1; ++j) amax = std::max(amax, std::fabs(x.f32()[i * K + j]));
  if (act) amax = std::max(amax, 1e-4f);
  else if (amax == 0) return 1.0f;
  float s = amax / 448.0f;
  if (fmt == ScaleFormat::ue8m0) {
    double p = 1;   // smallest power of two >= s, by repeated doubling / halving
    while (p < s) p *= 2;
    while (p / 2 >= s) p /= 2;
    s = float(p);
  }
  return s;
}

// (group row, group col) of element (i, j).
std::pair<int64_t, int64_t> group_of(Fp8Group g, int64_t i, int64_t j) {
  switch (g) {
    case Fp8Group::row_1x128: return {i, j / 128};
    case Fp8Group::col_128x1: return {i / 128, j};
    case Fp8Group::block_128x128: return {i / 128, j / 128};
    case Fp8Group::tensor: return {0, 0};
  }
  return {0, 0};
}

const Fp8Group kGroups[] = {Fp8Group::row_1x128, Fp8Group::col_128x1, Fp8Group::block_128x128,
                            Fp8Group::tensor};
const char* group_name(Fp8Group g) {
  switch (g) {
    case Fp8Group::row_1x128: return "1x128";
    case Fp8Group::col_128x1: return "128x1";
    case Fp8Group::block_128x128: return "128x128";
    case Fp8Group::tensor: return "tensor";
  }
  return "?";
}

}  // namespace

TEST_CASE("e4m3 cast: codes round-trip, midpoints tie to even, edges") {
  // Every finite code decodes to a value that encodes back to the same code.
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;   // NaN codes
    const float v = e4m3_to_f32(uint8_t(c));
    CHECK(f32_to_e4m3(v) == uint8_t(c));
    CHECK(fp8::e4m3_code(v) == uint8_t(c));
    CHECK(same_bits(fp8::e4m3_round(v), v));
  }
  // Midpoints between neighbouring positive codes go to the even code; one FP32 ulp either
  // side goes to the nearer code.
  for (int c = 0; c < 0x7e; ++c) {
    const float lo = e4m3_to_f32(uint8_t(c)), hi = e4m3_to_f32(uint8_t(c + 1));
    const float mid = (lo + hi) / 2;
    REQUIRE(double(mid) == (double(lo) + double(hi)) / 2);   // exact in FP32
    const uint8_t even = uint8_t(c % 2 == 0 ? c : c + 1);
    INFO("codes ", c, ", ", c + 1);
    CHECK(f32_to_e4m3(mid) == even);
    CHECK(f32_to_e4m3(-mid) == (even | 0x80));
    CHECK(f32_to_e4m3(std::nextafter(mid, 0.0f)) == uint8_t(c));
    CHECK(f32_to_e4m3(std::nextafter(mid, 1e9f)) == uint8_t(c + 1));
  }
  // Named values: max normal, min normal, subnormals, saturation, NaN.
  CHECK(e4m3_to_f32(0x7e) == 448.0f);
  CHECK(e4m3_to_f32(0x08) == 0.015625f);           // 2^-6
  CHECK(e4m3_to_f32(0x01) == std::ldexp(1.0f, -9)); // smallest subnormal
  CHECK(e4m3_to_f32(0x07) == 7 * std::ldexp(1.0f, -9));
  CHECK(std::isnan(e4m3_to_f32(0x7f)));
  CHECK(std::isnan(e4m3_to_f32(0xff)));
  CHECK(f32_to_e4m3(448.0f) == 0x7e);
  CHECK(f32_to_e4m3(464.0f) == 0x7e);               // midpoint to the (absent) 480: saturates
  CHECK(f32_to_e4m3(1e30f) == 0x7e);
  CHECK(f32_to_e4m3(-INFINITY) == 0xfe);
  CHECK(f32_to_e4m3(std::ldexp(1.0f, -10)) == 0x00);          // tie between 0 and 2^-9: even 0
  CHECK(f32_to_e4m3(std::ldexp(3.0f, -10)) == 0x02);          // tie between 1 and 2 (x 2^-9)
  CHECK(f32_to_e4m3(std::ldexp(1.0f, -11)) == 0x00);
  CHECK(f32_to_e4m3(-0.0f) == 0x80);
  CHECK((f32_to_e4m3(std::nanf("")) & 0x7f) == 0x7f);
  CHECK(fp8::e4m3_round(1e30f) == 448.0f);
  CHECK(fp8::e4m3_round(-INFINITY) == -448.0f);
  CHECK(std::isnan(fp8::e4m3_round(std::nanf(""))));
  CHECK((fp8::e4m3_code(std::nanf("")) & 0x7f) == 0x7f);
}

TEST_CASE("e4m3 cast: the vectorisable rounding equals the core cast") {
  // Every FP32 whose magnitude lies in [2^-12, 2^10) with the low 12 mantissa bits stepped
  // (so every rounding boundary of E4M3 is visited), plus random bit patterns of all kinds.
  int64_t bad = 0, n = 0;
  auto check = [&](float v) {
    ++n;
    const uint8_t want = f32_to_e4m3(v);
    const float r = fp8::e4m3_round(v);
    const bool ok = std::isnan(v) ? (std::isnan(r) && (fp8::e4m3_code(r) & 0x7f) == 0x7f)
                                  : same_bits(r, e4m3_to_f32(want)) && fp8::e4m3_code(r) == want;
    if (!ok && bad++ < 5) FAIL_CHECK("value ", v, " (bits ", f32_to_bits(v), ") -> ", r);
  };
  for (uint32_t e = 127 - 12; e < 127 + 10; ++e)
    for (uint32_t m = 0; m < (1u << 23); m += 1u << 8)
      for (uint32_t s : {0u, 0x80000000u}) check(bits_to_f32(s | (e << 23) | m));
  for (uint32_t m = 0; m < (1u << 23); m += 4099) check(bits_to_f32(m));   // FP32 subnormals
  std::mt19937_64 r(7);
  for (int i = 0; i < 200000; ++i) check(bits_to_f32(uint32_t(r())));
  for (float v : {0.0f, -0.0f, INFINITY, -INFINITY, 447.99f, 448.0f, 448.01f, 480.0f, 1e-30f})
    check(v);
  INFO(n, " values");
  CHECK(bad == 0);
}

TEST_CASE("fp8_scale_shape") {
  CHECK(fp8_scale_shape(300, 200, Fp8Group::row_1x128) == Shape{300, 2});
  CHECK(fp8_scale_shape(300, 200, Fp8Group::col_128x1) == Shape{3, 200});
  CHECK(fp8_scale_shape(300, 200, Fp8Group::block_128x128) == Shape{3, 2});
  CHECK(fp8_scale_shape(300, 200, Fp8Group::tensor) == Shape{1});
  CHECK(fp8_scale_shape(128, 256, Fp8Group::block_128x128) == Shape{1, 2});
  CHECK(fp8_scale_shape(0, 5, Fp8Group::row_1x128) == Shape{0, 1});
}

TEST_CASE("fp8_quantize: scales per group, errors within half an ulp, dequantise, fake-quant") {
  const Shape shapes[] = {{130, 200}, {1, 5}, {257, 384}, {128, 128}, {3, 129}};
  for (const Shape& sh : shapes)
    for (Fp8Group g : kGroups)
      for (ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0})
        for (bool act : {true, false}) {
          const int64_t M = sh[0], K = sh[1];
          INFO(group_name(g), " ", M, "x", K, fmt == ScaleFormat::ue8m0 ? " ue8m0" : " fp32",
               act ? " act" : " weight");
          Tensor x = spread_f32(M, K);
          for (int64_t j = 0; j < std::min<int64_t>(K, 3); ++j) x.f32()[j] = 0;   // zero runs
          Tensor q, s;
          fp8_quantize(opt_ctx(2), x, g, fmt, act, q, s);
          REQUIRE(q.dtype() == DType::u8);
          REQUIRE(s.shape() == fp8_scale_shape(M, K, g));
          // Scales: each equals the group's amax / 448 (or its power-of-two ceiling).
          int64_t bad_scale = 0;
          const int64_t SC = g == Fp8Group::tensor ? 1 : s.size(1);
          for (int64_t gi = 0; gi < (g == Fp8Group::tensor ? 1 : s.size(0)); ++gi)
            for (int64_t gj = 0; gj < SC; ++gj) {
              const float got = s.f32()[gi * SC + gj];
              const float want = expected_scale(x, g, gi, gj, fmt, act);
              if (!same_bits(got, want) && bad_scale++ < 3)
                FAIL_CHECK("scale (", gi, ", ", gj, ") ", got, " want ", want);
              if (fmt == ScaleFormat::ue8m0) {
                int e;
                CHECK(std::frexp(got, &e) == 0.5f);   // a power of two
              }
            }
          CHECK(bad_scale == 0);
          // Dequantise; every element within half an ulp of its own binade (relative 2^-4,
          // or 2^-10 s in the subnormal range), allowing the two FP32 roundings of x / s and
          // of code * s; the group bound follows: 16 s = amax / 28 for amax / s = 448.
          Tensor d;
          fp8_dequantize(opt_ctx(2), q, s, g, d);
          int64_t bad_err = 0;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < K; ++j) {
              const auto [gi, gj] = group_of(g, i, j);
              const double sc = s.f32()[gi * SC + gj];
              const double xv = x.f32()[i * K + j], dv = d.f32()[i * K + j];
              const double bound =
                  std::max(std::ldexp(std::fabs(xv), -4), std::ldexp(sc, -10)) * (1 + 1e-6);
              if (!(std::fabs(dv - xv) <= bound) && bad_err++ < 3)
                FAIL_CHECK("element (", i, ", ", j, ") ", xv, " -> ", dv, " scale ", sc);
              CHECK_LE(std::fabs(dv - xv), 16 * sc * (1 + 1e-6));
            }
          CHECK(bad_err == 0);
          // fake_quant is dequantize(quantize(x)) bit for bit, also in place.
          Tensor f, inplace = x.clone();
          fp8_fake_quant(opt_ctx(2), x, g, fmt, act, f);
          fp8_fake_quant(opt_ctx(2), inplace, g, fmt, act, inplace);
          int64_t bad_fq = 0;
          for (int64_t i = 0; i < x.numel(); ++i)
            bad_fq += !same_bits(f.f32()[i], d.f32()[i]) ||
                      !same_bits(inplace.f32()[i], d.f32()[i]);
          CHECK(bad_fq == 0);
        }
}

TEST_CASE("fp8 kernels: optimised equal the reference bit for bit at 1-3 threads") {
  for (const Shape& sh : {Shape{130, 200}, Shape{700, 300}, Shape{2, 3, 260}})
    for (Fp8Group g : kGroups)
      for (ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0}) {
        INFO(group_name(g), " ", shape_str(sh));
        Tensor x = spread_f32(shape_numel(sh) / sh.back(), sh.back()).view(sh);
        Tensor qr, sr, fr, dr;
        fp8_quantize(ref_ctx(), x, g, fmt, true, qr, sr);
        fp8_fake_quant(ref_ctx(), x, g, fmt, true, fr);
        fp8_dequantize(ref_ctx(), qr, sr, g, dr);
        for (int nt : {1, 2, 3}) {
          Tensor qo, so, fo, dop;
          fp8_quantize(opt_ctx(nt), x, g, fmt, true, qo, so);
          fp8_fake_quant(opt_ctx(nt), x, g, fmt, true, fo);
          fp8_dequantize(opt_ctx(nt), qr, sr, g, dop);
          CHECK(std::memcmp(qo.raw(), qr.raw(), qr.nbytes()) == 0);
          CHECK(std::memcmp(so.raw(), sr.raw(), sr.nbytes()) == 0);
          CHECK(std::memcmp(fo.raw(), fr.raw(), fr.nbytes()) == 0);
          CHECK(std::memcmp(dop.raw(), dr.raw(), dr.nbytes()) == 0);
        }
      }
}

TEST_CASE("fp8_quantize: act clamp, zero weight blocks, non-finite inputs, saturation") {
  Tensor z = Tensor::zeros({2, 130});
  Tensor q, s;
  fp8_quantize(opt_ctx(), z, Fp8Group::row_1x128, ScaleFormat::fp32, true, q, s);
  CHECK(s.f32()[0] == 1e-4f / 448.0f);
  Tensor q2, s2;
  fp8_quantize(opt_ctx(), z, Fp8Group::block_128x128, ScaleFormat::fp32, false, q2, s2);
  CHECK(s2.f32()[0] == 1.0f);
  CHECK(s2.f32()[1] == 1.0f);
  Tensor q3, s3;   // act clamp with power-of-two scales: 2^ceil(log2(1e-4 / 448)) = 2^-22
  fp8_quantize(opt_ctx(), z, Fp8Group::row_1x128, ScaleFormat::ue8m0, true, q3, s3);
  CHECK(s3.f32()[0] == std::ldexp(1.0f, -22));

  // NaN stays NaN and leaves the other elements' scale alone; inf poisons its group only.
  Tensor x = rand_f32({2, 256});
  x.f32()[5] = std::nanf("");
  x.f32()[256 + 200] = INFINITY;
  Tensor qn, sn, dn;
  fp8_quantize(ref_ctx(), x, Fp8Group::row_1x128, ScaleFormat::fp32, true, qn, sn);
  fp8_dequantize(opt_ctx(), qn, sn, Fp8Group::row_1x128, dn);
  CHECK((qn.data<uint8_t>()[5] & 0x7f) == 0x7f);
  CHECK(std::isfinite(sn.f32()[0]));
  CHECK(std::isnan(dn.f32()[5]));
  CHECK(std::isfinite(dn.f32()[6]));
  CHECK(std::isinf(sn.f32()[3]));                   // row 1, group 1
  CHECK(std::isnan(dn.f32()[256 + 130]));
  CHECK(std::isfinite(dn.f32()[256 + 10]));         // row 1, group 0 untouched
  Tensor fo;
  fp8_fake_quant(opt_ctx(), x, Fp8Group::row_1x128, ScaleFormat::fp32, true, fo);
  CHECK(nmse(fo, dn) == 0);

  // The largest element of a group maps to the code of 448 exactly (x / (amax/448) may
  // round above 448 in FP32 and must saturate, not become NaN).
  Tensor big = rand_f32({64, 128}, -3, 3);
  Tensor qb, sb;
  fp8_quantize(opt_ctx(), big, Fp8Group::row_1x128, ScaleFormat::fp32, true, qb, sb);
  for (int64_t i = 0; i < 64; ++i) {
    int64_t jm = 0;
    for (int64_t j = 0; j < 128; ++j)
      if (std::fabs(big.f32()[i * 128 + j]) > std::fabs(big.f32()[i * 128 + jm])) jm = j;
    CHECK((qb.data<uint8_t>()[i * 128 + jm] & 0x7f) == 0x7e);
  }
}

TEST_CASE("fp8_quantize: a weight group of tiny values gets the least normal scale, no NaN") {
  // amax / 448 under FLT_MIN was a subnormal scale (a few bits: 14% error) or, at 1e-43,
  // 0 with every 0 / 0 a NaN code; a checkpoint with such a scale is refused by its readers
  constexpr float kMin = std::numeric_limits<float>::min();
  Tensor x = Tensor::zeros({2, 128});
  x.f32()[3] = 1e-43f;                                         // rows 0: only 0 and 1e-43
  for (int64_t j = 0; j < 128; ++j) x.f32()[128 + j] = float(j + 1) * 1e-38f;   // row 1
  for (const ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0})
    for (const bool opt : {false, true}) {
      Tensor q, s, d;
      fp8_quantize(opt ? opt_ctx() : ref_ctx(), x, Fp8Group::row_1x128, fmt, false, q, s);
      fp8_dequantize(ref_ctx(), q, s, Fp8Group::row_1x128, d);
      CHECK(s.f32()[0] == kMin);
      CHECK(s.f32()[1] >= kMin);
      for (int64_t i = 0; i < 256; ++i) {
        REQUIRE((q.data<uint8_t>()[i] & 0x7f) != 0x7f);        // no NaN code
        // within half an E4M3 step: 2^-10 s below 2^-6, else 2^-4 of the value
        const float err = std::fabs(d.f32()[i] - x.f32()[i]);
        CHECK(err <= std::max(std::ldexp(s.f32()[i / 128], -10),
                              std::ldexp(std::fabs(x.f32()[i]), -4)));
      }
    }
}

TEST_CASE("fp8 ops: shape and dtype errors") {
  Tensor x = rand_f32({4, 130});
  Tensor q, s = Tensor::empty({4, 1});   // wrong: needs (4, 2)
  CHECK_THROWS_AS(fp8_quantize(opt_ctx(), x, Fp8Group::row_1x128, ScaleFormat::fp32, true, q, s),
                  ds::Error);
  Tensor qi = Tensor::empty({4, 130}, DType::i32), s2;
  CHECK_THROWS_AS(fp8_quantize(opt_ctx(), x, Fp8Group::row_1x128, ScaleFormat::fp32, true, qi, s2),
                  ds::Error);
  Tensor qq, ss;
  fp8_quantize(opt_ctx(), x, Fp8Group::row_1x128, ScaleFormat::fp32, true, qq, ss);
  Tensor out;
  CHECK_THROWS_AS(fp8_dequantize(opt_ctx(), qq, ss, Fp8Group::block_128x128, out), ds::Error);
  // F8_E4M3-typed codes are accepted as well as U8.
  Tensor q8 = Tensor::empty({4, 130}, DType::f8_e4m3), s8, d8, du;
  fp8_quantize(opt_ctx(), x, Fp8Group::row_1x128, ScaleFormat::fp32, true, q8, s8);
  fp8_dequantize(opt_ctx(), q8, s8, Fp8Group::row_1x128, d8);
  fp8_dequantize(opt_ctx(), qq, ss, Fp8Group::row_1x128, du);
  CHECK(nmse(d8, du) == 0);
}

TEST_CASE("bf16_round: RNE ties, NaN, equals the core cast") {
  Tensor x = Tensor::empty({8});
  const float one = 1.0f;
  x.f32()[0] = one + std::ldexp(1.0f, -8);        // tie: even (1)
  x.f32()[1] = one + 3 * std::ldexp(1.0f, -8);    // tie: even (1 + 2^-6)
  x.f32()[2] = std::nextafter(x.f32()[0], 2.0f);  // just above the tie: up
  x.f32()[3] = std::nanf("");
  x.f32()[4] = INFINITY;
  x.f32()[5] = -3.0e38f;
  x.f32()[6] = 1e-40f;                            // FP32 subnormal
  x.f32()[7] = -0.0f;
  Tensor r, o;
  bf16_round(ref_ctx(), x, r);
  bf16_round(opt_ctx(), x, o);
  CHECK(r.f32()[0] == 1.0f);
  CHECK(r.f32()[1] == one + std::ldexp(1.0f, -6));
  CHECK(r.f32()[2] == one + std::ldexp(1.0f, -7));
  CHECK(std::isnan(r.f32()[3]));
  CHECK(r.f32()[4] == INFINITY);
  for (int i = 0; i < 8; ++i)
    CHECK((same_bits(r.f32()[i], o.f32()[i]) &&
           same_bits(r.f32()[i], bf16_to_f32(f32_to_bf16(x.f32()[i])))));
  Tensor big = rand_f32({300, 300}), bo;
  bf16_round(opt_ctx(3), big, bo);
  for (int64_t i = 0; i < big.numel(); ++i)
    REQUIRE(same_bits(bo.f32()[i], bf16_to_f32(f32_to_bf16(big.f32()[i]))));
}
