// bf16 / fp16 / fp8 conversions: all 256 fp8 codes, every rounding midpoint against a
// brute-force nearest-even reference, saturation, NaN/inf handling, known bf16 cases.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ds/core/dtype.hpp"

using namespace ds;

namespace {
// Brute-force reference: nearest finite code by value; ties go to the even code (mantissa
// LSB 0); beyond the largest finite value: saturate. Works on the non-negative codes.
uint8_t ref_encode(float x, float (*dec)(uint8_t), uint8_t max_code) {
  uint8_t best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int c = 0; c <= max_code; ++c) {
    double d = std::fabs(double(dec(uint8_t(c))) - double(x));
    if (d < best_d || (d == best_d && (c & 1) == 0)) { best_d = d; best = uint8_t(c); }
  }
  return best;
}

void check_format(float (*dec)(uint8_t), uint8_t (*enc)(float), uint8_t max_code, float maxv) {
  // 1. every code decodes and re-encodes to itself (NaN codes: NaN in, NaN out)
  for (int c = 0; c < 256; ++c) {
    float v = dec(uint8_t(c));
    if (std::isnan(v)) {
      CHECK(std::isnan(dec(enc(v))));
      continue;
    }
    if (std::isinf(v)) continue;   // e5m2 infinities saturate (tested below)
    CHECK_MESSAGE(enc(v) == uint8_t(c), "code " << c << " value " << v);
  }
  // 2. midpoints between neighbours, and one float ulp either side, against the reference
  for (int c = 0; c < max_code; ++c) {
    float a = dec(uint8_t(c)), b = dec(uint8_t(c + 1));
    float mid = float((double(a) + double(b)) / 2);   // exact: both are short floats
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      uint8_t want = ref_encode(x, dec, max_code);
      CHECK_MESSAGE(enc(x) == want, "x=" << x);
      CHECK_MESSAGE(enc(-x) == uint8_t(want | 0x80), "x=-" << x);
    }
  }
  // 3. saturation and specials
  CHECK(dec(enc(maxv * 1.01f)) == maxv);
  CHECK(dec(enc(1e30f)) == maxv);
  CHECK(dec(enc(INFINITY)) == maxv);
  CHECK(dec(enc(-INFINITY)) == -maxv);
  CHECK(std::isnan(dec(enc(NAN))));
  CHECK(enc(-0.0f) == 0x80);
  CHECK(enc(0.0f) == 0x00);
}
}  // namespace

TEST_CASE("e4m3fn: all codes, midpoints, saturation") {
  check_format(e4m3_to_f32, f32_to_e4m3, 0x7e, kE4M3Max);
  CHECK(e4m3_to_f32(0x7e) == 448.0f);
  CHECK(e4m3_to_f32(0x01) == std::ldexp(1.0f, -9));   // smallest subnormal
  CHECK(e4m3_to_f32(0x08) == std::ldexp(1.0f, -6));   // smallest normal
  CHECK(f32_to_e4m3(1.0f) == 0x38);
  CHECK(f32_to_e4m3(-2.0f) == 0xc0);
  CHECK(f32_to_e4m3(std::ldexp(1.0f, -10)) == 0x00);            // tie -> even (zero)
  CHECK(f32_to_e4m3(std::ldexp(3.0f, -11)) == 0x01);            // above half a step
  CHECK(f32_to_e4m3(464.0f) == 0x7e);                           // would round to 480: saturate
  CHECK(std::isnan(e4m3_to_f32(0x7f)));
  CHECK(std::isnan(e4m3_to_f32(0xff)));
}

TEST_CASE("e5m2: all codes, midpoints, saturation") {
  check_format(e5m2_to_f32, f32_to_e5m2, 0x7b, kE5M2Max);
  CHECK(e5m2_to_f32(0x7b) == 57344.0f);
  CHECK(std::isinf(e5m2_to_f32(0x7c)));
  CHECK(e5m2_to_f32(0x01) == std::ldexp(1.0f, -16));
  CHECK(f32_to_e5m2(1.0f) == 0x3c);
  CHECK(std::isnan(e5m2_to_f32(0x7d)));
}

TEST_CASE("bf16: known cases, round to nearest even, specials") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(-2.0f) == 0xc000);
  CHECK(f32_to_bf16(3.14159265f) == 0x4049);
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);        // tie -> even
  CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);    // tie -> even (up)
  CHECK(f32_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)) == 0x3f81);
  CHECK(f32_to_bf16(INFINITY) == 0x7f80);
  CHECK(f32_to_bf16(-INFINITY) == 0xff80);
  CHECK(f32_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);  // overflows to inf
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(f32_to_bf16(1e-40f) == 0x0001);                              // subnormal kept
  // every bf16 value round-trips exactly
  for (uint32_t h = 0; h < 65536; ++h) {
    float v = bf16_to_f32(uint16_t(h));
    if (std::isnan(v)) continue;
    REQUIRE(f32_to_bf16(v) == h);
  }
}

TEST_CASE("fp16: round trip and overflow") {
  for (uint32_t h = 0; h < 65536; ++h) {
    float v = f16_to_f32(uint16_t(h));
    if (std::isnan(v)) continue;
    REQUIRE(f32_to_f16(v) == h);
  }
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  CHECK(f32_to_f16(70000.0f) == 0x7c00);
  CHECK(f16_to_f32(0x3c00) == 1.0f);
}

TEST_CASE("dtype names and sizes") {
  CHECK(dtype_name(DType::bf16) == "BF16");
  CHECK(dtype_name(DType::f8_e4m3) == "F8_E4M3");
  CHECK(dtype_size(DType::f32) == 4);
  CHECK(dtype_size(DType::f8_e5m2) == 1);
}
