// Optimised causal attention: OpenMP over (b, h); per (b, h) the queries go in blocks of kBq
// rows, each against its visible key range [klo, t1) with strided SGEMMs (lda = H*D), so at
// most a kBq x T score block exists per thread. Softmax in FP32 with max subtraction.
// Backward (FlashAttention-2 form): P = exp(S - lse), dP = dO V^T, dS = P (dP - rowsum(dO*O)),
// dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO. Deterministic: one thread per (b, h).
// Row loops: invisible keys set to -inf, then max / exp_f (vec_math.hpp) / sum in float
// lanes, compiled for AVX-512/AVX2/baseline (target_clones).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <vector>

#include "opt.hpp"
#include "vec_math.hpp"

namespace ds::ops::opt {

namespace {

constexpr int64_t kBq = 64;     // query rows per block (causal: later blocks see more keys)

// kfirst[b*T + t]: first key index with the same segment as t (0 without segments).
std::vector<int64_t> first_keys(const int32_t* seg, int64_t B, int64_t T) {
  std::vector<int64_t> kf(static_cast<size_t>(B * T), 0);
  if (!seg) return kf;
  for (int64_t b = 0; b < B; ++b) {
    std::unordered_map<int32_t, int64_t> first;
    for (int64_t t = 0; t < T; ++t)
      kf[size_t(b * T + t)] = first.emplace(seg[b * T + t], t).first->second;
  }
  return kf;
}

// Runs body(bh) over all (b, h) (OpenBLAS is single-threaded: ops::set_cpu_threads).
template <class F>
void for_each_head(int64_t BH, int nt, F&& body) {
  const bool par = nt > 1 && BH > 1;
#pragma omp parallel for num_threads(par ? nt : 1) schedule(static)
  for (int64_t bh = 0; bh < BH; ++bh) body(bh);
}

struct Block { int64_t t0, t1, klo; };
Block block_at(const std::vector<int64_t>& kf, int64_t b, int64_t T, int64_t t0) {
  Block blk{t0, std::min(T, t0 + kBq), T};
  for (int64_t t = blk.t0; t < blk.t1; ++t) blk.klo = std::min(blk.klo, kf[size_t(b * T + t)]);
  return blk;
}

// S (nq, nk) = scale * Q[t0:t1] K[klo:t1]^T for head (b, h).
void scores(const float* q, const float* k, const ref::AttnDims& d, int64_t b, int64_t h,
            const Block& blk, float scale, float* S) {
  const int64_t nq = blk.t1 - blk.t0, nk = blk.t1 - blk.klo, ld = d.H * d.Dk;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(nq), blasint(nk), blasint(d.Dk),
              scale, q + ((b * d.T + blk.t0) * d.H + h) * d.Dk, blasint(ld),
              k + ((b * d.T + blk.klo) * d.H + h) * d.Dk, blasint(ld), 0.0f, S, blasint(nk));
}

// s[j] = -inf for the keys klo + j that query t cannot see (later keys, other segments).
void mask_row(float* s, int64_t nk, const int32_t* seg, int64_t b, int64_t T, int64_t t,
              int64_t klo) {
  const int64_t nvis = t - klo + 1;   // causal limit
  std::fill(s + nvis, s + nk, -std::numeric_limits<float>::infinity());
  if (!seg) return;
  const int32_t* sb = seg + b * T;
  for (int64_t j = 0; j < nvis; ++j)
    if (sb[klo + j] != sb[t]) s[j] = -std::numeric_limits<float>::infinity();
}

// Softmax of one masked score row in place; returns its log-sum-exp.
DS_CLONES float softmax_row(float* s, int64_t nk) {
  float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < nk; ++j) mx = s[j] > mx ? s[j] : mx;
  float z = 0;
#pragma omp simd reduction(+ : z)
  for (int64_t j = 0; j < nk; ++j) {
    const float p = exp_f(s[j] - mx);
    s[j] = p;
    z += p;
  }
  const float inv = 1.0f / z;
#pragma omp simd
  for (int64_t j = 0; j < nk; ++j) s[j] *= inv;
  return mx + std::log(z);
}

// Backward row: p = exp(s - l) (masked s), dp = p * (dp - D).
DS_CLONES void dsoftmax_row(float* p, float* dp, float l, float D, int64_t nk) {
#pragma omp simd
  for (int64_t j = 0; j < nk; ++j) {
    const float e = exp_f(p[j] - l);
    p[j] = e;
    dp[j] = e * (dp[j] - D);
  }
}

DS_CLONES float dot_row(const float* a, const float* b, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t e = 0; e < n; ++e) s += a[e] * b[e];
  return s;
}

}  // namespace

