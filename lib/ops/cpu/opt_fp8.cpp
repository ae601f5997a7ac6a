// Optimised FP8 kernels: two passes per quantisation (group amax -> scales, then the
// element-wise cast with a per-group constant), OpenMP over rows or row blocks, and a
// branch-free E4M3 rounding (fp8_kernels.hpp) that the compiler vectorises. Results are
// bit-identical to ref_fp8.cpp for any thread count (max is exact and order-free; every
// element is computed alone). The FP8 GEMM decodes the codes to FP32 once and runs one FP32
// GEMM per 128-wide K block (products of two E4M3 values are exact in FP32), then promotes
// each partial sum with its two scales, as the CUDA kernel will.
// reference: DeepSeek-V3 inference/kernel.py act_quant / fp8_gemm; DeepGEMM's promotion.
// No FP exception is ever unmasked here, so the compiler may treat FP arithmetic as
// non-trapping: that lets GCC if-convert (and vectorise) the branch-free E4M3 rounding; the
// IEEE results are unchanged (bit-identity with the reference is tested).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <omp.h>

#include <algorithm>
#include <bit>
#include <vector>

#include "fp8_kernels.hpp"
#include "opt.hpp"
#include "vec_math.hpp"

namespace ds::ops::opt {

namespace {

using fp8::Layout;

// ---- vectorised runs (AVX-512 / AVX2 / baseline clones) ----
DS_CLONES int32_t amax_run(const float* x, int64_t n, int32_t m) {
  for (int64_t i = 0; i < n; ++i) {
    const int32_t a = fp8::abs_bits(x[i]);
    m = a > m ? a : m;
  }
  return m;
}
DS_CLONES void amax_cols(const float* x, int32_t* m, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int32_t a = fp8::abs_bits(x[j]);
    m[j] = a > m[j] ? a : m[j];
  }
}
DS_CLONES void fake_run(const float* x, float* out, int64_t n, float sc) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp8::e4m3_round(x[i] / sc) * sc;
}
DS_CLONES void fake_cols(const float* x, float* out, int64_t n, const float* sc) {
  for (int64_t j = 0; j < n; ++j) out[j] = fp8::e4m3_round(x[j] / sc[j]) * sc[j];
}
DS_CLONES void quant_run(const float* x, uint8_t* q, int64_t n, float sc) {
  for (int64_t i = 0; i < n; ++i) q[i] = fp8::e4m3_code(fp8::e4m3_round(x[i] / sc));
}
DS_CLONES void quant_cols(const float* x, uint8_t* q, int64_t n, const float* sc) {
  for (int64_t j = 0; j < n; ++j) q[j] = fp8::e4m3_code(fp8::e4m3_round(x[j] / sc[j]));
}
DS_CLONES void bf16_run(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(f32_to_bf16(x[i]));
}
void dequant_run(const uint8_t* q, float* out, int64_t n, float sc) {
  const float* t = fp8::e4m3_table();
  for (int64_t i = 0; i < n; ++i) out[i] = t[q[i]] * sc;
}
void dequant_cols(const uint8_t* q, float* out, int64_t n, const float* sc) {
  const float* t = fp8::e4m3_table();
  for (int64_t j = 0; j < n; ++j) out[j] = t[q[j]] * sc[j];
}

// For every row i: run(e, n, sc) over the runs of one group (element offset e, length n,
// constant scale sc) or, for 128x1 groups, cols(e, K, scale row) over the whole row.
template <class Run, class Cols>
void apply_row(const Layout& L, const float* s, int64_t i, Run& run, Cols& cols) {
  const float* srow = s + (i / L.gr) * L.SC;   // (SC)
  if (L.gc == 1) {
    cols(i * L.K, L.K, srow);
  } else {
    for (int64_t g = 0; g < L.SC; ++g)
      run(i * L.K + g * L.gc, std::min(L.gc, L.K - g * L.gc), srow[g]);
  }
}

// Rows in parallel (one fork/join).
template <class Run, class Cols>
void for_each_row(const Layout& L, const float* s, int nt, Run run, Cols cols) {
#pragma omp parallel for num_threads(par_threads(L.M * L.K, nt)) schedule(static)
  for (int64_t i = 0; i < L.M; ++i) apply_row(L, s, i, run, cols);
}

