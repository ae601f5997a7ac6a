// Portable FP8 GEMM (see fp8_gemm.cuh): one 128x128 tile of c per block of 8 warps (4 along M
// x 2 along N, 32x64 each); per 128-wide K block the operands are staged in shared memory
// (rows padded to 144 bytes so that the fragment reads hit 32 distinct banks), four
// mma.sync.m16n8k32 E4M3 steps give the block's FP32 partial sums, which are then promoted:
// acc = acc + (partial * a_scale) * b_scale, the reference's order of roundings. Rows, columns
// and K beyond the matrix are zero-filled / skipped. Only the summation order differs from
// the CPU reference (on the H200 mma.sync's FP8 sums matched the FP32 GEMM of the dequantised
// operands to nmse ~1e-12; wgmma's, with fewer carried bits as the DeepSeek-V3 report notes,
// to ~1e-8 — the 128-wide promotion bounds that error).
// Speed (H200, M = 4096): ~55-99 TFLOP/s, a quarter of the wgmma kernel; single-buffered, so
// meant for the shapes the Hopper kernel does not take.
#include "kernels/common.cuh"
#include "kernels/fp8_gemm.cuh"

namespace ds::cuda {

namespace {

constexpr int kBM = 128, kBN = 128, kBK = 128, kPitch = kBK + 16;
constexpr int kThreads = 256;

__device__ __forceinline__ float scale_at(const Fp8Operand& o, int64_t row, int64_t kb,
                                          int64_t sc) {
  return o.rows_per_scale == 0 ? o.scales[0] : o.scales[(row / o.rows_per_scale) * sc + kb];
}

// Tile order: groups of 8 tile rows sweep all tile columns, so that concurrently running
// blocks share operand rows in L2.
__device__ __forceinline__ void tile_of(int64_t id, int64_t tiles_m, int64_t tiles_n,
                                        int64_t* tm, int64_t* tn) {
  constexpr int64_t kGroup = 8;
  const int64_t width = kGroup * tiles_n, group = id / width, first = group * kGroup;
  const int64_t rows = tiles_m - first < kGroup ? tiles_m - first : kGroup;
  *tm = first + (id % width) % rows;
  *tn = (id % width) / rows;
}

// Stage rows [r0, r0 + 128) x K columns [k0, k0 + 128) of codes (rows, K) into s (128 x kPitch).
template <bool kVec>
__device__ __forceinline__ void stage(uint8_t* s, const uint8_t* __restrict__ codes,
                                      int64_t rows, int64_t K, int64_t r0, int64_t k0) {
  if constexpr (kVec) {
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int e = threadIdx.x + kThreads * t, r = e >> 3, ch = e & 7;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r0 + r < rows && k0 + ch * 16 < K)
        v = *reinterpret_cast<const uint4*>(codes + (r0 + r) * K + k0 + ch * 16);
      *reinterpret_cast<uint4*>(s + r * kPitch + ch * 16) = v;
    }
  } else {
    for (int e = threadIdx.x; e < kBM * kBK; e += kThreads) {
      const int r = e >> 7, k = e & 127;
      s[r * kPitch + k] = (r0 + r < rows && k0 + k < K) ? codes[(r0 + r) * K + k0 + k] : 0;
    }
  }
}

__device__ __forceinline__ void mma_e4m3(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();   // never launched below sm_89 (the build targets sm_90)
#endif
}

