// BF16 tensor-core attention kernels (forward, dQ, dK/dV) and their launchers, reached from
// attention_forward / attention_backward (flash_attention_simt.cu) through the entry points
// declared in flash_attention_common.cuh. Split from the former flash_attention.cu (kept under
// the project's file-size limit); the algorithm overview is in flash_attention_common.cuh.
//   tensor path: BF16 mma.sync m16n8k16 with FP32 accumulation; inputs converted to BF16 once
//     per call (a pass over q/k/v/dO) so tiles stream with cp.async + ldmatrix; forward warps
//     own 32 query rows (two m-tiles share each K/V fragment), backward warps 16 rows / keys;
//     P and dS are re-packed from the accumulator layout into A fragments in registers (the
//     FA2 trick). softmax, lse, D and all accumulators stay FP32.
//     Measured on an H200 (B 2, T 4096, H 16, Dk 192, Dv 128, causal, conversion included):
//     forward ~160-180 TFLOP/s, backward ~120-127 (5-GEMM accounting); exact path ~3-4.
// reference: Dao, "FlashAttention-2" (2023), Algorithms 1-2; PTX ISA mma.m16n8k16 fragments.
#include <cmath>

#include "kernels/bf16_rows.cuh"
#include "kernels/flash_attention_common.cuh"
#include "kernels/flash_attention_softmax.cuh"
#include "kernels/mma_sm80.cuh"

