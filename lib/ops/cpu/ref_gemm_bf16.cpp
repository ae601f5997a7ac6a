// Reference linear layer with BF16 weights: y(N,out) = x(N,in) @ w(out,in)^T, each weight
// widened to float on the fly (exact: bf16 is the top half of an IEEE float) and the dot
// products accumulated in double with plain loops; the yardstick for opt::linear_bf16.
#include "ds/core/dtype.hpp"
#include "ref.hpp"

namespace ds::ops::ref {

void linear_bf16(const float* x, const uint16_t* w, float* y, int64_t N, int64_t O, int64_t I) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      double acc = 0;
      for (int64_t k = 0; k < I; ++k)
        acc += double(x[n * I + k]) * double(bf16_to_f32(w[o * I + k]));
      y[n * O + o] = float(acc);
    }
}

}  // namespace ds::ops::ref
