// Optimised element-wise ops, reductions and AdamW. Reductions split x into fixed chunks of
// kChunk elements (independent of the thread count), reduce each chunk in double with a
// vectorised loop, then add the partials in chunk order: deterministic across runs and
// thread counts. AdamW runs the reference arithmetic (ref_elementwise.cpp) in the same order
// per element (bit-identical results), vectorised for the all-F32 and all-BF16 moment cases.
// Loops shorter than kChunk run on the calling thread (a fork/join would cost more).
#include <bit>
#include <cmath>
#include <vector>

#include "ds/core/dtype.hpp"
#include "opt.hpp"
#include "vec_math.hpp"

namespace ds::ops::opt {

namespace {
constexpr int64_t kChunk = 1 << 15;

int ew_threads(int64_t n, int nt) { return n > kChunk ? nt : 1; }

template <class Acc, class F>
Acc chunked(int64_t n, int nt, F&& chunk_fn) {
  const int64_t nc = (n + kChunk - 1) / kChunk;
  if (nc == 1) return chunk_fn(0, n);
  std::vector<Acc> part(static_cast<size_t>(nc), Acc(0));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t c = 0; c < nc; ++c)
    part[size_t(c)] = chunk_fn(c * kChunk, std::min(n, (c + 1) * kChunk));
  Acc s = 0;
  for (Acc p : part) s += p;
  return s;
}

inline uint16_t to_bf16(float f) {   // f32_to_bf16 (ds/core/dtype.hpp) without branches
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t nan = (u >> 16) | 0x40u, rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? nan : rne);
}
inline float from_bf16(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

struct AdamConsts {
  float decay, w1, fb2, w2, step_size, bc2_sqrt, eps, gs;
  bool lerp_lo;   // ATen lerp branch for the scalar weight w1
};

// Same expressions, same order as ref::adamw_step; M16/V16: moments in BF16.
template <bool M16, bool V16, bool LO>
DS_CLONES void adamw_chunk(float* param, const float* grad, void* mp, void* vp, int64_t n,
                           const AdamConsts& c) {
  const float decay = c.decay, w1 = c.w1, fb2 = c.fb2, w2 = c.w2, step_size = c.step_size,
              bc2_sqrt = c.bc2_sqrt, eps = c.eps, gs = c.gs;
  float* m32 = static_cast<float*>(mp);
  float* v32 = static_cast<float*>(vp);
  uint16_t* m16 = static_cast<uint16_t*>(mp);
  uint16_t* v16 = static_cast<uint16_t*>(vp);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * gs;
    float m = M16 ? from_bf16(m16[i]) : m32[i];
    float v = V16 ? from_bf16(v16[i]) : v32[i];
    const float x = param[i] * decay;
    if constexpr (LO) m = m + w1 * (g - m);
    else m = g - (g - m) * (1.0f - w1);
    v = v * fb2 + (w2 * g) * g;
    const float denom = std::sqrt(v) / bc2_sqrt + eps;
    param[i] = x + (step_size * m) / denom;
    if constexpr (M16) m16[i] = to_bf16(m); else m32[i] = m;
    if constexpr (V16) v16[i] = to_bf16(v); else v32[i] = v;
  }
}
}  // namespace

void add(const float* a, const float* b, float* out, int64_t n, int nt) {
#pragma omp parallel for simd num_threads(ew_threads(n, nt)) schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void add_(float* dst, const float* src, int64_t n, int nt) {
#pragma omp parallel for simd num_threads(ew_threads(n, nt)) schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

void scale_(float* x, float s, int64_t n, int nt) {
#pragma omp parallel for simd num_threads(ew_threads(n, nt)) schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

double sum_squares(const float* x, int64_t n, int nt) {
  return chunked<double>(n, nt, [x](int64_t i0, int64_t i1) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; ++i) s += double(x[i]) * double(x[i]);
    return s;
  });
}

int64_t count_nonfinite(const float* x, int64_t n, int nt) {
  return chunked<int64_t>(n, nt, [x](int64_t i0, int64_t i1) {
    int64_t c = 0;
    for (int64_t i = i0; i < i1; ++i) c += std::isfinite(x[i]) ? 0 : 1;
    return c;
  });
}

double sum(const float* x, int64_t n, int nt) {
  return chunked<double>(n, nt, [x](int64_t i0, int64_t i1) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; ++i) s += double(x[i]);
    return s;
  });
}

void adamw_step(float* param, const float* grad, float* m32, float* v32, uint16_t* m16,
                uint16_t* v16, int64_t n, const AdamWParams& p, int nt) {
  const int64_t nc = (n + kChunk - 1) / kChunk;
  const bool same = (m16 != nullptr) == (v16 != nullptr);
  if (same) {
    const double lr = p.lr, b1 = p.beta1, b2 = p.beta2;
    const double bc1 = 1.0 - std::pow(b1, double(p.step)), bc2 = 1.0 - std::pow(b2, double(p.step));
    const float w1 = float(1.0 - b1);
    const AdamConsts c{float(1.0 - lr * double(p.weight_decay)), w1, float(b2), float(1.0 - b2),
                       float(-(lr / bc1)), float(std::sqrt(bc2)), p.eps, p.grad_scale,
                       w1 < 0.5f};
#pragma omp parallel for num_threads(nc > 1 ? nt : 1) schedule(static)
    for (int64_t k = 0; k < nc; ++k) {
      const int64_t i0 = k * kChunk, len = std::min(n, i0 + kChunk) - i0;
      float *pp = param + i0;
      const float* gp = grad + i0;
      if (m16 && c.lerp_lo) adamw_chunk<true, true, true>(pp, gp, m16 + i0, v16 + i0, len, c);
      else if (m16) adamw_chunk<true, true, false>(pp, gp, m16 + i0, v16 + i0, len, c);
      else if (c.lerp_lo) adamw_chunk<false, false, true>(pp, gp, m32 + i0, v32 + i0, len, c);
      else adamw_chunk<false, false, false>(pp, gp, m32 + i0, v32 + i0, len, c);
    }
    return;
  }
#pragma omp parallel for num_threads(nc > 1 ? nt : 1) schedule(static)
  for (int64_t c = 0; c < nc; ++c) {
    const int64_t i0 = c * kChunk, len = std::min(n, i0 + kChunk) - i0;
    ref::adamw_step(param + i0, grad + i0, m32 ? m32 + i0 : nullptr, v32 ? v32 + i0 : nullptr,
                    m16 ? m16 + i0 : nullptr, v16 ? v16 + i0 : nullptr, len, p);
  }
}

}  // namespace ds::ops::opt
