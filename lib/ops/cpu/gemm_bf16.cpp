// Linear layer with BF16 weights (see opt.hpp linear_bf16 and gemm_kernels.hpp). Decode sizes
// (N <= 8 input rows) are memory-bound on the weight stream, so the small-M kernels read each
// BF16 weight row once (half the bytes of F32) and widen it in registers: AVX-512 loads 16
// bf16 as a __m256i, zero-extends to 32 bits and shifts left by 16 (exact), then FMAs in FP32
// through the small_nt kernel shared with the F32 path (small_nt_avx512.hpp); AVX2 does the
// same 8 at a time (small_nt_avx2.hpp, gemm_avx2.cpp); the portable flavour uses omp simd.
// Output rows are split over OpenMP threads on fixed 16-aligned edges. Prefill sizes widen the
// weight in fixed blocks of kBlock rows into a per-thread F32 buffer and run the F32
// gemm_strided on each block. Every output's summation order is independent of the thread
// count. Only functions marked DS_AVX512 use AVX-512, reached only after avx512_available().
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"   // GCC 12 masked-intrinsic false positive
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ds/core/dtype.hpp"
#include "gemm_kernels.hpp"
#include "small_nt_avx512.hpp"
#include "opt.hpp"


namespace ds::ops::opt {

namespace gemm {

void small_m_bf16_avx512(const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, float* c,
                         int64_t ldc, int64_t M, int64_t N, int64_t K) {
  switch (M) {
    case 1: small_nt<1, 8>(x, ldx, w, ldw, c, ldc, N, K, 1.0f, 0.0f); break;
    case 2: small_nt<2, 8>(x, ldx, w, ldw, c, ldc, N, K, 1.0f, 0.0f); break;
    case 3: small_nt<3, 4>(x, ldx, w, ldw, c, ldc, N, K, 1.0f, 0.0f); break;
    default: small_nt<4, 4>(x, ldx, w, ldw, c, ldc, N, K, 1.0f, 0.0f); break;
  }
}

void small_m_bf16_portable(const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, float* c,
                           int64_t ldc, int64_t M, int64_t N, int64_t K) {
  for (int64_t j = 0; j < N; ++j) {
    const uint16_t* wr = w + j * ldw;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * ldx;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < K; ++k) {
        float wf;
        const uint32_t u = uint32_t(wr[k]) << 16;
        std::memcpy(&wf, &u, 4);
        s += xm[k] * wf;
      }
      c[m * ldc + j] = s;
    }
  }
}
}  // namespace gemm

namespace {
constexpr double kParMinFlops = 1.5e6;   // as opt_gemm.cpp: below this, no fork/join
constexpr int64_t kAlign = 16;           // output-row panel edges
constexpr int64_t kBlock = 128;          // weight rows widened per F32 block (prefill)
}  // namespace

void linear_bf16(const float* x, const uint16_t* w, float* y, int64_t N, int64_t O, int64_t I,
                 int nt) {
  if (N == 0 || O == 0) return;
  if (I == 0) {
    std::fill(y, y + N * O, 0.0f);
    return;
  }
  const bool serial = matmul_flops(N, O, I) < kParMinFlops || omp_in_parallel();
  if (N <= 2 * gemm::kSmallM) {   // decode: stream the BF16 rows once per <= 4 input rows
    const auto kern = gemm::small_m_bf16_kernel();
    int parts = serial ? 1 : int(std::clamp<int64_t>(O / kAlign, 1, nt));
    auto edge = [&](int p) { return p == parts ? O : (O * p / parts) / kAlign * kAlign; };
#pragma omp parallel for num_threads(parts) schedule(static, 1) if (parts > 1)
    for (int p = 0; p < parts; ++p) {
      const int64_t lo = edge(p), len = edge(p + 1) - lo;
      if (len <= 0) continue;
      for (int64_t r = 0; r < N; r += gemm::kSmallM)
        kern(x + r * I, I, w + lo * I, I, y + r * O + lo, O, std::min(gemm::kSmallM, N - r), len,
             I);
    }
    return;
  }
  // prefill: widen kBlock weight rows at a time and run the F32 kernels on them
  const int64_t blocks = (O + kBlock - 1) / kBlock;
  const int parts = serial ? 1 : int(std::clamp<int64_t>(blocks, 1, nt));
#pragma omp parallel for num_threads(parts) schedule(static) if (parts > 1)
  for (int64_t bi = 0; bi < blocks; ++bi) {
    thread_local std::vector<float> buf;
    const int64_t lo = bi * kBlock, rows = std::min(kBlock, O - lo);
    buf.resize(size_t(rows * I));
    const uint16_t* src = w + lo * I;
    float* dst = buf.data();
#pragma omp simd
    for (int64_t i = 0; i < rows * I; ++i) dst[i] = bf16_to_f32(src[i]);
    gemm_strided(x, I, false, dst, I, true, y + lo, O, N, rows, I, 1.0f, 0.0f);
  }
}

}  // namespace ds::ops::opt