namespace ds::cuda {
using namespace flash;
namespace {

// ---- BF16 tensor-core kernels -----------------------------------------------------------------
__device__ __forceinline__ uint32_t su32(const void* p) { return ptx::smem_addr(p); }
using namespace ptx;   // cp16 (zero-filling 16-byte cp.async), cp_commit/wait, ldsm4(t)
// c += a (16x16, row) * b (16x8, col), BF16 in, FP32 accumulate.
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  ptx::mma_bf16(c, a, b0, b1);
}
// Per-lane ldmatrix addresses (element offsets in a tile with row stride ld):
//   A (rows r0.., k0..): the 4 8x8 blocks of a 16x16 A fragment.
__device__ __forceinline__ int a_off(int lane, int r0, int k0, int ld) {
  return (r0 + (lane & 15)) * ld + k0 + (lane >> 4) * 8;
}
//   B from an [n][k] tile (k contiguous), non-trans: b0,b1 of n-tiles n0 and n0+8.
__device__ __forceinline__ int bn_off(int lane, int n0, int k0, int ld) {
  return (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8;
}
//   B from a [k][n] tile (n contiguous), trans: b0,b1 of n-tiles n0 and n0+8.
__device__ __forceinline__ int bt_off(int lane, int k0, int n0, int ld) {
  return (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8;
}

// rows [r0, r0 + ROWS) of one head of a BF16 (.., D) tensor (row stride rs) -> smem (ROWS, DP+8),
// zero past nvalid rows and past D columns (D multiple of 8).
template <int DP, int ROWS, int NT>
__device__ __forceinline__ void tc_load(bf16* dst, const bf16* src, int64_t rs, int r0, int nvalid,
                                        int D) {
  constexpr int CH = DP / 8;
  for (int c = threadIdx.x; c < ROWS * CH; c += NT) {
    const int r = c / CH, cc = c - r * CH;
    const bool ok = r < nvalid && cc * 8 < D;
    cp16(su32(dst + r * (DP + 8) + cc * 8), ok ? src + int64_t(r0 + r) * rs + cc * 8 : src, ok);
  }
}

// S (16 x 8*NT) += A (16 rows at ar of a [row][k] tile, stride lda) x B^T, B an [n][k] tile
// (rows n0.., stride ldb), over all KP columns: padding columns are zero in shared memory, and
// a runtime bound here would stop the compiler from pipelining ldmatrix across k-steps.
template <int KP, int NT>
__device__ __forceinline__ void mma_abt(float (&s)[NT][4], const bf16* A, int ar, int lda,
                                        const bf16* B, int ldb, int lane) {
#pragma unroll
  for (int kk = 0; kk < KP / 16; ++kk) {
    uint32_t a[4];
    ldsm4(a, su32(A + a_off(lane, ar, kk * 16, lda)));
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      ldsm4(b, su32(B + bn_off(lane, np * 16, kk * 16, ldb)));
      mma(s[2 * np], a, b[0], b[1]);
      mma(s[2 * np + 1], a, b[2], b[3]);
    }
  }
}
// O (16 x 8*NO) += P (16 x 16*KT, accumulator layout) x V, V a [k][n] tile (stride ldv), over
// all NO*8 output columns (padding columns come out zero and are not stored).
template <int KT2, int NO>
__device__ __forceinline__ void mma_pv(float (&o)[NO][4], const float (&p)[KT2][4],
                                       const bf16* V, int ldv, int lane) {
#pragma unroll
  for (int kk = 0; kk < KT2 / 2; ++kk) {
    uint32_t a[4];
    acc_to_a(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
    for (int dp = 0; dp < NO / 2; ++dp) {
      uint32_t b[4];
      ldsm4t(b, su32(V + bt_off(lane, kk * 16, dp * 16, ldv)));
      mma(o[2 * dp], a, b[0], b[1]);
      mma(o[2 * dp + 1], a, b[2], b[3]);
    }
  }
}

// Forward. grid (cdiv(T, 16*MT*NW), B*H), 32*NW threads; smem Q (BQ, DK+8), K 2x(BK, DK+8),
// V 2x(BK, DV+8). Warp w owns query rows q0 + 16*MT*w + [0, 16*MT): MT m-tiles share every
// K/V fragment read from shared memory (half the ldmatrix traffic per mma at MT = 2).
template <int DK, int DV, int BK, int NW, int MT, int ST>
__global__ void __launch_bounds__(NW * 32, 1)
    tc_fwd_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                  const bf16* __restrict__ v, const int32_t* __restrict__ seg,
                  const int32_t* __restrict__ kfirst, float scale, float* __restrict__ out,
                  float* __restrict__ lse, int T, int H, int Dk, int Dv) {
  constexpr int WR = 16 * MT, BQ = WR * NW, SK = DK + 8, SV = DV + 8, NT = NW * 32;
  extern __shared__ __align__(16) unsigned char smraw[];
  __shared__ int bound;
  bf16* Qs = reinterpret_cast<bf16*>(smraw);
  bf16* Ks = Qs + BQ * SK;
  bf16* Vs = Ks + ST * BK * SK;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;
  const int64_t rq = int64_t(H) * Dk, rv = int64_t(H) * Dv;
  const int64_t head = int64_t(b) * T * H + h;
  const int32_t* sb = seg ? seg + int64_t(b) * T : nullptr;
  const int klo = block_klo(kfirst, int64_t(b) * T, q0, T, BQ, &bound);
  const int khi = min(q0 + BQ, T);
  const int kt0 = klo / BK, kt1 = (khi + BK - 1) / BK;
  // tiles kt0 .. kt0+ST-2 in flight before the loop (one commit group each, Q in the first)
  tc_load<DK, BQ, NT>(Qs, q + head * Dk, rq, q0, T - q0, Dk);
#pragma unroll
  for (int st = 0; st < ST - 1; ++st) {
    const int nb = (kt0 + st) * BK;
    if (kt0 + st < kt1) {
      tc_load<DK, BK, NT>(Ks + st * BK * SK, k + head * Dk, rq, nb, T - nb, Dk);
      tc_load<DV, BK, NT>(Vs + st * BK * SV, v + head * Dv, rv, nb, T - nb, Dv);
    }
    cp_commit();
  }
  const int wr = warp * WR;
  int i0[MT], i1[MT], s0[MT], s1[MT];
  float m0[MT], m1[MT], l0[MT], l1[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    i0[mt] = q0 + wr + mt * 16 + (lane >> 2);
    i1[mt] = i0[mt] + 8;
    s0[mt] = sb && i0[mt] < T ? sb[i0[mt]] : 0;
    s1[mt] = sb && i1[mt] < T ? sb[i1[mt]] : 0;
    m0[mt] = m1[mt] = -INFINITY;
    l0[mt] = l1[mt] = 0.f;
  }
  const float sl = scale * kLog2e;
  float o[MT][DV / 8][4] = {};
  for (int kt = kt0; kt < kt1; ++kt) {
    const int buf = (kt - kt0) % ST;
    {   // refill the buffer consumed in the previous iteration (guarded by its trailing sync)
      const int pk = kt + ST - 1, pb = (pk - kt0) % ST, nb = pk * BK;
      if (pk < kt1) {
        tc_load<DK, BK, NT>(Ks + pb * BK * SK, k + head * Dk, rq, nb, T - nb, Dk);
        tc_load<DV, BK, NT>(Vs + pb * BK * SV, v + head * Dv, rv, nb, T - nb, Dv);
      }
      cp_commit();   // possibly empty: keeps one group per tile
      cp_wait<ST - 1>();
    }
    __syncthreads();
    const int kb = kt * BK;
    if (kb <= q0 + wr + WR - 1) {   // this warp sees some key of the tile
      const bf16* Kb = Ks + buf * BK * SK;
      const bf16* Vb = Vs + buf * BK * SV;
      float s[MT][BK / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < DK / 16; ++kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          ldsm4(a[mt], su32(Qs + a_off(lane, wr + mt * 16, kk * 16, SK)));
#pragma unroll
        for (int np = 0; np < BK / 16; ++np) {
          uint32_t bb[4];
          ldsm4(bb, su32(Kb + bn_off(lane, np * 16, kk * 16, SK)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma(s[mt][2 * np], a[mt], bb[0], bb[1]);
            mma(s[mt][2 * np + 1], a[mt], bb[2], bb[3]);
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int r0 = q0 + wr + mt * 16;   // first row of the m-tile
        const bool need = sb || kb + BK - 1 > r0 || kb + BK > T || r0 + 16 > T;
        softmax_step<BK / 8, DV / 8>(s[mt], o[mt], m0[mt], m1[mt], l0[mt], l1[mt], sl, need,
                                     i0[mt], i1[mt], kb, T, sb, s0[mt], s1[mt], lane);
      }
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) acc_to_a(a[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
        for (int dp = 0; dp < DV / 16; ++dp) {
          uint32_t bb[4];
          ldsm4t(bb, su32(Vb + bt_off(lane, kk * 16, dp * 16, SV)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma(o[mt][2 * dp], a[mt], bb[0], bb[1]);
            mma(o[mt][2 * dp + 1], a[mt], bb[2], bb[3]);
          }
        }
      }
    }
    __syncthreads();   // the buffer is refilled next iteration
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float L0 = l0[mt], L1 = l1[mt];
    L0 += __shfl_xor_sync(0xffffffffu, L0, 1);
    L0 += __shfl_xor_sync(0xffffffffu, L0, 2);
    L1 += __shfl_xor_sync(0xffffffffu, L1, 1);
    L1 += __shfl_xor_sync(0xffffffffu, L1, 2);
    const float inv0 = L0 > 0.f ? 1.f / L0 : 0.f, inv1 = L1 > 0.f ? 1.f / L1 : 0.f;
    const int r0 = i0[mt], r1 = i1[mt];
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt) {
      const int col = nt * 8 + (lane & 3) * 2;
      if (col >= Dv) break;
      if (r0 < T)
        *reinterpret_cast<float2*>(out + (head + int64_t(r0) * H) * Dv + col) =
            make_float2(o[mt][nt][0] * inv0, o[mt][nt][1] * inv0);
      if (r1 < T)
        *reinterpret_cast<float2*>(out + (head + int64_t(r1) * H) * Dv + col) =
            make_float2(o[mt][nt][2] * inv1, o[mt][nt][3] * inv1);
    }
    if ((lane & 3) == 0) {
      const int64_t lb = (int64_t(b) * H + h) * T;
      if (r0 < T) lse[lb + r0] = m0[mt] * kLn2 + logf(L0);
      if (r1 < T) lse[lb + r1] = m1[mt] * kLn2 + logf(L1);
    }
  }
}

// dQ pass. grid (cdiv(T, 16*NW), B*H); smem Q (BQ, DK+8), dO (BQ, DV+8), K 2x(BK, DK+8),
// V 2x(BK, DV+8).
template <int DK, int DV, int BK, int NW>
__global__ void __launch_bounds__(NW * 32, 1)
    tc_dq_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                 const bf16* __restrict__ v, const bf16* __restrict__ dout,
                 const int32_t* __restrict__ seg, const int32_t* __restrict__ kfirst,
                 const float* __restrict__ lse, const float* __restrict__ Dd, float scale,
                 float* __restrict__ dq, int T, int H, int Dk, int Dv) {
  constexpr int BQ = 16 * NW, SK = DK + 8, SV = DV + 8, NT = NW * 32;
  extern __shared__ __align__(16) unsigned char smraw[];
  __shared__ int bound;
  bf16* Qs = reinterpret_cast<bf16*>(smraw);
  bf16* dOs = Qs + BQ * SK;
  bf16* Ks = dOs + BQ * SV;
  bf16* Vs = Ks + 2 * BK * SK;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;
  const int64_t rq = int64_t(H) * Dk, rv = int64_t(H) * Dv;
  const int64_t head = int64_t(b) * T * H + h, lb = (int64_t(b) * H + h) * T;
  const int32_t* sb = seg ? seg + int64_t(b) * T : nullptr;
  const int klo = block_klo(kfirst, int64_t(b) * T, q0, T, BQ, &bound);
  const int khi = min(q0 + BQ, T);
  const int kt0 = klo / BK, kt1 = (khi + BK - 1) / BK;
  tc_load<DK, BQ, NT>(Qs, q + head * Dk, rq, q0, T - q0, Dk);
  tc_load<DV, BQ, NT>(dOs, dout + head * Dv, rv, q0, T - q0, Dv);
  tc_load<DK, BK, NT>(Ks, k + head * Dk, rq, kt0 * BK, T - kt0 * BK, Dk);
  tc_load<DV, BK, NT>(Vs, v + head * Dv, rv, kt0 * BK, T - kt0 * BK, Dv);
  cp_commit();
  const int wr = warp * 16;
  const int i0 = q0 + wr + (lane >> 2), i1 = i0 + 8;
  const int s0 = sb && i0 < T ? sb[i0] : 0, s1 = sb && i1 < T ? sb[i1] : 0;
  const float sl = scale * kLog2e;
  const float L0 = i0 < T ? lse[lb + i0] * kLog2e : 0.f, L1 = i1 < T ? lse[lb + i1] * kLog2e : 0.f;
  const float D0 = i0 < T ? Dd[lb + i0] : 0.f, D1 = i1 < T ? Dd[lb + i1] : 0.f;
  float acc[DK / 8][4] = {};
  for (int kt = kt0; kt < kt1; ++kt) {
    const int buf = (kt - kt0) & 1;
    if (kt + 1 < kt1) {
      const int nb = (kt + 1) * BK;
      tc_load<DK, BK, NT>(Ks + (buf ^ 1) * BK * SK, k + head * Dk, rq, nb, T - nb, Dk);
      tc_load<DV, BK, NT>(Vs + (buf ^ 1) * BK * SV, v + head * Dv, rv, nb, T - nb, Dv);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    const int kb = kt * BK;
    if (kb <= q0 + wr + 15) {
      const bf16* Kb = Ks + buf * BK * SK;
      const bf16* Vb = Vs + buf * BK * SV;
      float s[BK / 8][4] = {}, dp[BK / 8][4] = {};
      mma_abt<DK, BK / 8>(s, Qs, wr, SK, Kb, SK, lane);
      mma_abt<DV, BK / 8>(dp, dOs, wr, SV, Vb, SV, lane);
      const bool need = sb || kb + BK - 1 > q0 + wr || kb + BK > T || q0 + wr + 16 > T;
#pragma unroll
      for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const bool lo = c < 2;
          float p = fast_exp2(s[nt][c] * sl - (lo ? L0 : L1));
          if (need) {
            const int j = kb + nt * 8 + (lane & 3) * 2 + (c & 1);
            if (!(lo ? visible(i0, j, T, sb, s0) : visible(i1, j, T, sb, s1))) p = 0.f;
          }
          s[nt][c] = p * (dp[nt][c] - (lo ? D0 : D1));   // dS
        }
      mma_pv<BK / 8, DK / 8>(acc, s, Kb, SK, lane);
    }
    __syncthreads();
  }
#pragma unroll
  for (int nt = 0; nt < DK / 8; ++nt) {
    const int col = nt * 8 + (lane & 3) * 2;
    if (col >= Dk) break;
    if (i0 < T)
      *reinterpret_cast<float2*>(dq + (head + int64_t(i0) * H) * Dk + col) =
          make_float2(acc[nt][0] * scale, acc[nt][1] * scale);
    if (i1 < T)
      *reinterpret_cast<float2*>(dq + (head + int64_t(i1) * H) * Dk + col) =
          make_float2(acc[nt][2] * scale, acc[nt][3] * scale);
  }
}

// dK/dV pass. grid (cdiv(T, 16*NW), B*H); warp w owns keys k0 + 16w + [0, 16); query tiles of
// BQ rows stream through. smem K (BKV, DK+8), V (BKV, DV+8), Q 2x(BQ, DK+8), dO 2x(BQ, DV+8).
// Everything is computed transposed (keys as rows): S^T = K Q^T, dP^T = V dO^T,
// dV += P^T dO, dK += dS^T Q.
template <int DK, int DV, int BQ, int NW>
__global__ void __launch_bounds__(NW * 32, 1)
    tc_dkdv_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                   const bf16* __restrict__ v, const bf16* __restrict__ dout,
                   const int32_t* __restrict__ seg, const int32_t* __restrict__ klast,
                   const float* __restrict__ lse, const float* __restrict__ Dd, float scale,
                   float* __restrict__ dk, float* __restrict__ dv, int T, int H, int Dk, int Dv) {
  constexpr int BKV = 16 * NW, SK = DK + 8, SV = DV + 8, NT = NW * 32;
  extern __shared__ __align__(16) unsigned char smraw[];
  __shared__ int bound;
  bf16* Ks = reinterpret_cast<bf16*>(smraw);
  bf16* Vs = Ks + BKV * SK;
  bf16* Qs = Vs + BKV * SV;
  bf16* dOs = Qs + 2 * BQ * SK;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int k0 = blockIdx.x * BKV;
  const int64_t rq = int64_t(H) * Dk, rv = int64_t(H) * Dv;
  const int64_t head = int64_t(b) * T * H + h, lb = (int64_t(b) * H + h) * T;
  const int32_t* sb = seg ? seg + int64_t(b) * T : nullptr;
  const int qhi = block_qhi(klast, int64_t(b) * T, k0, T, BKV, &bound);
  const int qt0 = k0 / BQ, qt1 = (qhi + BQ - 1) / BQ;
  tc_load<DK, BKV, NT>(Ks, k + head * Dk, rq, k0, T - k0, Dk);
  tc_load<DV, BKV, NT>(Vs, v + head * Dv, rv, k0, T - k0, Dv);
  tc_load<DK, BQ, NT>(Qs, q + head * Dk, rq, qt0 * BQ, T - qt0 * BQ, Dk);
  tc_load<DV, BQ, NT>(dOs, dout + head * Dv, rv, qt0 * BQ, T - qt0 * BQ, Dv);
  cp_commit();
  const int wk = warp * 16;
  const int j0 = k0 + wk + (lane >> 2), j1 = j0 + 8;
  const int sj0 = sb && j0 < T ? sb[j0] : 0, sj1 = sb && j1 < T ? sb[j1] : 0;
  const float sl = scale * kLog2e;
  float gk[DK / 8][4] = {}, gv[DV / 8][4] = {};
  for (int qt = qt0; qt < qt1; ++qt) {
    const int buf = (qt - qt0) & 1;
    if (qt + 1 < qt1) {
      const int nb = (qt + 1) * BQ;
      tc_load<DK, BQ, NT>(Qs + (buf ^ 1) * BQ * SK, q + head * Dk, rq, nb, T - nb, Dk);
      tc_load<DV, BQ, NT>(dOs + (buf ^ 1) * BQ * SV, dout + head * Dv, rv, nb, T - nb, Dv);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    const int qb = qt * BQ;
    if (qb + BQ - 1 >= k0 + wk && k0 + wk < T) {   // some query of the tile sees a key of ours
      const bf16* Qb = Qs + buf * BQ * SK;
      const bf16* dOb = dOs + buf * BQ * SV;
      float s[BQ / 8][4] = {}, dp[BQ / 8][4] = {};
      mma_abt<DK, BQ / 8>(s, Ks, wk, SK, Qb, SK, lane);
      mma_abt<DV, BQ / 8>(dp, Vs, wk, SV, dOb, SV, lane);
      const bool need = sb || qb < k0 + wk + 15 || qb + BQ > T;
#pragma unroll
      for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int i = qb + nt * 8 + (lane & 3) * 2 + e;   // query of columns c = e, e + 2
          const bool ok = i < T;
          const float Li = ok ? __ldg(lse + lb + i) * kLog2e : 0.f;
          const float Di = ok ? __ldg(Dd + lb + i) : 0.f;
          const int si = sb && ok ? __ldg(sb + i) : 0;
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) {
            const int c = e + 2 * hi, j = hi ? j1 : j0;
            bool vis = true;
            if (need) vis = ok && j <= i && (!sb || si == (hi ? sj1 : sj0));
            const float p = vis ? fast_exp2(s[nt][c] * sl - Li) : 0.f;
            s[nt][c] = p;
            dp[nt][c] = vis ? p * (dp[nt][c] - Di) : 0.f;   // dS^T
          }
        }
      mma_pv<BQ / 8, DV / 8>(gv, s, dOb, SV, lane);
      mma_pv<BQ / 8, DK / 8>(gk, dp, Qb, SK, lane);
    }
    __syncthreads();
  }
#pragma unroll
  for (int nt = 0; nt < DK / 8; ++nt) {
    const int col = nt * 8 + (lane & 3) * 2;
    if (col >= Dk) break;
    if (j0 < T)
      *reinterpret_cast<float2*>(dk + (head + int64_t(j0) * H) * Dk + col) =
          make_float2(gk[nt][0] * scale, gk[nt][1] * scale);
    if (j1 < T)
      *reinterpret_cast<float2*>(dk + (head + int64_t(j1) * H) * Dk + col) =
          make_float2(gk[nt][2] * scale, gk[nt][3] * scale);
  }
#pragma unroll
  for (int nt = 0; nt < DV / 8; ++nt) {
    const int col = nt * 8 + (lane & 3) * 2;
    if (col >= Dv) break;
    if (j0 < T)
      *reinterpret_cast<float2*>(dv + (head + int64_t(j0) * H) * Dv + col) =
          make_float2(gv[nt][0], gv[nt][1]);
    if (j1 < T)
      *reinterpret_cast<float2*>(dv + (head + int64_t(j1) * H) * Dv + col) =
          make_float2(gv[nt][2], gv[nt][3]);
  }
}

// Tile shapes per padded head-dim pair: NW warps (16 rows each), BK keys per forward tile,
// BKQ keys per dQ tile, BQT queries per dK/dV tile.
template <int DK, int DV>
struct TcCfg {
  static constexpr int NW = 8, BKQ = DK > 128 ? 32 : 64, BQT = 32;
  // forward: 4 warps x 32 rows (two CTAs per SM), keys per tile bounded by registers, FST
  // K/V stages. Measured on an H200 (192/128): 8 warps x 32 rows with 2 or 3 stages, or 8 x 16
  // rows with 3 stages, were 3-10% slower than this.
  static constexpr int FNW = 4, FMT = 2, BK = DV > 64 ? 32 : 64, FST = 2;
  static constexpr size_t fwd_smem() {
    return 2 * (size_t(16 * FMT * FNW) * (DK + 8) + size_t(FST) * BK * (DK + 8 + DV + 8));
  }
  static constexpr size_t dq_smem =
      2 * (size_t(16 * NW) * (DK + 8 + DV + 8) + 2 * BKQ * (DK + 8 + DV + 8));
  static constexpr size_t dkdv_smem =
      2 * (size_t(16 * NW) * (DK + 8 + DV + 8) + 2 * BQT * (DK + 8 + DV + 8));
};

template <int DK, int DV>
void tc_forward(const Launch& L, const Bf16Inputs& in, float* out, float* lse) {
  using C = TcCfg<DK, DV>;
  constexpr size_t smem = C::fwd_smem();
  auto kern = tc_fwd_kernel<DK, DV, C::BK, C::FNW, C::FMT, C::FST>;
  set_smem(kern, smem);
  const dim3 grid(unsigned(cdiv(L.s.T, 16 * C::FMT * C::FNW)), unsigned(L.s.B * L.s.H));
  kern<<<grid, C::FNW * 32, smem, stream()>>>(in.q, in.k, in.v, L.seg, L.kfirst, L.scale, out, lse,
                                              int(L.s.T), int(L.s.H), int(L.s.Dk), int(L.s.Dv));
  DS_CUDA_LAUNCHED();
}

template <int DK, int DV>
void tc_backward(const Launch& L, const Bf16Inputs& in, const float* lse, const float* D,
                 float* dq, float* dk, float* dv) {
  using C = TcCfg<DK, DV>;
  const int T = int(L.s.T), H = int(L.s.H), Dk = int(L.s.Dk), Dv = int(L.s.Dv);
  const dim3 grid(unsigned(cdiv(L.s.T, 16 * C::NW)), unsigned(L.s.B * L.s.H));
  auto kq = tc_dq_kernel<DK, DV, C::BKQ, C::NW>;
  set_smem(kq, C::dq_smem);
  kq<<<grid, C::NW * 32, C::dq_smem, stream()>>>(in.q, in.k, in.v, in.dout, L.seg, L.kfirst, lse,
                                                 D, L.scale, dq, T, H, Dk, Dv);
  DS_CUDA_LAUNCHED();
  auto kkv = tc_dkdv_kernel<DK, DV, C::BQT, C::NW>;
  set_smem(kkv, C::dkdv_smem);
  kkv<<<grid, C::NW * 32, C::dkdv_smem, stream()>>>(in.q, in.k, in.v, in.dout, L.seg, L.klast,
                                                    lse, D, L.scale, dk, dv, T, H, Dk, Dv);
  DS_CUDA_LAUNCHED();
}

}  // namespace

namespace flash {

// Smallest compiled tile shape holding (Dk, Dv): 0 = (64,64), 1 = (128,128), 2 = (192,128).
int tc_variant(int64_t Dk, int64_t Dv) {
  if (Dk <= 0 || Dv <= 0 || Dk % 16 || Dv % 16) return -1;
  if (Dk <= 64 && Dv <= 64) return 0;
  if (Dk <= 128 && Dv <= 128) return 1;
  if (Dk <= 192 && Dv <= 128) return 2;
  return -1;
}

void convert(const float* x, bf16* y, int64_t n) {
  const int64_t n4 = n / 4;
  // bf16_round's aligned kernel (RNE, the codes as 8-byte stores), run by the host emulator.
  bf16rows::bf16_round4_kernel<true>
      <<<grid_for(n4, 256), 256, 0, stream()>>>(reinterpret_cast<const float4*>(x), y, n4);
  DS_CUDA_LAUNCHED();
}

void tc_forward_variant(int variant, const Launch& L, const Bf16Inputs& in, float* out,
                        float* lse) {
  if (variant == 0) tc_forward<64, 64>(L, in, out, lse);
  else if (variant == 1) tc_forward<128, 128>(L, in, out, lse);
  else tc_forward<192, 128>(L, in, out, lse);
}

void tc_backward_variant(int variant, const Launch& L, const Bf16Inputs& in, const float* lse,
                         const float* D, float* dq, float* dk, float* dv) {
  if (variant == 0) tc_backward<64, 64>(L, in, lse, D, dq, dk, dv);
  else if (variant == 1) tc_backward<128, 128>(L, in, lse, D, dq, dk, dv);
  else tc_backward<192, 128>(L, in, lse, D, dq, dk, dv);
}

}  // namespace flash

bool attention_tc_supported(int64_t Dk, int64_t Dv) { return tc_variant(Dk, Dv) >= 0; }

}  // namespace ds::cuda
