// Optimised interleaved RoPE (cos/sin once per token and pair, applied to every head) and
// the head layout copies, rows in parallel. Same angle rule as the reference:
// angle = float(pos) * f_i in FP32, cos/sin evaluated in double and rounded to FP32.
#include <cmath>
#include <cstring>
#include <vector>

#include "opt.hpp"

namespace ds::ops::opt {

void rope(const float* x, const int32_t* pos, const float* freqs, float* out, int64_t N,
          int64_t H, int64_t Dr, int dir, int nt, int64_t row, int64_t off) {
  const int64_t P = Dr / 2;
  if (row < 0) row = Dr;
#pragma omp parallel num_threads(par_threads(N * H * Dr, nt))
  {
    std::vector<float> cs(static_cast<size_t>(P)), sn(static_cast<size_t>(P));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t i = 0; i < P; ++i) {
        const float ang = float(pos[n]) * freqs[i];
        cs[size_t(i)] = float(std::cos(double(ang)));
        sn[size_t(i)] = float(double(dir) * std::sin(double(ang)));
      }
      for (int64_t h = 0; h < H; ++h) {
        const float* xp = x + (n * H + h) * row + off;
        float* op = out + (n * H + h) * row + off;
        for (int64_t i = 0; i < P; ++i) {
          const float x0 = xp[2 * i], x1 = xp[2 * i + 1], c = cs[size_t(i)], s = sn[size_t(i)];
          op[2 * i] = x0 * c - x1 * s;
          op[2 * i + 1] = x0 * s + x1 * c;
        }
      }
    }
  }
}

void split_last(const float* x, float* a, float* b, int64_t R, int64_t A, int64_t B, int nt) {
#pragma omp parallel for num_threads(par_threads(R * (A + B), nt)) schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    std::memcpy(a + r * A, x + r * (A + B), size_t(A) * sizeof(float));
    std::memcpy(b + r * B, x + r * (A + B) + A, size_t(B) * sizeof(float));
  }
}

void concat_last(const float* a, const float* b, float* x, int64_t R, int64_t A, int64_t B,
                 int nt) {
#pragma omp parallel for num_threads(par_threads(R * (A + B), nt)) schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    std::memcpy(x + r * (A + B), a + r * A, size_t(A) * sizeof(float));
    std::memcpy(x + r * (A + B) + A, b + r * B, size_t(B) * sizeof(float));
  }
}

void broadcast_heads(const float* x, float* out, int64_t N, int64_t H, int64_t D, int nt) {
#pragma omp parallel for num_threads(par_threads(N * H * D, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      std::memcpy(out + (n * H + h) * D, x + n * D, size_t(D) * sizeof(float));
}

void sum_heads(const float* dout, float* dx, int64_t N, int64_t H, int64_t D, int nt) {
#pragma omp parallel for num_threads(par_threads(N * H * D, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float* d = dx + n * D;
    for (int64_t e = 0; e < D; ++e) d[e] = 0.0f;
    for (int64_t h = 0; h < H; ++h) {
      const float* s = dout + (n * H + h) * D;
#pragma omp simd
      for (int64_t e = 0; e < D; ++e) d[e] += s[e];
    }
  }
}

// MLA's keys and values: per token, its H rows copied and the rope key repeated (memcpy);
// the backward's rope-key gradient summed over heads in head order, as sum_heads.
void mla_kv_split(const float* kv, const float* krot, float* k, float* v, int64_t N, int64_t H,
                  int64_t Dn, int64_t Dr, int64_t Dv, int nt) {
#pragma omp parallel for num_threads(par_threads(N * H * (Dn + Dr + Dv), nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t r = n * H; r < (n + 1) * H; ++r) {
      std::memcpy(k + r * (Dn + Dr), kv + r * (Dn + Dv), size_t(Dn) * sizeof(float));
      std::memcpy(k + r * (Dn + Dr) + Dn, krot + n * Dr, size_t(Dr) * sizeof(float));
      std::memcpy(v + r * Dv, kv + r * (Dn + Dv) + Dn, size_t(Dv) * sizeof(float));
    }
}

void mla_kv_split_backward(const float* dk, const float* dv, float* dkv, float* dkrot, int64_t N,
                           int64_t H, int64_t Dn, int64_t Dr, int64_t Dv, int nt) {
#pragma omp parallel for num_threads(par_threads(N * H * (Dn + Dr + Dv), nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float* d = dkrot + n * Dr;
    for (int64_t e = 0; e < Dr; ++e) d[e] = 0.0f;
    for (int64_t r = n * H; r < (n + 1) * H; ++r) {
      std::memcpy(dkv + r * (Dn + Dv), dk + r * (Dn + Dr), size_t(Dn) * sizeof(float));
      std::memcpy(dkv + r * (Dn + Dv) + Dn, dv + r * Dv, size_t(Dv) * sizeof(float));
      const float* s = dk + r * (Dn + Dr) + Dn;
#pragma omp simd
      for (int64_t e = 0; e < Dr; ++e) d[e] += s[e];
    }
  }
}

}  // namespace ds::ops::opt
