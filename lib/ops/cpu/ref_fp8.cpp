// Reference FP8 kernels: plain loops over the groups on ds/core/dtype.hpp's f32_to_e4m3 /
// e4m3_to_f32 (the project's definition of the cast), and the FP8 GEMM written as spec §3.4
// states it. Also the group geometry and the decode table shared with opt_fp8.cpp.
// reference: DeepSeek-V3 inference/kernel.py act_quant, weight_dequant, fp8_gemm.
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "fp8_kernels.hpp"

namespace ds::ops::fp8 {

Layout layout(int64_t M, int64_t K, Fp8Group g) {
  Layout L;
  L.M = M;
  L.K = K;
  switch (g) {
    case Fp8Group::row_1x128: L.gr = 1; L.gc = kFp8Block; break;
    case Fp8Group::col_128x1: L.gr = kFp8Block; L.gc = 1; break;
    case Fp8Group::block_128x128: L.gr = kFp8Block; L.gc = kFp8Block; break;
    case Fp8Group::tensor: L.gr = std::max<int64_t>(M, 1); L.gc = std::max<int64_t>(K, 1); break;
  }
  L.SR = (M + L.gr - 1) / L.gr;
  L.SC = (K + L.gc - 1) / L.gc;
  if (g == Fp8Group::tensor) L.SR = L.SC = 1;
  return L;
}

const float* e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[size_t(c)] = e4m3_to_f32(uint8_t(c));
    return t;
  }();
  return table.data();
}

}  // namespace ds::ops::fp8

namespace ds::ops::ref {

namespace {

// Scales of every group: amax over the group's elements, then the scale rule.
void group_scales(const float* x, const fp8::Layout& L, ScaleFormat fmt, bool act, float* s) {
  std::fill(s, s + L.SR * L.SC, 0.0f);
  for (int64_t i = 0; i < L.M; ++i)
    for (int64_t j = 0; j < L.K; ++j) {
      float& m = s[L.idx(i, j)];
      const float a = std::fabs(x[i * L.K + j]);
      if (a > m) m = a;   // NaN skipped
    }
  for (int64_t g = 0; g < L.SR * L.SC; ++g) s[g] = fp8::scale_of(s[g], fmt, act);
}

}  // namespace

void fp8_quantize(const float* x, const fp8::Layout& L, ScaleFormat fmt, bool act, uint8_t* q,
                  float* s) {
  group_scales(x, L, fmt, act, s);
  for (int64_t i = 0; i < L.M; ++i)
    for (int64_t j = 0; j < L.K; ++j) q[i * L.K + j] = f32_to_e4m3(x[i * L.K + j] / s[L.idx(i, j)]);
}

void fp8_dequantize(const uint8_t* q, const float* s, const fp8::Layout& L, float* out) {
  for (int64_t i = 0; i < L.M; ++i)
    for (int64_t j = 0; j < L.K; ++j)
      out[i * L.K + j] = e4m3_to_f32(q[i * L.K + j]) * s[L.idx(i, j)];
}

void fp8_fake_quant(const float* x, const fp8::Layout& L, ScaleFormat fmt, bool act, float* out) {
  std::vector<float> s(size_t(L.SR * L.SC));
  group_scales(x, L, fmt, act, s.data());
  for (int64_t i = 0; i < L.M; ++i)
    for (int64_t j = 0; j < L.K; ++j) {
      const float sc = s[size_t(L.idx(i, j))];
      out[i * L.K + j] = e4m3_to_f32(f32_to_e4m3(x[i * L.K + j] / sc)) * sc;
    }
}

void bf16_round(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(f32_to_bf16(x[i]));
}

void fp8_gemm_nt(const uint8_t* a, const float* as, const fp8::Layout& la, const uint8_t* b,
                 const float* bs, const fp8::Layout& lb, float* c) {
  const int64_t M = la.M, N = lb.M, K = la.K;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (int64_t k0 = 0; k0 < K; k0 += kFp8Block) {
        float partial = 0.0f;   // FP32 sum of exact products (each fits FP32's 24 bits)
        for (int64_t k = k0; k < std::min(K, k0 + kFp8Block); ++k)
          partial += e4m3_to_f32(a[m * K + k]) * e4m3_to_f32(b[n * K + k]);
        acc += partial * as[la.idx(m, k0)] * bs[lb.idx(n, k0)];
      }
      c[m * N + n] = acc;
    }
}

}  // namespace ds::ops::ref
