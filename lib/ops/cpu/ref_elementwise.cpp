// Reference element-wise ops, reductions (accumulated in double, in index order) and the AdamW
// step. AdamW follows torch.optim.AdamW (single-tensor path) operation by operation in FP32
// with scalars formed in double then rounded to FP32 (as PyTorch does with Python scalars):
//   p *= 1 - lr*wd;  m = lerp(m, g, 1-b1);  v = v*b2 + ((1-b2)*g)*g;
//   denom = sqrt(v) / sqrt(1-b2^t) + eps;   p += (-lr/(1-b1^t)) * m / denom.
// BF16 moments are widened to FP32, updated, used for this step's update, then stored RNE.
#include <cmath>

#include "ds/core/dtype.hpp"
#include "ref.hpp"

namespace ds::ops::ref {

void add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}
void add_(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}
void scale_(float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}
double sum_squares(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}
int64_t count_nonfinite(const float* x, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += std::isfinite(x[i]) ? 0 : 1;
  return c;
}
double sum(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]);
  return s;
}

// torch.lerp(self, end, w) for a scalar weight, as ATen's CPU kernel evaluates it.
static inline float lerp_f(float a, float b, float w) {
  return w < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

void adamw_step(float* param, const float* grad, float* m32, float* v32, uint16_t* m16,
                uint16_t* v16, int64_t n, const AdamWParams& p) {
  const double lr = p.lr, b1 = p.beta1, b2 = p.beta2;
  const float decay = float(1.0 - lr * double(p.weight_decay));
  const float w1 = float(1.0 - b1), fb2 = float(b2), w2 = float(1.0 - b2);
  const double bc1 = 1.0 - std::pow(b1, double(p.step)), bc2 = 1.0 - std::pow(b2, double(p.step));
  const float step_size = float(-(lr / bc1)), bc2_sqrt = float(std::sqrt(bc2)), eps = p.eps;
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i] * p.grad_scale;   // exact when 1: same as scaling grad beforehand
    float m = m16 ? bf16_to_f32(m16[i]) : m32[i];
    float v = v16 ? bf16_to_f32(v16[i]) : v32[i];
    float x = param[i] * decay;
    m = lerp_f(m, g, w1);
    v = v * fb2 + (w2 * g) * g;
    float denom = std::sqrt(v) / bc2_sqrt + eps;
    param[i] = x + (step_size * m) / denom;
    if (m16) m16[i] = f32_to_bf16(m); else m32[i] = m;
    if (v16) v16[i] = f32_to_bf16(v); else v32[i] = v;
  }
}

}  // namespace ds::ops::ref
