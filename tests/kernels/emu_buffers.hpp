// What the host emulator's kernel tests share (test_emu_*.cpp): a kernel's buffer between guard
// bytes, optionally misaligned to take the kernels' scalar paths, and the comparisons of its
// contents with the CPU reference's (bits, 2^-22 relative, normalised error, BF16 codes, row
// dots, the attention kernels' whole-tensor and element bounds).
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>

#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "ds/core/dtype.hpp"
#include "ds/core/tensor.hpp"

namespace ds::test {

// A guarded buffer of `bytes`, starting `skew` bytes past a 64-byte boundary (4: no float4 or
// float2 access), or a guarded copy of a tensor's bytes.
struct EmuBuf {
  cuda_emu::Guarded<uint8_t> g;
  size_t skew;
  explicit EmuBuf(size_t bytes, size_t s = 0) : g(bytes + s), skew(s) {}
  EmuBuf(const Tensor& t, size_t s) : g(t.nbytes() + s), skew(s) {
    if (t.nbytes() > 0) std::memcpy(g.data() + skew, t.raw(), t.nbytes());   // raw() may be null
  }
  void* ptr() { return g.data() + skew; }
  // The buffer's floats set to NaN (the guards stay): an element a kernel leaves unwritten
  // then fails any comparison.
  EmuBuf& poison() {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (size_t i = 0; i + sizeof(float) <= g.n - skew; i += sizeof(float))
      std::memcpy(g.data() + skew + i, &nan, sizeof(float));
    return *this;
  }
  float* f() { return reinterpret_cast<float*>(g.data() + skew); }
  uint16_t* u() { return reinterpret_cast<uint16_t*>(g.data() + skew); }
  bool ok() const { return g.guards_intact(); }
};

// A CPU F32 tensor uniform in [lo, hi).
inline Tensor emu_random(std::initializer_list<int64_t> shape, std::mt19937_64& rng,
                         float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t = Tensor::empty(Shape(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = u(rng);
  return t;
}

// BF16 rounding's hard cases, to spread among random values: NaN of both signs, infinities,
// ties to even (down and up), FLT_MAX (rounds to inf), a subnormal, a signalling NaN (quieted)
// and -0.
inline constexpr float kBf16Specials[] = {
    std::numeric_limits<float>::quiet_NaN(),  -std::numeric_limits<float>::quiet_NaN(),
    std::numeric_limits<float>::infinity(),   -std::numeric_limits<float>::infinity(),
    std::bit_cast<float>(0x3f808000u),        std::bit_cast<float>(0x3f818000u),
    std::bit_cast<float>(0x7f7fffffu),        std::bit_cast<float>(0x00012345u),
    std::bit_cast<float>(0x7f800001u),        -0.0f};

// Elements whose bits differ; NaN equal to any NaN when nan_equal (the GPU's NaN is its
// canonical one, the CPU's may have another sign or payload).
inline int64_t bit_mismatches(const float* got, const float* want, int64_t n,
                              bool nan_equal = false) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i)
    if (!(nan_equal && std::isnan(got[i]) && std::isnan(want[i])))
      bad += std::memcmp(got + i, want + i, sizeof(float)) != 0;
  return bad;
}
// BF16 codes that differ, NaN codes equal to any NaN code when nan_equal.
inline int64_t code_mismatches(const uint16_t* got, const uint16_t* want, int64_t n,
                               bool nan_equal = false) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i)
    if (!(nan_equal && std::isnan(bf16_to_f32(got[i])) && std::isnan(bf16_to_f32(want[i]))))
      bad += got[i] != want[i];
  return bad;
}
// Codes that are not the RNE rounding of the F32 values (bf16_round's bits).
inline int64_t rounding_mismatches(const uint16_t* codes, const float* f32, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += codes[i] != f32_to_bf16(f32[i]);
  return bad;
}
// Elements further than 2^-22 relative from the reference (2 to 4 float ulps: a couple of
// roundings).
inline int64_t off_by_more_than_rounding(const float* got, const float* want, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i)
    bad += !(std::fabs(double(got[i]) - double(want[i])) <=
             std::ldexp(std::fabs(double(want[i])), -22) + 1e-30);
  return bad;
}
// Normalised squared error sum (g - w)^2 / sum w^2 over the finite reference values; NaN/inf
// at different places make it +inf.
inline double nmse(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = got[i], w = want[i];
    if (std::isfinite(g) != std::isfinite(w) || std::isnan(g) != std::isnan(w)) return INFINITY;
    if (!std::isfinite(w)) continue;
    num += (g - w) * (g - w);
    den += w * w;
  }
  return den > 0 ? num / den : num;
}

// Whole-tensor and element bounds for kernels that add in another order than the reference
// (attention, MLA decode): normalised squared error at most tol and every element within 1e-4
// of the reference's largest magnitude (a wrong row or block shows there, where a
// whole-tensor measure could let it pass). Says what was off.
inline bool close_to(const float* got, const Tensor& want, double tol) {
  double big = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    big = std::max(big, std::fabs(double(want.f32()[i])));
  int64_t off = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    off += !(std::fabs(double(got[i]) - want.f32()[i]) <= 1e-4 * big);
  const double e = nmse(got, want.f32(), want.numel());
  if (off || !(e <= tol)) MESSAGE("nmse " << e << ", " << off << " elements off");
  return off == 0 && e <= tol;
}

// Row dots out[m] = sum_c a[rows[m], c] * b[m, c] whose float is further from the reference's
// than a rounding of it (2^-22 relative) plus what another order of the double sums can change
// (1e-12 of sum_c |a b|): the GPU kernels add lane by lane, then across the warp.
inline int64_t dot_mismatches(const float* got, const float* want, const float* a,
                              const int32_t* rows, const float* b, int64_t M, int64_t C) {
  int64_t bad = 0;
  for (int64_t m = 0; m < M; ++m) {
    double mag = 0;
    for (int64_t c = 0; c < C; ++c) mag += std::fabs(double(a[rows[m] * C + c]) * b[m * C + c]);
    const double g = got[m], w = want[m];
    bad += !(std::fabs(g - w) <= std::ldexp(std::fabs(w), -22) + 1e-12 * mag);
  }
  return bad;
}

}  // namespace ds::test
