// Native GEMM kernels (lib/ops/cpu/gemm_kernels.hpp) vs the reference matmul: every
// transpose combination, odd shapes, alpha/beta, beta = 0 over NaN, guard elements around c
// (c viewed with a wider leading dimension), and opt::matmul at 1-3 threads. Tolerance is
// relative to sum_k |a||b| per output (accumulation order differs from the reference).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/gemm_kernels.hpp"
#include "cpu/opt.hpp"
#include "cpu/ref.hpp"
#include "ops_test_util.hpp"

using namespace ds::ops;
namespace gk = ds::ops::opt::gemm;

namespace {
using Kernel = void (*)(const float*, int64_t, bool, const float*, int64_t, bool, float*, int64_t,
                        int64_t, int64_t, int64_t, float, float);

struct Case {
  int64_t M, N, K;
  bool ta, tb;
  std::vector<float> a, b, c0;
  Case(int64_t M_, int64_t N_, int64_t K_, bool ta_, bool tb_)
      : M(M_), N(N_), K(K_), ta(ta_), tb(tb_) {
    a.resize(size_t(M * K));
    b.resize(size_t(K * N));
    c0.resize(size_t(M * N));
    for (float& x : a) x = float(test::urand());
    for (float& x : b) x = float(test::urand());
    for (float& x : c0) x = float(test::urand());
  }
  float A(int64_t i, int64_t k) const { return ta ? a[size_t(k * M + i)] : a[size_t(i * K + k)]; }
  float B(int64_t k, int64_t j) const { return tb ? b[size_t(j * K + k)] : b[size_t(k * N + j)]; }
  // sum_k |a||b| + |beta c| per output: the scale of the rounding error
  double mag(int64_t i, int64_t j, float beta) const {
    double s = std::fabs(double(beta) * c0[size_t(i * N + j)]);
    for (int64_t k = 0; k < K; ++k) s += std::fabs(double(A(i, k)) * B(k, j));
    return s;
  }
};

// Runs kern on c viewed inside a buffer with a guard column on each side and guard rows; checks
// the block against ref::matmul and that no guard element changed.
void check_kernel(Kernel kern, const Case& t, float alpha, float beta, bool nan_c) {
  const int64_t ldc = t.N + 2, rows = t.M + 2;
  std::vector<float> buf(size_t(rows * ldc), test::kSentinel);
  float* c = buf.data() + ldc + 1;
  for (int64_t i = 0; i < t.M; ++i)
    for (int64_t j = 0; j < t.N; ++j) c[i * ldc + j] = nan_c ? NAN : t.c0[size_t(i * t.N + j)];
  std::vector<float> ref = t.c0;
  ref::matmul(t.a.data(), t.b.data(), ref.data(), t.M, t.N, t.K, t.ta, t.tb, alpha, beta);
  kern(t.a.data(), t.ta ? t.M : t.K, t.ta, t.b.data(), t.tb ? t.K : t.N, t.tb, c, ldc, t.M, t.N,
       t.K, alpha, beta);
  int bad = 0, guard = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t q = 0; q < ldc; ++q) {
      const int64_t i = r - 1, j = q - 1;
      const float v = buf[size_t(r * ldc + q)];
      if (i < 0 || i >= t.M || j < 0 || j >= t.N) {
        guard += v != test::kSentinel;
        continue;
      }
      const double tol = 4e-7 * double(t.K + 4) * t.mag(i, j, beta) + 1e-30;
      bad += !(std::fabs(double(v) - ref[size_t(i * t.N + j)]) <= tol);
    }
  INFO("M ", t.M, " N ", t.N, " K ", t.K, " ta ", t.ta, " tb ", t.tb, " alpha ", alpha, " beta ",
       beta, " nan_c ", nan_c);
  CHECK(bad == 0);
  CHECK(guard == 0);
}

const int64_t kDims[] = {1, 2, 3, 4, 5, 15, 16, 17, 31, 33, 64, 127, 128, 129, 300};
}  // namespace

