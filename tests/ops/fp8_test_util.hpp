// Shared helpers of the FP8 GEMM tests (test_fp8_gemm.cpp, test_fp8_grouped.cpp): operands
// whose magnitude changes with the 128-wide K block and the row band (so a scale applied to
// the wrong block shows), and an operand's codes, scales and dequantised values.
#pragma once
#include <cmath>

#include "ds/ops/fp8.hpp"
#include "ops_test_util.hpp"

namespace ds::ops::test {

// (R, K) values with magnitudes 2^(3 * (k / 128 % 4) - 4 + r % 3): every K block and every
// row band has its own range.
inline Tensor banded(int64_t R, int64_t K) {
  Tensor t = Tensor::empty({R, K});
  for (int64_t r = 0; r < R; ++r)
    for (int64_t k = 0; k < K; ++k)
      t.f32()[r * K + k] =
          float(urand(-1, 1) * std::ldexp(1.0, int(3 * ((k / 128) % 4) - 4 + r % 3)));
  return t;
}

struct Quant {
  Tensor q, s, d;   // codes, scales, dequantised
  Quant(const Tensor& x, Fp8Group g, bool act) {
    fp8_quantize(opt_ctx(), x, g, ScaleFormat::fp32, act, q, s);
    fp8_dequantize(opt_ctx(), q, s, g, d);
  }
};

}  // namespace ds::ops::test