void attention_forward(const float* q, const float* k, const float* v, const int32_t* seg,
                       float scale, float* out, float* lse, const ref::AttnDims& d, int nt) {
  const std::vector<int64_t> kf = first_keys(seg, d.B, d.T);
  for_each_head(d.B * d.H, nt, [&](int64_t bh) {
    const int64_t b = bh / d.H, h = bh % d.H;
    std::vector<float> S(static_cast<size_t>(std::min(kBq, d.T) * d.T));
    for (int64_t t0 = 0; t0 < d.T; t0 += kBq) {
      const Block blk = block_at(kf, b, d.T, t0);
      const int64_t nq = blk.t1 - blk.t0, nk = blk.t1 - blk.klo;
      scores(q, k, d, b, h, blk, scale, S.data());
      for (int64_t i = 0; i < nq; ++i) {
        const int64_t t = blk.t0 + i;
        float* s = S.data() + i * nk;
        mask_row(s, nk, seg, b, d.T, t, blk.klo);
        lse[bh * d.T + t] = softmax_row(s, nk);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(nq), blasint(d.Dv),
                  blasint(nk), 1.0f, S.data(), blasint(nk),
                  v + ((b * d.T + blk.klo) * d.H + h) * d.Dv, blasint(d.H * d.Dv), 0.0f,
                  out + ((b * d.T + blk.t0) * d.H + h) * d.Dv, blasint(d.H * d.Dv));
    }
  });
}

void attention_backward(const float* q, const float* k, const float* v, const int32_t* seg,
                        float scale, const float* out, const float* lse, const float* dout,
                        float* dq, float* dk, float* dv, const ref::AttnDims& d, int nt) {
  const std::vector<int64_t> kf = first_keys(seg, d.B, d.T);
  const int64_t ldk = d.H * d.Dk, ldv = d.H * d.Dv;
  for_each_head(d.B * d.H, nt, [&](int64_t bh) {
    const int64_t b = bh / d.H, h = bh % d.H;
    for (int64_t t = 0; t < d.T; ++t) {
      std::fill_n(dk + ((b * d.T + t) * d.H + h) * d.Dk, d.Dk, 0.0f);
      std::fill_n(dv + ((b * d.T + t) * d.H + h) * d.Dv, d.Dv, 0.0f);
    }
    const size_t blk_elems = size_t(std::min(kBq, d.T) * d.T);
    std::vector<float> P(blk_elems), dP(blk_elems);
    for (int64_t t0 = 0; t0 < d.T; t0 += kBq) {
      const Block blk = block_at(kf, b, d.T, t0);
      const int64_t nq = blk.t1 - blk.t0, nk = blk.t1 - blk.klo;
      const float* q_blk = q + ((b * d.T + blk.t0) * d.H + h) * d.Dk;
      const float* do_blk = dout + ((b * d.T + blk.t0) * d.H + h) * d.Dv;
      const float* k_blk = k + ((b * d.T + blk.klo) * d.H + h) * d.Dk;
      const float* v_blk = v + ((b * d.T + blk.klo) * d.H + h) * d.Dv;
      scores(q, k, d, b, h, blk, scale, P.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(nq), blasint(nk), blasint(d.Dv),
                  1.0f, do_blk, blasint(ldv), v_blk, blasint(ldv), 0.0f, dP.data(), blasint(nk));
      for (int64_t i = 0; i < nq; ++i) {
        const int64_t t = blk.t0 + i;
        const float* o = out + ((b * d.T + t) * d.H + h) * d.Dv;
        const float* go = do_blk + i * ldv;
        const float D = dot_row(go, o, d.Dv);
        float* p = P.data() + i * nk;
        mask_row(p, nk, seg, b, d.T, t, blk.klo);
        dsoftmax_row(p, dP.data() + i * nk, lse[bh * d.T + t], D, nk);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(nq), blasint(d.Dk),
                  blasint(nk), scale, dP.data(), blasint(nk), k_blk, blasint(ldk), 0.0f,
                  dq + ((b * d.T + blk.t0) * d.H + h) * d.Dk, blasint(ldk));
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(nk), blasint(d.Dk), blasint(nq),
                  scale, dP.data(), blasint(nk), q_blk, blasint(ldk), 1.0f,
                  dk + ((b * d.T + blk.klo) * d.H + h) * d.Dk, blasint(ldk));
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(nk), blasint(d.Dv), blasint(nq),
                  1.0f, P.data(), blasint(nk), do_blk, blasint(ldv), 1.0f,
                  dv + ((b * d.T + blk.klo) * d.H + h) * d.Dv, blasint(ldv));
    }
  });
}

}  // namespace ds::ops::opt