template <bool kVec>
__global__ void __launch_bounds__(kThreads) fp8_gemm_fallback_kernel(Fp8Operand a, Fp8Operand b,
                                                                     float* __restrict__ c,
                                                                     int64_t M, int64_t N,
                                                                     int64_t K) {
  __shared__ __align__(16) uint8_t sa[kBM * kPitch];
  __shared__ __align__(16) uint8_t sb[kBN * kPitch];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp & 3, wn = warp >> 2;   // warp tile rows wm*32, columns wn*64
  int64_t tm, tn;
  tile_of(blockIdx.x, (M + kBM - 1) / kBM, (N + kBN - 1) / kBN, &tm, &tn);
  const int64_t m0 = tm * kBM, n0 = tn * kBN;
  const int64_t kblocks = (K + kBK - 1) / kBK;

  // Rows and columns this thread owns (clamped for the scale reads; stores are guarded).
  int64_t rows[2][2], cols[8][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = m0 + wm * 32 + mt * 16 + g + 8 * h;
      rows[mt][h] = r < M ? r : M - 1;
    }
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t n = n0 + wn * 64 + nt * 8 + 2 * t + h;
      cols[nt][h] = n < N ? n : N - 1;
    }

  float acc[2][8][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

  for (int64_t kb = 0; kb < kblocks; ++kb) {
    __syncthreads();   // the previous block's fragments have been read
    stage<kVec>(sa, a.codes, M, K, m0, kb * kBK);
    stage<kVec>(sb, b.codes, N, K, n0, kb * kBK);
    __syncthreads();

    float part[2][8][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) part[mt][nt][i] = 0.0f;

#pragma unroll
    for (int ks = 0; ks < kBK / 32; ++ks) {
      // A fragment (m16 x k32, row): {row g, k 4t..4t+3}, {row g+8, ...}, then k + 16.
      uint32_t af[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const uint8_t* p = sa + (wm * 32 + mt * 16 + g) * kPitch + ks * 32 + 4 * t;
        af[mt][0] = *reinterpret_cast<const uint32_t*>(p);
        af[mt][1] = *reinterpret_cast<const uint32_t*>(p + 8 * kPitch);
        af[mt][2] = *reinterpret_cast<const uint32_t*>(p + 16);
        af[mt][3] = *reinterpret_cast<const uint32_t*>(p + 8 * kPitch + 16);
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        // B fragment (k32 x n8, col): column n = g, k 4t..4t+3 and k + 16: b's row n.
        const uint8_t* p = sb + (wn * 64 + nt * 8 + g) * kPitch + ks * 32 + 4 * t;
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(p);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(p + 16);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) mma_e4m3(part[mt][nt], af[mt], b0, b1);
      }
    }

    // Promotion. Accumulator fragment: i = 0, 1 row g, columns 2t, 2t+1; i = 2, 3 row g + 8.
    const int64_t sca = (K + kBK - 1) / kBK;
    float s_a[2][2], s_b[8][2];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) s_a[mt][h] = scale_at(a, rows[mt][h], kb, sca);
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h) s_b[nt][h] = scale_at(b, cols[nt][h], kb, sca);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          acc[mt][nt][i] = __fadd_rn(
              acc[mt][nt][i],
              __fmul_rn(__fmul_rn(part[mt][nt][i], s_a[mt][i >> 1]), s_b[nt][i & 1]));
  }

#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t r = m0 + wm * 32 + mt * 16 + g + 8 * (i >> 1);
        const int64_t n = n0 + wn * 64 + nt * 8 + 2 * t + (i & 1);
        if (r < M && n < N) c[r * N + n] = acc[mt][nt][i];
      }
}

}  // namespace

void fp8_gemm_nt_fallback(const Fp8Operand& a, const Fp8Operand& b, float* c, int64_t M,
                          int64_t N, int64_t K) {
  if (M == 0 || N == 0) return;
  if (K == 0) {   // empty sums
    DS_CUDA_CHECK(cudaMemsetAsync(c, 0, size_t(M * N) * sizeof(float), stream()));
    return;
  }
  const int64_t tiles = cdiv(M, kBM) * cdiv(N, kBN);
  const bool vec = K % 16 == 0 && (reinterpret_cast<uintptr_t>(a.codes) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(b.codes) & 15) == 0;
  if (vec)
    fp8_gemm_fallback_kernel<true><<<unsigned(tiles), kThreads, 0, stream()>>>(a, b, c, M, N, K);
  else
    fp8_gemm_fallback_kernel<false><<<unsigned(tiles), kThreads, 0, stream()>>>(a, b, c, M, N, K);
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
