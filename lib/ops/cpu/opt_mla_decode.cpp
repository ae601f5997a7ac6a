// Optimised absorbed-MLA inference kernels. Attention: consecutive rows of the same cache slot
// (a prefill chunk) form one block, split into kRows-row tiles; per tile the H heads of every
// row are one (rows*H, R) query matrix, so the scores are two SGEMMs against the slot's latents
// and rope keys (S = Q C^T + Qpe Kpe^T), the softmax masks j >= len[n] per row, and the latent
// output is one more SGEMM (P C). Tiles run in parallel (OpenBLAS single-threaded inside);
// results do not depend on the thread count. A BF16 cache: the tile's visible latent and
// rope-key rows are first widened exactly into F32 buffers, then the same three SGEMMs run (the
// result of an F32 cache holding the widened values). head_matmul: one strided GEMM per head
// (opt::gemm_strided).
// reference: spec §2.1; FlashMLA's "MQA mode" (576-d keys, 512-d values) for the layout idea.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ds/core/dtype.hpp"
#include "mla_kernels.hpp"
#include "opt.hpp"

namespace ds::ops::opt {

namespace {

constexpr int64_t kRows = 16;   // query rows (tokens) per attention tile

struct Tile { int64_t n0, n1, nk; };   // rows [n0, n1) of one slot, nk = max visible keys

std::vector<Tile> make_tiles(const int32_t* slot, const int32_t* len, int64_t N) {
  std::vector<Tile> tiles;
  for (int64_t n = 0; n < N;) {
    int64_t e = n + 1;
    while (e < N && e - n < kRows && slot[e] == slot[n]) ++e;
    int64_t nk = 0;
    for (int64_t i = n; i < e; ++i) nk = std::max<int64_t>(nk, len[i]);
    tiles.push_back({n, e, nk});
    n = e;
  }
  return tiles;
}

// Runs body(i) for i < n; in parallel (single-threaded BLAS inside) when nt > 1 and n > 1.
template <class F>
void parallel_items(int64_t n, int nt, F&& body) {
  const bool par = nt > 1 && n > 1;
  const int saved = openblas_get_num_threads();
  if (par) openblas_set_num_threads(1);
#pragma omp parallel for num_threads(par ? nt : 1) schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) body(i);
  if (par) openblas_set_num_threads(saved);
}

// Masked softmax of one score row s (nk) over its first `vis` entries; the rest become 0.
void softmax_row(float* s, int64_t nk, int64_t vis) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < vis; ++j) mx = std::max(mx, s[j]);
  double z = 0;
  for (int64_t j = 0; j < vis; ++j) {
    s[j] = std::exp(s[j] - mx);
    z += s[j];
  }
  const float inv = float(1.0 / z);
  for (int64_t j = 0; j < vis; ++j) s[j] *= inv;
  std::fill(s + vis, s + nk, 0.0f);
}

// The first n cache elements at p as F32: an F32 cache in place, BF16 codes widened into buf.
const float* widen(const float* p, int64_t n, std::vector<float>& buf) {
  (void)n;
  (void)buf;
  return p;
}
const float* widen(const uint16_t* p, int64_t n, std::vector<float>& buf) {
  buf.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = bf16_to_f32(p[i]);
  return buf.data();
}

template <class CT>
void latent_attention(const float* q_lat, const float* q_pe, const CT* ckv, const CT* kpe,
                      const int32_t* slot, const int32_t* len, float scale, float* out,
                      const MlaDims& d, int nt) {
  const std::vector<Tile> tiles = make_tiles(slot, len, d.N);
  parallel_items(int64_t(tiles.size()), nt, [&](int64_t ti) {
    const Tile& t = tiles[size_t(ti)];
    const int64_t M = (t.n1 - t.n0) * d.H;                  // score rows: (row, head)
    std::vector<float> cbuf, kbuf;                            // BF16 cache: widened rows
    const float* C = widen(ckv + int64_t(slot[t.n0]) * d.L * d.R, t.nk * d.R, cbuf);   // (nk, R)
    const float* K = widen(kpe + int64_t(slot[t.n0]) * d.L * d.Dr, t.nk * d.Dr, kbuf); // (nk, Dr)
    std::vector<float> S(size_t(M * t.nk));                   // (M, nk)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(M), blasint(t.nk),
                blasint(d.R), scale, q_lat + t.n0 * d.H * d.R, blasint(d.R), C, blasint(d.R),
                0.0f, S.data(), blasint(t.nk));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(M), blasint(t.nk),
                blasint(d.Dr), scale, q_pe + t.n0 * d.H * d.Dr, blasint(d.Dr), K,
                blasint(d.Dr), 1.0f, S.data(), blasint(t.nk));
    for (int64_t m = 0; m < M; ++m)
      softmax_row(S.data() + m * t.nk, t.nk, len[t.n0 + m / d.H]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(M), blasint(d.R),
                blasint(t.nk), 1.0f, S.data(), blasint(t.nk), C, blasint(d.R), 0.0f,
                out + t.n0 * d.H * d.R, blasint(d.R));
  });
}

}  // namespace

void mla_latent_attention(const float* q_lat, const float* q_pe, const float* ckv,
                          const float* kpe, const int32_t* slot, const int32_t* len, float scale,
                          float* out, const MlaDims& d, int nt) {
  latent_attention(q_lat, q_pe, ckv, kpe, slot, len, scale, out, d, nt);
}

void mla_latent_attention(const float* q_lat, const float* q_pe, const uint16_t* ckv,
                          const uint16_t* kpe, const int32_t* slot, const int32_t* len,
                          float scale, float* out, const MlaDims& d, int nt) {
  latent_attention(q_lat, q_pe, ckv, kpe, slot, len, scale, out, d, nt);
}

void head_matmul(const float* x, const float* w, bool trans_w, float* y, int64_t N, int64_t H,
                 int64_t I, int64_t O, int nt) {
  if (N == 0 || O == 0) return;
  if (I == 0) {
    std::fill(y, y + N * H * O, 0.0f);
    return;
  }
  parallel_items(H, nt, [&](int64_t h) {
    gemm_strided(x + h * I, H * I, false, w + h * I * O, trans_w ? I : O, trans_w, y + h * O,
                 H * O, N, O, I, 1.0f, 0.0f);
  });
}

void set_rows(const float* src, const int32_t* rows, float* dst, int64_t M, int64_t C, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (M * C > (1 << 16))
  for (int64_t m = 0; m < M; ++m)
    std::memcpy(dst + int64_t(rows[m]) * C, src + m * C, size_t(C) * sizeof(float));
}

void set_rows(const uint16_t* src, const int32_t* rows, uint16_t* dst, int64_t M, int64_t C,
              int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (M * C > (1 << 16))
  for (int64_t m = 0; m < M; ++m)
    std::memcpy(dst + int64_t(rows[m]) * C, src + m * C, size_t(C) * sizeof(uint16_t));
}

void set_rows(const float* src, const int32_t* rows, uint16_t* dst, int64_t M, int64_t C, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (M * C > (1 << 16))
  for (int64_t m = 0; m < M; ++m) {
    const float* s = src + m * C;
    uint16_t* o = dst + int64_t(rows[m]) * C;
    for (int64_t c = 0; c < C; ++c) o[c] = f32_to_bf16(s[c]);
  }
}

}  // namespace ds::ops::opt