// Scales s (SR, SC) of every group, then run / cols over every row with them. Groups of at
// most 128 rows: one parallel loop over row blocks, each block's amax then its rows (one
// fork/join: barriers are expensive on a loaded machine). Per tensor: a max-reduction over
// all elements, then the rows.
template <class Run, class Cols>
void scaled_pass(const float* x, const Layout& L, ScaleFormat fmt, bool act, float* s, int nt,
                 Run run, Cols cols) {
  const int64_t M = L.M, K = L.K;
  if (L.SR * L.SC == 1 && L.gr >= M) {   // one group for the whole matrix
    const int64_t n = M * K, chunk = 1 << 16;
    int32_t m = 0;
#pragma omp parallel for num_threads(par_threads(n, nt)) schedule(static) reduction(max : m)
    for (int64_t c = 0; c < n; c += chunk)
      m = std::max(m, amax_run(x + c, std::min(chunk, n - c), 0));
    s[0] = fp8::scale_of(std::bit_cast<float>(m), fmt, act);
    for_each_row(L, s, nt, run, cols);
    return;
  }
#pragma omp parallel num_threads(par_threads(M * K, nt))
  {
    std::vector<int32_t> m(static_cast<size_t>(L.SC));   // (SC) amax bits of one row block
#pragma omp for schedule(static)
    for (int64_t rb = 0; rb < L.SR; ++rb) {
      const int64_t i0 = rb * L.gr, i1 = std::min(M, i0 + L.gr);
      std::fill(m.begin(), m.end(), 0);
      for (int64_t i = i0; i < i1; ++i) {
        const float* xr = x + i * K;
        if (L.gc == 1) {
          amax_cols(xr, m.data(), K);
        } else {
          for (int64_t g = 0; g < L.SC; ++g)
            m[size_t(g)] = amax_run(xr + g * L.gc, std::min(L.gc, K - g * L.gc), m[size_t(g)]);
        }
      }
      for (int64_t g = 0; g < L.SC; ++g)
        s[rb * L.SC + g] = fp8::scale_of(std::bit_cast<float>(m[size_t(g)]), fmt, act);
      for (int64_t i = i0; i < i1; ++i) apply_row(L, s, i, run, cols);
    }
  }
}

// Codes (rows, K) -> FP32 values, unscaled.
void decode(const uint8_t* q, int64_t n, float* out, int nt) {
  const float* t = fp8::e4m3_table();
#pragma omp parallel for num_threads(par_threads(n, nt)) schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = t[q[i]];
}

}  // namespace

void fp8_quantize(const float* x, const Layout& L, ScaleFormat fmt, bool act, uint8_t* q,
                  float* s, int nt) {
  scaled_pass(
      x, L, fmt, act, s, nt,
      [&](int64_t e, int64_t n, float sc) { quant_run(x + e, q + e, n, sc); },
      [&](int64_t e, int64_t n, const float* sc) { quant_cols(x + e, q + e, n, sc); });
}

void fp8_dequantize(const uint8_t* q, const float* s, const Layout& L, float* out, int nt) {
  for_each_row(
      L, s, nt, [&](int64_t e, int64_t n, float sc) { dequant_run(q + e, out + e, n, sc); },
      [&](int64_t e, int64_t n, const float* sc) { dequant_cols(q + e, out + e, n, sc); });
}

void fp8_fake_quant(const float* x, const Layout& L, ScaleFormat fmt, bool act, float* out,
                    int nt) {
  std::vector<float> s(size_t(L.SR * L.SC));   // (SR, SC)
  scaled_pass(
      x, L, fmt, act, s.data(), nt,
      [&](int64_t e, int64_t n, float sc) { fake_run(x + e, out + e, n, sc); },
      [&](int64_t e, int64_t n, const float* sc) { fake_cols(x + e, out + e, n, sc); });
}

void bf16_round(const float* x, float* out, int64_t n, int nt) {
  const int64_t chunk = 1 << 16;
#pragma omp parallel for num_threads(par_threads(n, nt)) schedule(static)
  for (int64_t c = 0; c < n; c += chunk) bf16_run(x + c, out + c, std::min(chunk, n - c));
}

void fp8_gemm_nt(const uint8_t* a, const float* as, const Layout& la, const uint8_t* b,
                 const float* bs, const Layout& lb, float* c, int nt) {
  const int64_t M = la.M, N = lb.M, K = la.K;
  std::vector<float> A(size_t(M * K)), B(size_t(N * K));   // (M, K), (N, K) decoded codes
  decode(a, M * K, A.data(), nt);
  decode(b, N * K, B.data(), nt);
  std::fill(c, c + M * N, 0.0f);
  if (K == 0) return;
  constexpr int64_t kPanel = 64;   // rows of c per task
  const int64_t panels = (M + kPanel - 1) / kPanel;
  const int threads = matmul_flops(M, N, K) >= 1.5e6 ? nt : 1;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> part(static_cast<size_t>(kPanel * N));   // (rows, N) one K block's sums
    std::vector<float> bsk(static_cast<size_t>(N));             // (N) b scales of the K block
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t m0 = p * kPanel, rows = std::min(kPanel, M - m0);
      for (int64_t k0 = 0; k0 < K; k0 += kFp8Block) {
        const int64_t kw = std::min(kFp8Block, K - k0);
        gemm_strided(A.data() + m0 * K + k0, K, false, B.data() + k0, K, true, part.data(), N,
                     rows, N, kw, 1.0f, 0.0f);
        for (int64_t n = 0; n < N; ++n) bsk[size_t(n)] = bs[lb.idx(n, k0)];
        for (int64_t r = 0; r < rows; ++r) {
          const float sa = as[la.idx(m0 + r, k0)];
          float* cr = c + (m0 + r) * N;
          const float* pr = part.data() + r * N;
          for (int64_t n = 0; n < N; ++n) cr[n] += pr[n] * sa * bsk[size_t(n)];
        }
      }
    }
  }
}

}  // namespace ds::ops::opt
