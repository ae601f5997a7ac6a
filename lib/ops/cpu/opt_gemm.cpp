// Optimised GEMM: row-major cblas_sgemm with OpenBLAS kept single-threaded (set_cpu_threads)
// and the output split here into nt panels along the larger of M and N, one OpenMP thread
// per panel, so OpenMP is the only threading runtime. c(M,N) = alpha * op(a) @ op(b) + beta*c.
// Deterministic for a given thread count (fixed panels); panel edges move with nt, so results
// may differ in the last bits between thread counts. Small products (< kParMinFlops) and
// calls from inside a parallel region run on the calling thread. Each block goes to the native
// kernels of gemm_kernels.hpp (small-M streaming path in chunks of 4 rows for M <= 8, in
// AVX-512, AVX2 or portable code; packed AVX-512 GEMM where the CPU has it) or else to
// cblas_sgemm; DS_GEMM=blas forces OpenBLAS, DS_GEMM=portable the portable small-M kernels.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ds/core/env.hpp"
#include "gemm_kernels.hpp"

#include "opt.hpp"

namespace ds::ops::opt {

namespace {
constexpr double kParMinFlops = 1.5e6;   // below this a fork/join costs more than it saves
constexpr int64_t kAlign = 16;           // panel edges on multiples of the sgemm unroll

bool native_enabled() { return gemm::mode() != gemm::Mode::blas; }
const EnvCheck kGemmEnv([] { (void)gemm::mode(); });

// Where the packed AVX-512 kernel beats OpenBLAS (measured with ds_bench_ops).
bool use_avx512(int64_t m, int64_t n, int64_t k) { return m >= 8 && n >= 8 && k >= 8; }

// One sgemm on the (m0..m0+m, n0..n0+n) block of c.
void sgemm_block(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K,
                 bool ta, bool tb, float alpha, float beta, int64_t m0, int64_t m, int64_t n0,
                 int64_t n) {
  const int64_t lda = std::max<int64_t>(1, ta ? M : K);   // a (K,M) or (M,K)
  const int64_t ldb = std::max<int64_t>(1, tb ? K : N);   // b (N,K) or (K,N)
  const float* ap = ta ? a + m0 : a + m0 * K;
  const float* bp = tb ? b + n0 * K : b + n0;
  gemm_strided(ap, lda, ta, bp, ldb, tb, c + m0 * N + n0, N, m, n, K, alpha, beta);
}
}  // namespace

gemm::Mode gemm::mode() {
  static const Mode m = [] {
    const std::string v = env_choice("DS_GEMM", {"native", "portable", "blas"});
    return v == "blas" ? Mode::blas : v == "portable" ? Mode::portable : Mode::native;
  }();
  return m;
}

void gemm_strided(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb,
                  float* c, int64_t ldc, int64_t m, int64_t n, int64_t K, float alpha,
                  float beta) {
  if (alpha != 0.0f && native_enabled()) {
    if (m <= 2 * gemm::kSmallM) {   // decode sizes: stream op(b) once per <= 4 rows
      const auto kern = gemm::small_m_kernel();
      for (int64_t r = 0; r < m; r += gemm::kSmallM)
        kern(ta ? a + r : a + r * lda, lda, ta, b, ldb, tb, c + r * ldc, ldc,
             std::min(gemm::kSmallM, m - r), n, K, alpha, beta);
      return;
    }
    if (gemm::mode() == gemm::Mode::native && gemm::avx512_available() && use_avx512(m, n, K)) {
      gemm::gemm_avx512(a, lda, ta, b, ldb, tb, c, ldc, m, n, K, alpha, beta);
      return;
    }
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              blasint(m), blasint(n), blasint(K), alpha, a, blasint(lda), b, blasint(ldb), beta,
              c, blasint(ldc));
}

double matmul_flops(int64_t M, int64_t N, int64_t K) {
  return 2.0 * double(M) * double(N) * double(K);
}

void matmul(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K,
            bool trans_a, bool trans_b, float alpha, float beta, int nt) {
  if (M == 0 || N == 0) return;
  if (K == 0) {   // empty sum: c = beta * c (BLAS semantics, beta 0 overwrites)
    for (int64_t i = 0; i < M * N; ++i) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return;
  }
  const bool rows = M >= N;                       // split the larger output dimension
  const int64_t L = rows ? M : N;
  int parts = int(std::min<int64_t>(nt, L / kAlign));
  if (matmul_flops(M, N, K) < kParMinFlops || omp_in_parallel()) parts = 1;
  if (parts <= 1) {
    sgemm_block(a, b, c, M, N, K, trans_a, trans_b, alpha, beta, 0, M, 0, N);
    return;
  }
  // panel p covers [edge(p), edge(p+1)), edges rounded to kAlign
  auto edge = [&](int p) { return p == parts ? L : (L * p / parts) / kAlign * kAlign; };
#pragma omp parallel for num_threads(parts) schedule(static, 1)
  for (int p = 0; p < parts; ++p) {
    const int64_t lo = edge(p), len = edge(p + 1) - lo;
    if (len <= 0) continue;
    if (rows) sgemm_block(a, b, c, M, N, K, trans_a, trans_b, alpha, beta, lo, len, 0, N);
    else sgemm_block(a, b, c, M, N, K, trans_a, trans_b, alpha, beta, 0, M, lo, len);
  }
}

}  // namespace ds::ops::opt
