// Optimised SwiGLU: one fused, parallel element-wise pass (FP32) for forward and backward.
#include <cmath>

#include "opt.hpp"

namespace ds::ops::opt {

void swiglu_forward(const float* gate, const float* up, float* out, int64_t n, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate,
                     float* dup, int64_t n, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i], d = dout[i];
    const float sig = 1.0f / (1.0f + std::exp(-g));
    dup[i] = d * g * sig;
    dgate[i] = d * up[i] * sig * (1.0f + g * (1.0f - sig));
  }
}

}  // namespace ds::ops::opt
