// Optimised token permutation: parallel row gather (also fused with the weights and the BF16
// rounding of the experts' operands); scatter-add through a CSR of source rows
// per destination row (each destination adds its sources in order of m: deterministic and
// bitwise equal to the reference); parallel per-row dot products.
#include <cstring>
#include <vector>

#include "ds/core/dtype.hpp"
#include "opt.hpp"
#include "ref.hpp"

namespace ds::ops::opt {

void gather_rows(const float* src, const int32_t* rows, float* dst, int64_t M, int64_t C, int nt) {
#pragma omp parallel for num_threads(par_threads(M * C, nt)) schedule(static)
  for (int64_t m = 0; m < M; ++m)
    std::memcpy(dst + m * C, src + int64_t(rows[m]) * C, size_t(C) * sizeof(float));
}

void gather_rows_scaled(const float* src, const int32_t* rows, const float* w, float* dst,
                        int64_t M, int64_t C, int nt) {
#pragma omp parallel for num_threads(par_threads(M * C, nt)) schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const float* s = src + int64_t(rows[m]) * C;
    for (int64_t c = 0; c < C; ++c) dst[m * C + c] = 0.0f + w[m] * s[c];
  }
}

void gather_rows_bf16(const float* src, const int32_t* rows, const float* w, float* out_f32,
                      uint16_t* out_codes, int64_t M, int64_t C, int nt) {
#pragma omp parallel for num_threads(par_threads(M * C, nt)) schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const float* s = src + int64_t(rows[m]) * C;
    for (int64_t c = 0; c < C; ++c) {
      const uint16_t code = f32_to_bf16(w ? 0.0f + w[m] * s[c] : s[c]);
      if (out_codes) out_codes[m * C + c] = code;
      else out_f32[m * C + c] = bf16_to_f32(code);
    }
  }
}

void scatter_add_rows(const float* src, const int32_t* rows, const float* w, float* dst,
                      int64_t M, int64_t N, int64_t C, int nt) {
  std::vector<int64_t> start(static_cast<size_t>(N) + 1, 0), order(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) start[size_t(rows[m]) + 1] += 1;
  for (int64_t r = 0; r < N; ++r) start[size_t(r) + 1] += start[size_t(r)];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t m = 0; m < M; ++m) order[size_t(fill[size_t(rows[m])]++)] = m;
#pragma omp parallel for num_threads(par_threads(M * C, nt)) schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    float* d = dst + r * C;
    for (int64_t i = start[size_t(r)]; i < start[size_t(r) + 1]; ++i) {
      const int64_t m = order[size_t(i)];
      const float wm = w ? w[m] : 1.0f;
      const float* s = src + m * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) d[c] += wm * s[c];
    }
  }
}

void gather_rows_dot(const float* a, const int32_t* rows, const float* b, float* out, int64_t M,
                     int64_t C, int nt) {
#pragma omp parallel for num_threads(par_threads(M * C, nt)) schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const float* ar = a + int64_t(rows[m]) * C;
    const float* br = b + m * C;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) s += double(ar[c]) * double(br[c]);
    out[m] = float(s);
  }
}

void combine_pairs(const float* src, const int32_t* slot, const float* w, float* dst, int64_t N,
                   int64_t K, int64_t C, int nt) {
#pragma omp parallel for num_threads(par_threads(N * K * C, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    int64_t order[64];   // K <= 64 here; wider routing takes the reference loop
    const int32_t* s = slot + n * K;
    if (K > 64) {
      ref::combine_pairs(src, s, w ? w + n * K : nullptr, dst + n * C, 1, K, C);
      continue;
    }
    for (int64_t k = 0; k < K; ++k) {   // insertion sort of the token's K slots
      int64_t i = k;
      for (; i > 0 && s[order[i - 1]] > s[k]; --i) order[i] = order[i - 1];
      order[i] = k;
    }
    float* d = dst + n * C;
    for (int64_t i = 0; i < K; ++i) {
      const int64_t k = order[i];
      const float wk = w ? w[n * K + k] : 1.0f;
      const float* r = src + int64_t(s[k]) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) d[c] += wk * r[c];
    }
  }
}

}  // namespace ds::ops::opt
