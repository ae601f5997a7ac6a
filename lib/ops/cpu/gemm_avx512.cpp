// AVX-512 GEMM (see gemm_kernels.hpp): op(b) is packed into KC x 32 column panels and op(a)
// into MC x KC blocks of 12-row panels; a 12 x 32 microkernel keeps 24 zmm accumulators,
// broadcasting one op(a) element per row against two 16-wide op(b) vectors per k. Loop order
// N (NC) -> K (KC, beta applied on the first K block only) -> M (MC) -> NR -> MR. Edges are
// zero-padded in the packed panels and masked on store. Only functions marked DS_AVX512 use
// AVX-512; they are reached only after avx512_available(). Also the AVX-512 small-M kernels.
// GCC 12's AVX-512 intrinsics seed masked ops with _mm*_undefined_*, a known false positive
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gemm_kernels.hpp"
#include "small_nt_avx512.hpp"


namespace ds::ops::opt::gemm {

namespace {
constexpr int MR = 12, NR = 32;
constexpr int64_t KC = 256, MC = 144, NC = 3072;

// 64-byte aligned scratch that only grows (one per thread).
float* scratch(std::vector<float>& v, int64_t n) {
  if (int64_t(v.size()) < n + 16) v.resize(size_t(n + 16));
  auto p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

// In-register transpose: r[i] lane j <- r[j] lane i.
DS_AVX512 inline void transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {   // r[4i+j], 128-bit lane L: column 4L+j of rows 4i..4i+3
    r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  __m512 o[16];
  for (int j = 0; j < 4; ++j) {
    const __m512 u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
    const __m512 u1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
    const __m512 u2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    const __m512 u3 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
    o[j] = _mm512_shuffle_f32x4(u0, u2, 0x88);
    o[4 + j] = _mm512_shuffle_f32x4(u1, u3, 0x88);
    o[8 + j] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
    o[12 + j] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = o[i];
}

// dst[(panel * kc + k) * MR + r] = op(a)(i0 + panel*MR + r, k0 + k), zero past row m.
DS_AVX512 void pack_a(const float* a, int64_t lda, bool ta, int64_t i0, int64_t m, int64_t k0,
                      int64_t kc, float* dst) {
  for (int64_t ip = 0; ip < m; ip += MR) {
    const int rows = int(std::min<int64_t>(MR, m - ip));
    float* d = dst + ip * kc;
    if (ta) {   // op(a)(i,k) = a[k*lda + i]: MR consecutive floats per k
      const __mmask16 mk = __mmask16((1u << rows) - 1);
      for (int64_t k = 0; k < kc; ++k) {
        const __m512 v = _mm512_maskz_loadu_ps(mk, a + (k0 + k) * lda + i0 + ip);
        _mm512_mask_storeu_ps(d + k * MR, __mmask16((1u << MR) - 1), v);
      }
    } else {     // rows of a are contiguous in k: 16 x 16 register transposes
      const __mmask16 st = __mmask16((1u << MR) - 1);
      for (int64_t k = 0; k < kc; k += 16) {
        const int64_t kk = std::min<int64_t>(16, kc - k);
        const __mmask16 lm = __mmask16((1u << kk) - 1);
        __m512 r16[16];
        for (int r = 0; r < 16; ++r)
          r16[r] = r < rows ? _mm512_maskz_loadu_ps(lm, a + (i0 + ip + r) * lda + k0 + k)
                            : _mm512_setzero_ps();
        transpose16(r16);
        for (int64_t i = 0; i < kk; ++i) _mm512_mask_storeu_ps(d + (k + i) * MR, st, r16[i]);
      }
    }
  }
}

// dst[(panel * kc + k) * NR + c] = op(b)(k0 + k, j0 + panel*NR + c), zero past column n.
DS_AVX512 void pack_b(const float* b, int64_t ldb, bool tb, int64_t k0, int64_t kc, int64_t j0,
                      int64_t n, float* dst) {
  for (int64_t jp = 0; jp < n; jp += NR) {
    const int cols = int(std::min<int64_t>(NR, n - jp));
    float* d = dst + jp * kc;
    if (!tb) {   // op(b)(k,j) = b[k*ldb + j]: a row segment per k
      const __mmask16 m0 = __mmask16(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
      const __mmask16 m1 = __mmask16(cols >= 32 ? 0xFFFF : cols > 16 ? (1u << (cols - 16)) - 1 : 0);
      for (int64_t k = 0; k < kc; ++k) {
        const float* s = b + (k0 + k) * ldb + j0 + jp;
        _mm512_store_ps(d + k * NR, _mm512_maskz_loadu_ps(m0, s));
        _mm512_store_ps(d + k * NR + 16, _mm512_maskz_loadu_ps(m1, s + 16));
      }
    } else {     // op(b)(k,j) = b[j*ldb + k]: 16 x 16 register transposes per half panel
      for (int64_t k = 0; k < kc; k += 16) {
        const int64_t kk = std::min<int64_t>(16, kc - k);
        const __mmask16 lm = __mmask16((1u << kk) - 1);
        for (int h = 0; h < 2; ++h) {
          __m512 r16[16];
          for (int q = 0; q < 16; ++q)
            r16[q] = 16 * h + q < cols
                         ? _mm512_maskz_loadu_ps(lm, b + (j0 + jp + 16 * h + q) * ldb + k0 + k)
                         : _mm512_setzero_ps();
          transpose16(r16);
          for (int64_t i = 0; i < kk; ++i) _mm512_store_ps(d + (k + i) * NR + 16 * h, r16[i]);
        }
      }
    }
  }
}

// c[r, 0..n) (rows r < m) = alpha * sum_k A[k*MR + r] B[k*NR + :] + beta * c
DS_AVX512 void micro_12x32(int64_t kc, const float* __restrict A, const float* __restrict B,
                           float* c, int64_t ldc, int m, int n, float alpha, float beta) {
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
    _mm_prefetch(reinterpret_cast<const char*>(B + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(A[r]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
    A += MR;
    B += NR;
  }
  const __mmask16 m0 = __mmask16(n >= 16 ? 0xFFFF : (1u << n) - 1);
  const __mmask16 m1 = __mmask16(n >= 32 ? 0xFFFF : n > 16 ? (1u << (n - 16)) - 1 : 0);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    if (r >= m) break;
    float* cr = c + r * ldc;
    __m512 x0 = _mm512_mul_ps(va, c0[r]), x1 = _mm512_mul_ps(va, c1[r]);
    if (beta != 0.0f) {
      x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), x0);
      x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), x1);
    }
    _mm512_mask_storeu_ps(cr, m0, x0);
    _mm512_mask_storeu_ps(cr + 16, m1, x1);
  }
}

// ---- small M: y(MM, N) from x (MM rows, contiguous in k, row stride ldx) ----

// op(b) = b (K x N, rows contiguous): 64 output columns at a time, axpy over the rows of b.
template <int MM>
DS_AVX512 void small_nn(const float* x, int64_t ldx, const float* b, int64_t ldb, float* c,
                        int64_t ldc, int64_t N, int64_t K, float alpha, float beta) {
  constexpr int V = 4;
  for (int64_t j = 0; j < N; j += 16 * V) {
    __mmask16 mk[V];
    for (int v = 0; v < V; ++v) {
      const int64_t left = N - j - 16 * v;
      mk[v] = __mmask16(left >= 16 ? 0xFFFF : left > 0 ? (1u << left) - 1 : 0);
    }
    __m512 acc[MM][V];
    for (int m = 0; m < MM; ++m)
      for (int v = 0; v < V; ++v) acc[m][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      const float* bk = b + k * ldb + j;
      __m512 bv[V];
      for (int v = 0; v < V; ++v) bv[v] = _mm512_maskz_loadu_ps(mk[v], bk + 16 * v);
      for (int m = 0; m < MM; ++m) {
        const __m512 xv = _mm512_set1_ps(x[m * ldx + k]);
        for (int v = 0; v < V; ++v) acc[m][v] = _mm512_fmadd_ps(xv, bv[v], acc[m][v]);
      }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int m = 0; m < MM; ++m)
      for (int v = 0; v < V; ++v) {
        float* cp = c + m * ldc + j + 16 * v;
        __m512 y = _mm512_mul_ps(va, acc[m][v]);
        if (beta != 0.0f) y = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk[v], cp), y);
        _mm512_mask_storeu_ps(cp, mk[v], y);
      }
  }
}