TEST_CASE("gemm kernels: AVX-512 packed GEMM == reference over transposes and odd shapes") {
  if (!gk::avx512_available()) {
    MESSAGE("no AVX-512 on this CPU: packed kernel not exercised");
    return;
  }
  int n = 0;
  for (int64_t M : kDims)
    for (int64_t N : kDims)
      for (int64_t K : kDims) {
        if ((M * 7 + N * 3 + K) % 5 != 0 && M < 300 && N < 300 && K < 300) continue;   // thin out
        const int tr = int((M + N + K) % 4);
        Case t(M, N, K, tr & 1, tr & 2);
        const float beta = (M + K) % 3 == 0 ? 0.0f : (M + K) % 3 == 1 ? 1.0f : -0.5f;
        check_kernel(gk::gemm_avx512, t, 0.75f, beta, false);
        ++n;
      }
  CHECK(n > 100);
  for (int tr = 0; tr < 4; ++tr)   // K > KC (two K blocks) and N > NC (two N blocks)
    for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{37, 70, 600}, {13, 3100, 40}}) {
      Case t(M, N, K, tr & 1, tr & 2);
      check_kernel(gk::gemm_avx512, t, 1.0f, 0.5f, false);
      check_kernel(gk::gemm_avx512, t, -2.0f, 0.0f, true);
    }
}

TEST_CASE("gemm kernels: small-M paths (AVX-512, AVX2 and portable) == reference") {
  std::vector<Kernel> kernels{gk::small_m_portable};
  if (gk::avx512_available()) kernels.push_back(gk::small_m_avx512);
  if (gk::avx2_available()) kernels.push_back(gk::small_m_avx2);
  else MESSAGE("no AVX2 on this CPU: AVX2 small-M kernel not exercised");
  for (Kernel kern : kernels)
    for (int64_t M = 1; M <= gk::kSmallM; ++M)
      for (int64_t N : kDims)
        for (int64_t K : kDims)
          for (int tr = 0; tr < 4; ++tr) {
            Case t(M, N, K, tr & 1, tr & 2);
            const float beta = (N + K + tr) % 2 ? 0.5f : 0.0f;
            check_kernel(kern, t, 1.25f, beta, false);
            if (beta == 0.0f) check_kernel(kern, t, 1.0f, 0.0f, true);
          }
}

TEST_CASE("gemm kernels: opt::matmul at 1-3 threads, beta 0 over NaN, deterministic") {
  for (int nt = 1; nt <= 3; ++nt)
    for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 3000, 300},
                           {3, 700, 129},
                           {6, 200, 129},
                           {300, 129, 127},
                           {129, 300, 64},
                           {17, 33, 300}})
      for (int tr = 0; tr < 4; ++tr) {
        Case t(M, N, K, tr & 1, tr & 2);
        const float beta = tr == 2 ? 1.0f : 0.0f;
        auto run = [&](bool nan_c) {
          std::vector<float> c = t.c0;
          if (nan_c) std::fill(c.begin(), c.end(), NAN);
          opt::matmul(t.a.data(), t.b.data(), c.data(), M, N, K, t.ta, t.tb, 1.0f, beta, nt);
          return c;
        };
        std::vector<float> ref = t.c0;
        ref::matmul(t.a.data(), t.b.data(), ref.data(), M, N, K, t.ta, t.tb, 1.0f, beta);
        const std::vector<float> c1 = run(beta == 0.0f), c2 = run(beta == 0.0f);
        int bad = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            const double tol = 4e-7 * double(K + 4) * t.mag(i, j, beta);
            bad += !(std::fabs(double(c1[size_t(i * N + j)]) - ref[size_t(i * N + j)]) <= tol);
          }
        INFO("nt ", nt, " M ", M, " N ", N, " K ", K, " tr ", tr);
        CHECK(bad == 0);
        CHECK(c1 == c2);
      }
}

TEST_CASE("gemm kernels: DS_GEMM picks the small-M flavour (ctest runs this under each value)") {
  const char* env = std::getenv("DS_GEMM");
  const std::string v = env ? env : "";
  INFO("DS_GEMM=", v);
  const bool portable = v == "portable";
  CHECK(gk::mode() == (v == "blas"       ? gk::Mode::blas
                       : portable        ? gk::Mode::portable
                                         : gk::Mode::native));
  const gk::SmallMKernel f32 = portable                 ? gk::small_m_portable
                               : gk::avx512_available() ? gk::small_m_avx512
                               : gk::avx2_available()   ? gk::small_m_avx2
                                                        : gk::small_m_portable;
  const gk::SmallMBf16Kernel bf16 = portable                 ? gk::small_m_bf16_portable
                                    : gk::avx512_available() ? gk::small_m_bf16_avx512
                                    : gk::avx2_available()   ? gk::small_m_bf16_avx2
                                                             : gk::small_m_bf16_portable;
  CHECK((gk::small_m_kernel() == f32));
  CHECK((gk::small_m_bf16_kernel() == bf16));
}
