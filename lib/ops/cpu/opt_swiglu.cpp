// Optimised SwiGLU: one fused element-wise pass (FP32, exp_f of vec_math.hpp) for forward and
// backward, vectorised per chunk (target_clones), chunks of kChunk elements over OpenMP
// threads (a single chunk runs on the calling thread). Element-wise: results do not depend
// on the thread count.
#include <algorithm>
#include <cmath>

#include "opt.hpp"
#include "vec_math.hpp"

namespace ds::ops::opt {

namespace {
constexpr int64_t kChunk = 1 << 14;

DS_CLONES void fwd_chunk(const float* gate, const float* up, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + exp_f(-g)) * up[i];
  }
}

DS_CLONES void bwd_chunk(const float* gate, const float* up, const float* dout, float* dgate,
                         float* dup, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i], d = dout[i];
    const float sig = 1.0f / (1.0f + exp_f(-g));
    dup[i] = d * g * sig;
    dgate[i] = d * up[i] * sig * (1.0f + g * (1.0f - sig));
  }
}
}  // namespace

void swiglu_forward(const float* gate, const float* up, float* out, int64_t n, int nt) {
  const int64_t nc = (n + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(nc > 1 ? nt : 1) schedule(static)
  for (int64_t c = 0; c < nc; ++c) {
    const int64_t i = c * kChunk;
    fwd_chunk(gate + i, up + i, out + i, std::min(kChunk, n - i));
  }
}

void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate,
                     float* dup, int64_t n, int nt) {
  const int64_t nc = (n + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(nc > 1 ? nt : 1) schedule(static)
  for (int64_t c = 0; c < nc; ++c) {
    const int64_t i = c * kChunk;
    bwd_chunk(gate + i, up + i, dout + i, dgate + i, dup + i, std::min(kChunk, n - i));
  }
}

// Packed rows h (rows, 2I) = [gate | up]: whole rows per chunk of about kChunk elements.
void swiglu_packed_forward(const float* h, float* out, int64_t rows, int64_t I, int nt) {
  const int64_t rpc = std::max<int64_t>(1, kChunk / std::max<int64_t>(I, 1));
  const int64_t nc = (rows + rpc - 1) / rpc;
#pragma omp parallel for num_threads(nc > 1 ? nt : 1) schedule(static)
  for (int64_t c = 0; c < nc; ++c)
    for (int64_t r = c * rpc; r < std::min(rows, (c + 1) * rpc); ++r)
      fwd_chunk(h + r * 2 * I, h + r * 2 * I + I, out + r * I, I);
}

void swiglu_packed_backward(const float* h, const float* dout, float* dh, int64_t rows,
                            int64_t I, int nt) {
  const int64_t rpc = std::max<int64_t>(1, kChunk / std::max<int64_t>(I, 1));
  const int64_t nc = (rows + rpc - 1) / rpc;
#pragma omp parallel for num_threads(nc > 1 ? nt : 1) schedule(static)
  for (int64_t c = 0; c < nc; ++c)
    for (int64_t r = c * rpc; r < std::min(rows, (c + 1) * rpc); ++r)
      bwd_chunk(h + r * 2 * I, h + r * 2 * I + I, dout + r * I, dh + r * 2 * I,
                dh + r * 2 * I + I, I);
}

}  // namespace ds::ops::opt