template <int MM>
void small_dispatch(const float* x, int64_t ldx, const float* b, int64_t ldb, bool tb, float* c,
                    int64_t ldc, int64_t N, int64_t K, float alpha, float beta) {
  if (tb) small_nt<MM, (MM <= 2 ? 8 : 4)>(x, ldx, b, ldb, c, ldc, N, K, alpha, beta);
  else small_nn<MM>(x, ldx, b, ldb, c, ldc, N, K, alpha, beta);
}
}  // namespace

bool avx512_available() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
  return ok;
}

void gemm_avx512(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb,
                 float* c, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  thread_local std::vector<float> abuf, bbuf;
  const int64_t kcmax = std::min(KC, K);
  const int64_t ncmax = (std::min(NC, N) + NR - 1) / NR * NR;
  const int64_t mcmax = (std::min(MC, M) + MR - 1) / MR * MR;
  float* bp = scratch(bbuf, kcmax * ncmax);
  float* ap = scratch(abuf, kcmax * mcmax);
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const float bet = pc == 0 ? beta : 1.0f;
      pack_b(b, ldb, tb, pc, kc, jc, nc, bp);
      for (int64_t ic = 0; ic < M; ic += MC) {
        const int64_t mc = std::min(MC, M - ic);
        pack_a(a, lda, ta, ic, mc, pc, kc, ap);
        for (int64_t jr = 0; jr < nc; jr += NR)
          for (int64_t ir = 0; ir < mc; ir += MR)
            micro_12x32(kc, ap + ir * kc, bp + jr * kc, c + (ic + ir) * ldc + jc + jr, ldc,
                        int(std::min<int64_t>(MR, mc - ir)), int(std::min<int64_t>(NR, nc - jr)),
                        alpha, bet);
      }
    }
  }
}

void small_m_avx512(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb,
                    float* c, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
                    float beta) {
  int64_t ldx;
  const float* x = small_m_rows(a, lda, ta, M, K, ldx);
  with_small_m(M, [&](auto mm) {
    small_dispatch<decltype(mm)::value>(x, ldx, b, ldb, tb, c, ldc, N, K, alpha, beta);
  });
}

}  // namespace ds::ops::opt::gemm
