// Hopper (sm_90a) causal attention on warpgroup MMAs, forward and backward, reached from
// attention_forward / attention_backward (flash_attention_simt.cu) when selected
// (the default on sm_90a since it ran on the H200; DS_ATTENTION=mma or set_attention_wgmma
// select the mma.sync kernels instead) for head dims
// (Dk, Dv) in {(64, 64), (96, 64), (128, 128), (192, 128)}. Same contract and numbers as the
// mma.sync kernels of flash_attention_tc.cu (BF16 operands, FP32 accumulation, softmax, lse
// and D in FP32, the same softmax step), every product on wgmma (sm90_wgmma_bf16.cuh):
//   * a block = 2 warpgroups (256 threads) and 128 rows, warpgroup w owning rows
//     64w..64w+63; 64-row tiles of the other operand through a cp.async ring shared by both
//     (opt-ins, not yet run on a GPU: DS_ATTENTION_ROWS=64, blocks of one warpgroup and 64
//     rows, two per SM where they fit; DS_ATTENTION_SCHEDULE=staggered, warpgroup 1 a phase
//     behind warpgroup 0 at the ring barrier, one more stage; flash_attention_sm90_layout.hpp);
//   * operands in shared memory are K-major in the FP8 GEMM's 128-byte swizzle
//     (sm90_wgmma.cuh): a head dim split into 64-column chunks of rows x 128 bytes, one k16
//     step = 32 bytes;
//   * a product whose K runs along the sequence (P V, dS K, P^T dO, dS^T Q) reads its B from
//     a transposed BF16 copy (B, H, D, Tp), Tp = 64 * ceil(T / 64) (zero rows past T),
//     written by to_bf16_t_kernel (flash_attention_sm90_prep.cuh), so that its tile (D rows
//     x 64 = 128 bytes) is K-major too and its loads never leave a row;
//   * P / dS stay in registers: wgmma's accumulators are the m16n8 accumulator layout per
//     warp, so acc_to_a turns them into the register A operand of the next product.
// Forward: S = Q K^T (both operands in shared memory), the mma.sync kernel's softmax step,
// O += P V. Backward: three passes of one kernel (dQ; dK; dV), or two with
// DS_ATTENTION_BWD=fused (dQ; dK and dV), or one with DS_ATTENTION_BWD=onepass (dK and dV,
// dQ added by atomics), both up to head dims 96 / 64, below.
// cp.async writes are generic-proxy writes and wgmma reads through the async proxy, hence
// fence.proxy.async before the barrier that publishes a stage (as in sm90_fp8_gemm.cu).
// The kernel bodies exist only in the sm_90a build (sm90a_loaded() gates the launches).
// This file: the transposed copies, the backward kernel and launcher, the switches; the
// forward kernel and launcher are in flash_attention_sm90_fwd.cu.
// reference: Shah et al., "FlashAttention-3" (2024), section 3 (the first product's
// accumulators as the second's register operand); Dao, "FlashAttention-2" (2023),
// Algorithm 2 (backward); PTX ISA wgmma (register fragments, descriptors).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/flash_attention_common.cuh"
#include "kernels/flash_attention_sm90_io.cuh"
#include "kernels/flash_attention_sm90_launch.cuh"
#include "kernels/flash_attention_sm90_layout.hpp"
#include "kernels/flash_attention_sm90_prep.cuh"   // to_bf16_t, query stats
#include "kernels/flash_attention_softmax.cuh"
#include "kernels/mma_sm80.cuh"
#include "kernels/sm90_wgmma.cuh"
#include "kernels/sm90_wgmma_bf16.cuh"

namespace ds::cuda {
namespace flash {
namespace {

using namespace fa90;   // tile sizes, shared layout, copies (flash_attention_sm90_layout.hpp)

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)   // the wgmma pieces exist only in the sm_90a build
using namespace sm90;
#endif

// The backward's passes, one kernel (the one-pass kAll: flash_attention_sm90_layout.hpp and
// its loops below): PASS kDQ (block rows = 128 queries, tiles = 64
// keys: dQ += dS K), kDK (rows = 128 keys, tiles = 64 queries: dK += dS^T Q) and kDV (rows =
// keys, tiles = queries: dV += P^T dO), every product on wgmma. With X the block's rows and Y
// a tile: S = X_k Y_k^T over Dk (Q K^T, or K Q^T), dP = X_v Y_v^T over Dv (dO V^T, or V dO^T;
// not for kDV), P = 2^(S scale log2e - lse log2e) masked, dS = P (dP - D), and the output
// (N = Dk or Dv) += G Z with G = dS or P from the accumulators as the register A operand and
// Z^T a tile of a transposed copy (K^T, Q^T, dO^T: (B, H, N, Tp), keys padded) as K-major B.
// dK and dV are separate passes (S^T recomputed once more) so that every accumulator set fits
// the registers at 192 / 128. Up to 96 / 64 they fit, and PASS kDKV (DS_ATTENTION_BWD=fused)
// does both in one pass: S^T and dP^T once, P^T and dS^T from them (dS^T into dP^T's
// registers), then dK += dS^T Q and dV += P^T dO (Z2^T = dO^T) under one wait; out2 is dV.
// It reads each query's lse and D from qstats ({lse, D} per query, padded to Tp with
// {+inf, 0}: two queries a 16-byte load, no test of q < T), not per element from lse and D;
// so do the split dK and dV passes with QS (DS_ATTENTION_QSTATS=table), the same bits.
// Each accumulator sees the same products in the same order as in its split pass, so dK and
// dV are the split passes' to the bit. Shared layout bwd_smem: X_k, X_v, then NS x
// [Y_k, Y_v, Z^T, Z2^T] (NS = kBwdStages, or kStagBwdStages with STAG: the staggered
// warpgroups, where warpgroup 1 meets barrier it + 1 between its first products of tile it
// and the rest). bounds: kfirst (kDQ) or klast (the others) of the segment pre-pass, or null.

template <int DK, int DV, int PASS, int BQ, bool STAG, bool QS, bool PIPE = false>
__global__ void __launch_bounds__(block_threads(BQ), BQ == kBQ64 ? 2 : 1)
    sm90_bwd_kernel(const bf16* __restrict__ xk_src, const bf16* __restrict__ xv_src,
                    const bf16* __restrict__ yk_src, const bf16* __restrict__ yv_src,
                    const bf16* __restrict__ zt_src, const bf16* __restrict__ zt2_src,
                    const int32_t* __restrict__ seg, const int32_t* __restrict__ bounds,
                    const float* __restrict__ lse, const float* __restrict__ Dd,
                    const float2* __restrict__ qstats, float scale, float* __restrict__ out,
                    float* __restrict__ out2, const bf16* __restrict__ kt_src,
                    float* __restrict__ out3, int T, int H, int Tp) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kDP = PASS != kDV, kKV = bwd_kv(PASS), kQ = PASS == kAll;
  static_assert(!kQ || (BQ == kBQ && !STAG), "one-pass: 128 rows, lockstep or pipelined");
  constexpr int NZ = bwd_n(DK, DV, PASS), NZ2 = kKV ? DV : 64;   // (NZ2 unused unless kKV)
  static_assert(!STAG || BQ == kBQ, "staggered: two warpgroups");
  static_assert(!(STAG && PIPE), "one schedule");
  // a tile is still read after the next one's barrier (the pipelined one-pass kernel instead
  // copies each tile's Z part a barrier later: onepass_loads)
  constexpr bool LAG = (STAG || PIPE) && !kQ;
  constexpr int NS = LAG ? kStagBwdStages : kBwdStages;
  constexpr BwdSmem L = bwd_smem(DK, DV, PASS, BQ, NS);
  constexpr int NT = block_threads(BQ);
  extern __shared__ uint8_t smem_raw[];
  __shared__ int bound;
  const uint32_t base = (uint32_t(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  const uint32_t xk = base + L.xk, xv = base + L.xv;
  auto stage = [&](int st) { return base + L.stages + uint32_t(st) * L.stage_bytes; };
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int x0 = block_row0(PASS == kDQ, blockIdx.x, gridDim.x, BQ);
  const int64_t head = int64_t(b) * T * H + h, lb = (int64_t(b) * H + h) * T;
  const int64_t rk = int64_t(H) * DK, rv = int64_t(H) * DV;
  const int32_t* sb = seg ? seg + int64_t(b) * T : nullptr;
  // tiles [t0, t1) of 64 rows of the streamed operand
  const Tiles tiles =
      PASS == kDQ ? key_tiles(block_klo(bounds, int64_t(b) * T, x0, T, BQ, &bound), x0, T, BQ)
                  : query_tiles(x0, block_qhi(bounds, int64_t(b) * T, x0, T, BQ, &bound));
  const int t0 = tiles.t0, ntiles = tiles.t1 - tiles.t0;
  const bf16* zth = zt_src + t_index(int64_t(b) * H + h, 0, 0, NZ, Tp);
  const bf16* zt2h = kKV ? zt2_src + t_index(int64_t(b) * H + h, 0, 0, NZ2, Tp) : nullptr;
  auto load_y = [&](int st, int it) {   // a tile's Y part (the first products' operands)
    const int tb = (t0 + it) * kBK;
    load_rows<kBK, DK, NT>(stage(st), yk_src + head * DK, rk, tb, T);
    if constexpr (kDP) load_rows<kBK, DV, NT>(stage(st) + L.yv, yv_src + head * DV, rv, tb, T);
  };
  auto load_z = [&](int st, int it) {   // its Z part (the output products' B operands)
    const int tb = (t0 + it) * kBK;
    load_t<NZ, NT>(stage(st) + L.z, zth, Tp, tb);
    if constexpr (kKV) load_t<NZ2, NT>(stage(st) + L.z2, zt2h, Tp, tb);
  };
  auto load_tile = [&](int st, int it) {
    load_y(st, it);
    load_z(st, it);
  };
  load_rows<BQ, DK, NT>(xk, xk_src + head * DK, rk, x0, T);   // in the first commit group
  if constexpr (kDP) load_rows<BQ, DV, NT>(xv, xv_src + head * DV, rv, x0, T);
  if constexpr (kQ) {   // the block's K^T, two chunks of 64 keys (past Tp: zeros)
    const bf16* kth = kt_src + t_index(int64_t(b) * H + h, 0, 0, DK, Tp);
    load_t<DK, NT>(base + L.kt, kth, Tp, x0);
    load_t<DK, NT>(base + L.kt + uint32_t(DK) * 128u, kth, Tp, x0 + kBK, x0 + kBK < Tp);
  }
  if constexpr (kQ && PIPE) {   // tile 0's Y part; its Z part at barrier 0
    if (ntiles > 0) load_y(0, 0);
    ptx::cp_commit();
  } else {
#pragma unroll
    for (int st = 0; st < ring_dist(NS, LAG); ++st) {
      if (st < ntiles) load_tile(st, st);
      ptx::cp_commit();
    }
  }
  const int r0 = x0 + wg * 64;   // this warpgroup's first row
  const int i0 = thread_row(x0, wg, warp, lane, 0), i1 = thread_row(x0, wg, warp, lane, 1);
  const int s0 = sb && i0 < T ? sb[i0] : 0, s1 = sb && i1 < T ? sb[i1] : 0;
  const float sl = scale * kLog2e;
  // kDQ: the rows are queries, their lse (log2 units) and D.
  const float L0 = PASS == kDQ && i0 < T ? lse[lb + i0] * kLog2e : 0.f;
  const float L1 = PASS == kDQ && i1 < T ? lse[lb + i1] * kLog2e : 0.f;
  const float D0 = PASS == kDQ && i0 < T ? Dd[lb + i0] : 0.f;
  const float D1 = PASS == kDQ && i1 < T ? Dd[lb + i1] : 0.f;
  float acc[NZ / 8][4] = {}, s[kBK / 8][4] = {}, dp[kBK / 8][4] = {};
  float acc2[kKV ? NZ2 / 8 : 1][4] = {};   // kDKV: dV
  float dq[kQ ? DK / 16 : 1][4] = {};      // kAll: a tile's dQ, columns of this warpgroup
  const uint32_t xka = wg_rows(xk, wg), xva = wg_rows(xv, wg);
  // Barrier `it` of the ring: tile it has landed and is published; refill a free stage.
  auto ring_sync = [&](int it) {
    ptx::cp_wait<ring_wait(NS, LAG)>();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    ring_barrier<LAG, NT>();
    if (const int nx = ring_refill(it, NS, LAG); nx < ntiles) load_tile(ring_stage(nx, NS), nx);
    ptx::cp_commit();
  };
  // No pair of this warpgroup's rows and tile it's is visible: skip (warpgroup-uniform).
  auto skip = [&](int it) {
    const int tb = (t0 + it) * kBK;
    return PASS == kDQ ? skip_query_rows(tb, r0, T) : skip_key_rows(tb, r0, T);
  };
  uint32_t a[kBK / 16][4];                // the output products' register A operands
  uint32_t a2[kKV ? kBK / 16 : 1][4];     // (kDKV: a = P^T for dV, a2 = dS^T for dK)
  auto issue_first = [&](int it) {   // S (and dP) over tile it, issued (not committed)
    const uint32_t ya = stage(ring_stage(it, NS));
    fence_acc(s);
    if constexpr (kDP) fence_acc(dp);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < DK / 16; ++kk)
      wgmma_ss_n64(s, smem_desc(kstep(xka, BQ, kk)), smem_desc(kstep(ya, kBK, kk)), kk > 0);
    if constexpr (kDP) {
#pragma unroll
      for (int kk = 0; kk < DV / 16; ++kk)
        wgmma_ss_n64(dp, smem_desc(kstep(xva, BQ, kk)), smem_desc(kstep(ya + L.yv, kBK, kk)),
                     kk > 0);
    }
  };
  auto first_done = [&] {
    fence_acc(s);
    if constexpr (kDP) fence_acc(dp);
  };
  auto first = [&](int it) {   // S (and dP) over tile it, waited for
    issue_first(it);
    wgmma_commit_wait_all();
    first_done();
  };
  auto compute = [&](int it) {   // P, and dS from them, over tile it (in s, dp)
    const int tb = (t0 + it) * kBK;
    if constexpr (PASS == kDQ) {   // rows: queries i0 / i1; columns: keys
      const bool need = sb || tb + kBK - 1 > r0 || tb + kBK > T || r0 + 64 > T;
#pragma unroll
      for (int nt = 0; nt < kBK / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const bool lo = c < 2;
          float p = fast_exp2(s[nt][c] * sl - (lo ? L0 : L1));
          if (need) {
            const int j = tb + nt * 8 + (lane & 3) * 2 + (c & 1);
            if (!(lo ? visible(i0, j, T, sb, s0) : visible(i1, j, T, sb, s1))) p = 0.f;
          }
          s[nt][c] = p * (dp[nt][c] - (lo ? D0 : D1));   // dS
        }
    } else if constexpr (kKV || QS) {   // rows: keys i0 / i1; columns: queries
      // The tile's query stats {lse, D} of queries q, q + 1 in one 16-byte load; past T
      // {+inf, 0}, so p = 2^-inf = 0 there without a test (the split passes' 0.f, bit for bit).
      const bool need = sb || tb < r0 + 63;
      const float2* st = qstats + (int64_t(b) * H + h) * Tp;
#pragma unroll
      for (int nt = 0; nt < kBK / 8; ++nt) {
        const int q0 = tb + nt * 8 + (lane & 3) * 2;   // the queries of columns 0-1 and 2-3
        const float4 lq = __ldg(reinterpret_cast<const float4*>(st + q0));
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int q = q0 + e;
          const float Lq = (e ? lq.z : lq.x) * kLog2e, Dq = e ? lq.w : lq.y;
          const int sq = sb && q < T ? __ldg(sb + q) : 0;
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) {
            const int c = e + 2 * hi, j = hi ? i1 : i0;
            const bool vis = !need || (j <= q && (!sb || (q < T && sq == (hi ? s1 : s0))));
            const float p = vis ? fast_exp2(s[nt][c] * sl - Lq) : 0.f;
            if constexpr (kKV) {
              s[nt][c] = p;                       // P^T stays in s,
              dp[nt][c] = p * (dp[nt][c] - Dq);   // dS^T goes to dp
            } else {
              s[nt][c] = PASS == kDV ? p : p * (dp[nt][c] - Dq);   // P^T or dS^T
            }
          }
        }
      }
    } else {   // rows: keys i0 / i1; columns: queries
      const bool need = sb || tb < r0 + 63 || tb + kBK > T;
#pragma unroll
      for (int nt = 0; nt < kBK / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int q = tb + nt * 8 + (lane & 3) * 2 + e;   // the query of columns e, e + 2
          const bool ok = q < T;
          const float Lq = ok ? __ldg(lse + lb + q) * kLog2e : 0.f;
          const float Dq = kDP && ok ? __ldg(Dd + lb + q) : 0.f;
          const int sq = sb && ok ? __ldg(sb + q) : 0;
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) {
            const int c = e + 2 * hi, j = hi ? i1 : i0;
            const bool vis = !need || (ok && j <= q && (!sb || sq == (hi ? s1 : s0)));
            const float p = vis ? fast_exp2(s[nt][c] * sl - Lq) : 0.f;
            s[nt][c] = PASS == kDV ? p : p * (dp[nt][c] - Dq);   // P^T or dS^T
          }
        }
    }
  };
  auto pack = [&] {   // a = P^T (dV) or dS (the others); kDKV: a2 = dS^T for dK += dS^T Q
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) acc_to_a(a[kk], s[2 * kk], s[2 * kk + 1]);
    if constexpr (kKV) {
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) acc_to_a(a2[kk], dp[2 * kk], dp[2 * kk + 1]);
    }
  };
  auto out_fence = [&] {
    fence_a(a);
    if constexpr (kKV) fence_a(a2);
    fence_acc(acc);
    if constexpr (kKV) fence_acc(acc2);
    if constexpr (kQ) fence_acc(dq);
  };
  auto issue_out = [&](int it) {   // the output products over tile it, issued (not committed)
    const uint32_t ya = stage(ring_stage(it, NS));
    out_fence();
    wgmma_fence();
    if constexpr (kKV) {
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk)
        wgmma_rs(acc, a2[kk], smem_desc(kstep(ya + L.z, NZ, kk)));
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk)
        wgmma_rs(acc2, a[kk], smem_desc(kstep(ya + L.z2, NZ2, kk)));
      if constexpr (kQ) {   // dQ_tile (this warpgroup's DK/2 columns) = dS K over 128 keys
        const uint32_t dsa = ds_buffer(base + L.ds, BQ, PIPE ? it & 1 : 0);
#pragma unroll
        for (int kk = 0; kk < 2 * kBK / 16; ++kk)
          wgmma_ss_ta(dq, desc_mn_sw128(dq_a_step(dsa, kk), 1024u, 1024u),
                      smem_desc(dq_b_step(base + L.kt, DK, wg, kk)), kk > 0);
      }
    } else {
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk)   // tile rows 16 kk..: bytes 32 kk of each Z^T row
        wgmma_rs(acc, a[kk], smem_desc(kstep(ya + L.z, NZ, kk)));
    }
  };
  auto rest = [&](int it) {   // P, dS from them, and the output products over tile it
    compute(it);
    pack();
    issue_out(it);
    wgmma_commit_wait_all();
    out_fence();
  };
  // kAll: this warpgroup's dS^T (a2) into dS^T buffer buf, visible to wgmma after a barrier
  auto store_ds = [&](int buf) {
    const uint32_t dsa = ds_buffer(base + L.ds, BQ, buf);
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk)
#pragma unroll
      for (int j = 0; j < 4; ++j)
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(dsa + ds_store(wg, warp, lane, kk, j)),
                     "r"(a2[kk][j])
                     : "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  };
  auto add_dq = [&](int it) {   // kAll: tile it's dQ products (in dq) into dQ
    const int tb = (t0 + it) * kBK;
    const int q0 = dq_row(tb, warp, lane, 0), q1 = dq_row(tb, warp, lane, 1);
#pragma unroll
    for (int nt = 0; nt < DK / 16; ++nt) {
      float* col = out3 + dq_col(DK, wg, nt, lane);
      if (q0 < T)
        atomicAdd(reinterpret_cast<float2*>(col + (head + int64_t(q0) * H) * DK),
                  make_float2(dq[nt][0] * scale, dq[nt][1] * scale));
      if (q1 < T)
        atomicAdd(reinterpret_cast<float2*>(col + (head + int64_t(q1) * H) * DK),
                  make_float2(dq[nt][2] * scale, dq[nt][3] * scale));
    }
  };
  if constexpr (kQ && PIPE) {   // tile it's S^T, dP^T under tile it - 1's products
    // Barrier it (0 <= it <= ntiles): every copy landed, the stores of dS^T(it - 1) done; it
    // publishes Y(it), Z(it - 1), dS^T(it - 1), then copies Y(it + 1) and Z(it).
    auto sync_load = [&](int it) {
      ptx::cp_wait<0>();
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncthreads();
      const OnepassLoads ld = onepass_loads(it, ntiles);
      if (ld.y >= 0) load_y(ring_stage(ld.y, NS), ld.y);
      if (ld.z >= 0) load_z(ring_stage(ld.z, NS), ld.z);
      ptx::cp_commit();
    };
    if (ntiles > 0) {
      sync_load(0);
      first(0);
      compute(0);
      pack();
      store_ds(0);
    }
    for (int it = 1; it < ntiles; ++it) {
      sync_load(it);
      issue_first(it);
      wgmma_commit();
      issue_out(it - 1);
      wgmma_commit();
      wgmma_wait<1>();   // S^T, dP^T of tile it; tile it - 1's products still run
      first_done();
      compute(it);
      wgmma_wait<0>();
      out_fence();
      add_dq(it - 1);
      pack();
      store_ds(it & 1);
    }
    if (ntiles > 0) {
      sync_load(ntiles);
      issue_out(ntiles - 1);
      wgmma_commit_wait_all();
      out_fence();
      add_dq(ntiles - 1);
    }
  } else if constexpr (kQ) {   // lockstep; dS^T of both warpgroups through shared memory
    for (int it = 0; it < ntiles; ++it) {
      ring_sync(it);
      if (!skip(it)) {
        first(it);
        compute(it);
        pack();
      } else {   // nothing of the tile is visible to these keys: dS^T and P^T are zero (the
                 // products then add exact zeros to dK and dV, Q and dO being finite)
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk)
#pragma unroll
          for (int j = 0; j < 4; ++j) a[kk][j] = a2[kk][j] = 0u;
      }
      store_ds(0);
      __syncthreads();   // both halves of dS^T stored and visible to wgmma
      issue_out(it);
      wgmma_commit_wait_all();
      out_fence();
      add_dq(it);
    }
  } else if constexpr (PIPE) {   // as the forward's: tile it's S (dP) under tile it - 1's outputs
    for (int it = 0; it < ntiles;) {
      for (; it < ntiles && skip(it); ++it) ring_sync(it);
      if (it >= ntiles) break;
      ring_sync(it);
      first(it);
      compute(it);
      pack();
      for (++it; it < ntiles && !skip(it); ++it) {
        ring_sync(it);
        issue_first(it);
        wgmma_commit();
        issue_out(it - 1);
        wgmma_commit();
        wgmma_wait<1>();   // S (and dP) of tile it; tile it - 1's outputs still run
        first_done();
        compute(it);
        wgmma_wait<0>();
        out_fence();
        pack();
      }
      issue_out(it - 1);
      wgmma_commit_wait_all();
      out_fence();
    }
  } else if (!STAG || wg == 0) {
    for (int it = 0; it < ntiles; ++it) {
      ring_sync(it);
      if (!skip(it)) {
        first(it);
        rest(it);
      }
    }
  } else {   // warpgroup 1, staggered: barrier it + 1 between the two halves of tile it
    if (ntiles > 0) ring_sync(0);
    for (int it = 0; it < ntiles; ++it) {
      const bool sk = skip(it);
      if (!sk) first(it);
      if (it + 1 < ntiles) ring_sync(it + 1);
      if (!sk) rest(it);
    }
  }
  ptx::cp_wait<0>();
  const float os = PASS == kDV ? 1.f : scale;
  store_rows(out, acc, head, H, T, i0, i1, lane, os, os);
  if constexpr (kKV) store_rows(out2, acc2, head, H, T, i0, i1, lane, 1.f, 1.f);
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

// -1: not read from DS_ATTENTION_ROWS yet; 0: 128-row blocks; 1: 64-row blocks where built
// (rows64_fwd / rows64_bwd) and two of them are resident per SM.
std::atomic<int> g_rows64{-1};

// -1: not read from DS_ATTENTION_SCHEDULE yet; 0 lockstep; 1 staggered, 2 pipelined (each
// where the ring's extra stage fits: stag_fwd / stag_bwd).
std::atomic<int> g_stag{-1};

template <int DK, int DV, int PASS, int BQ, bool LAG = false>
constexpr size_t sm90_bwd_smem() {
  return size_t(bwd_smem(DK, DV, PASS, BQ, LAG ? kStagBwdStages : kBwdStages).bytes) + 1024;
}

// -1: not read from DS_ATTENTION_BWD yet; 0 split dK / dV passes; 1 fused, 2 one pass (each
// where it fits: bwd_fused_fits).
std::atomic<int> g_bwd_mode{-1};
std::atomic<int64_t> g_fused_launches{0}, g_onepass_launches{0};
// -1: not read from DS_ATTENTION_QSTATS yet; 0 inline loads; 1 the table in the split passes.
std::atomic<int> g_qstats{-1};
std::atomic<int64_t> g_qstats_launches{0};

template <int DK, int DV, int PASS, int BQ, bool STAG, bool QS, bool PIPE = false>
void sm90_bwd_launch(const Launch& L, const bf16* xk, const bf16* xv, const bf16* yk,
                     const bf16* yv, const bf16* zt, int64_t Tp, const float* lse,
                     const float* D, float* out, const bf16* zt2, float* out2,
                     const float2* qstats, const bf16* kt = nullptr, float* out3 = nullptr) {
  constexpr size_t smem = sm90_bwd_smem<DK, DV, PASS, BQ, (STAG || PIPE) && PASS != kAll>();
  static_assert(smem <= 227 * 1024, "sm90_bwd_kernel: shared memory");
  static_assert(!bwd_kv(PASS) || bwd_fused_fits(DK, DV), "sm90_bwd_kernel: fused dK/dV dims");
  auto kern = sm90_bwd_kernel<DK, DV, PASS, BQ, STAG, QS, PIPE>;
  set_smem(kern, smem);
  const dim3 grid(unsigned(cdiv(L.s.T, BQ)), unsigned(L.s.B * L.s.H));
  kern<<<grid, block_threads(BQ), smem, stream()>>>(xk, xv, yk, yv, zt, zt2, L.seg,
                                                    PASS == kDQ ? L.kfirst : L.klast, lse, D,
                                                    qstats, L.scale, out, out2, kt, out3,
                                                    int(L.s.T), int(L.s.H), int(Tp));
  DS_CUDA_LAUNCHED();
}

// One backward pass on 64-row blocks where selected, built and two fit an SM; else on 128-row
// blocks, staggered or pipelined where selected and it fits. QS: a key-row split pass reads
// the query-stats table (the fused and one-pass kernels always do).
template <int DK, int DV, int PASS, bool QS = false>
void sm90_bwd_pass(const Launch& L, const bf16* xk, const bf16* xv, const bf16* yk,
                   const bf16* yv, const bf16* zt, int64_t Tp, const float* lse, const float* D,
                   float* out, const bf16* zt2 = nullptr, float* out2 = nullptr,
                   const float2* qstats = nullptr, const bf16* kt = nullptr,
                   float* out3 = nullptr) {
  if constexpr (rows64_bwd(DK, DV, PASS)) {
    if (attention_rows64()) {
      constexpr size_t smem = sm90_bwd_smem<DK, DV, PASS, kBQ64>();
      static const bool two = [] {
        set_smem(sm90_bwd_kernel<DK, DV, PASS, kBQ64, false, QS>, smem);
        return two_per_sm(sm90_bwd_kernel<DK, DV, PASS, kBQ64, false, QS>, smem,
                          block_threads(kBQ64));
      }();
      if (two) {
        sm90_bwd_launch<DK, DV, PASS, kBQ64, false, QS>(L, xk, xv, yk, yv, zt, Tp, lse, D, out,
                                                        zt2, out2, qstats);
        g_rows64_launches.fetch_add(1);
        return;
      }
    }
  }
  if constexpr (PASS == kAll) {   // the one-pass kernel: lockstep or pipelined
    if (attention_pipelined()) {
      sm90_bwd_launch<DK, DV, PASS, kBQ, false, QS, true>(L, xk, xv, yk, yv, zt, Tp, lse, D,
                                                          out, zt2, out2, qstats, kt, out3);
      g_pipe_launches.fetch_add(1);
      return;
    }
  }
  if constexpr (stag_bwd(DK, DV, PASS)) {
    if (attention_staggered()) {
      sm90_bwd_launch<DK, DV, PASS, kBQ, true, QS>(L, xk, xv, yk, yv, zt, Tp, lse, D, out, zt2,
                                                   out2, qstats);
      g_stag_launches.fetch_add(1);
      return;
    }
    if (attention_pipelined()) {
      sm90_bwd_launch<DK, DV, PASS, kBQ, false, QS, true>(L, xk, xv, yk, yv, zt, Tp, lse, D,
                                                          out, zt2, out2, qstats);
      g_pipe_launches.fetch_add(1);
      return;
    }
  }
  sm90_bwd_launch<DK, DV, PASS, kBQ, false, QS>(L, xk, xv, yk, yv, zt, Tp, lse, D, out, zt2,
                                                 out2, qstats, kt, out3);
}

template <int DK, int DV>
void sm90_backward(const Launch& L, const Sm90BwdInputs& in, int64_t Tp, const float* lse,
                   const float* D, float* dq, float* dk, float* dv) {
  const int mode = bwd_fused_fits(DK, DV) ? attention_bwd_mode() : 0;
  const bool fused = mode == 1, onepass = mode == 2;
  if (!onepass) sm90_bwd_pass<DK, DV, kDQ>(L, in.q, in.dout, in.k, in.v, in.kt, Tp, lse, D, dq);
  const bool table = mode != 0 || attention_bwd_qstats();
  if (table) {   // the key-row passes' per-query {lse, D}
    if (!in.qstats) throw_cuda_error("sm90_backward: no room for the query stats", __FILE__,
                                     __LINE__);
    const int64_t n = L.s.B * L.s.H * Tp;
    pack_query_stats_kernel<<<unsigned(cdiv(n, 256)), 256, 0, stream()>>>(
        lse, D, in.qstats, int(L.s.T), int(Tp), n);
    DS_CUDA_LAUNCHED();
  }
  if constexpr (bwd_fused_fits(DK, DV)) {
    if (onepass) {   // dQ: the key blocks' products added into zeros
      DS_CUDA_CHECK(cudaMemsetAsync(dq, 0, size_t(L.s.B * L.s.T * L.s.H * DK) * sizeof(float),
                                    stream()));
      sm90_bwd_pass<DK, DV, kAll>(L, in.k, in.v, in.q, in.dout, in.qt, Tp, lse, D, dk,
                                  in.doutt, dv, in.qstats, in.kt, dq);
      g_onepass_launches.fetch_add(1);
      return;
    }
    if (fused) {
      sm90_bwd_pass<DK, DV, kDKV>(L, in.k, in.v, in.q, in.dout, in.qt, Tp, lse, D, dk, in.doutt,
                                  dv, in.qstats);
      g_fused_launches.fetch_add(1);
      return;
    }
  }
  if (table) {
    sm90_bwd_pass<DK, DV, kDK, true>(L, in.k, in.v, in.q, in.dout, in.qt, Tp, lse, D, dk,
                                     nullptr, nullptr, in.qstats);
    sm90_bwd_pass<DK, DV, kDV, true>(L, in.k, nullptr, in.q, nullptr, in.doutt, Tp, lse, D, dv,
                                     nullptr, nullptr, in.qstats);
    g_qstats_launches.fetch_add(2);
    return;
  }
  sm90_bwd_pass<DK, DV, kDK>(L, in.k, in.v, in.q, in.dout, in.qt, Tp, lse, D, dk);
  sm90_bwd_pass<DK, DV, kDV>(L, in.k, nullptr, in.q, nullptr, in.doutt, Tp, lse, D, dv);
}

// -1: not read from DS_ATTENTION yet; 0 mma.sync; 1 wgmma.
std::atomic<int> g_wgmma{-1};
std::atomic<int64_t> g_bwd_launches{0};

}  // namespace

// The launch counters the forward's launcher (flash_attention_sm90_fwd.cu) shares.
std::atomic<int64_t> g_rows64_launches{0}, g_stag_launches{0}, g_pipe_launches{0}, g_launches{0};

int64_t sm90_keys_padded(int64_t T) { return padded_rows(int(T)); }

bool sm90_bwd_needs_qstats(int64_t Dk, int64_t Dv) {
  return (bwd_fused_fits(int(Dk), int(Dv)) && attention_bwd_mode() != 0) ||
         attention_bwd_qstats();
}

bool sm90_attention(int64_t Dk, int64_t Dv) {
  return attention_wgmma() && attention_wgmma_supported(Dk, Dv);
}

void convert_t(const float* x, bf16* xt, const AttnShape& s, int64_t D, int64_t Tp) {
  const dim3 grid(unsigned(Tp / 64), unsigned(s.B * s.H));
  to_bf16_t_kernel<float><<<grid, 256, 0, stream()>>>(x, reinterpret_cast<uint16_t*>(xt),
                                                      int(s.T), int(s.H), int(D), int(Tp));
  DS_CUDA_LAUNCHED();
}

void convert_t(const bf16* x, bf16* xt, const AttnShape& s, int64_t D, int64_t Tp) {
  const dim3 grid(unsigned(Tp / 64), unsigned(s.B * s.H));
  to_bf16_t_kernel<uint16_t><<<grid, 256, 0, stream()>>>(
      reinterpret_cast<const uint16_t*>(x), reinterpret_cast<uint16_t*>(xt), int(s.T),
      int(s.H), int(D), int(Tp));
  DS_CUDA_LAUNCHED();
}

void sm90_backward(const Launch& L, const Sm90BwdInputs& in, int64_t Tp, const float* lse,
                   const float* D, float* dq, float* dk, float* dv) {
  const int64_t Dk = L.s.Dk, Dv = L.s.Dv;
  if (Dk == 64) sm90_backward<64, 64>(L, in, Tp, lse, D, dq, dk, dv);
  else if (Dk == 96) sm90_backward<96, 64>(L, in, Tp, lse, D, dq, dk, dv);
  else if (Dk == 128 && Dv == 128) sm90_backward<128, 128>(L, in, Tp, lse, D, dq, dk, dv);
  else sm90_backward<192, 128>(L, in, Tp, lse, D, dq, dk, dv);
  g_bwd_launches.fetch_add(1);
}

}  // namespace flash

void set_attention_wgmma(bool on) { flash::g_wgmma.store(on ? 1 : 0); }

bool attention_wgmma_supported(int64_t Dk, int64_t Dv) {
  const bool dims = (Dk == 64 && Dv == 64) || (Dk == 96 && Dv == 64) ||
                    (Dk == 128 && Dv == 128) || (Dk == 192 && Dv == 128);
  return dims && sm90a_loaded();
}

int64_t attention_wgmma_launches(bool backward) {
  return backward ? flash::g_bwd_launches.load() : flash::g_launches.load();
}

void set_attention_bwd_fused(bool on) { flash::g_bwd_mode.store(on ? 1 : 0); }

bool attention_bwd_fused_supported(int64_t Dk, int64_t Dv) {
  return attention_wgmma_supported(Dk, Dv) && fa90::bwd_fused_fits(int(Dk), int(Dv));
}

int64_t attention_bwd_fused_launches() { return flash::g_fused_launches.load(); }

void set_attention_bwd_mode(int mode) {
  if (mode < 0 || mode > 2)
    throw_cuda_error("set_attention_bwd_mode: expected 0, 1 or 2", __FILE__, __LINE__);
  flash::g_bwd_mode.store(mode);
}

int64_t attention_bwd_onepass_launches() { return flash::g_onepass_launches.load(); }

void set_attention_rows64(bool on) { flash::g_rows64.store(on ? 1 : 0); }

void set_attention_staggered(bool on) { flash::g_stag.store(on ? 1 : 0); }

void set_attention_pipelined(bool on) { flash::g_stag.store(on ? 2 : 0); }

void set_attention_schedule(int schedule) {
  if (schedule < 0 || schedule > 2)
    throw_cuda_error("set_attention_schedule: expected 0, 1 or 2", __FILE__, __LINE__);
  flash::g_stag.store(schedule);
}

int64_t attention_pipelined_launches() { return flash::g_pipe_launches.load(); }

void set_attention_bwd_qstats(bool on) { flash::g_qstats.store(on ? 1 : 0); }

int64_t attention_bwd_qstats_launches() { return flash::g_qstats_launches.load(); }

int64_t attention_staggered_launches() { return flash::g_stag_launches.load(); }

int64_t attention_rows64_launches() { return flash::g_rows64_launches.load(); }

namespace {

// A process-wide switch of N settings: its setting, or on first use the environment
// variable's (unset or empty: dflt; names[i]: i; anything else a CudaError naming them all).
template <int N>
int choice_from_env(std::atomic<int>& at, const char* var, const char* const (&names)[N],
                    int dflt) {
  int v = at.load();
  if (v < 0) {
    const char* e = std::getenv(var);
    v = !e || !*e ? dflt : -1;
    for (int i = 0; i < N && v < 0; ++i)
      if (std::strcmp(e, names[i]) == 0) v = i;
    if (v < 0) {
      std::string all;
      for (int i = 0; i < N; ++i)
        all += std::string(i == 0 ? "" : i + 1 < N ? ", " : " or ") + names[i];
      throw_cuda_error(std::string(var) + "=" + e + ": expected " + all, __FILE__, __LINE__);
    }
    int expected = -1;
    at.compare_exchange_strong(expected, v);
    v = at.load();
  }
  return v;
}

// A two-way switch: off / on as 0 / 1.
bool switch_from_env(std::atomic<int>& at, const char* var, const char* off, const char* on,
                     bool dflt) {
  const char* const names[] = {off, on};
  return choice_from_env(at, var, names, dflt ? 1 : 0) == 1;
}

}  // namespace

// DS_ATTENTION_BWD: split (unset or empty: the default until the others have run on a GPU),
// fused or onepass.
int attention_bwd_mode() {
  static const char* const names[] = {"split", "fused", "onepass"};
  return choice_from_env(flash::g_bwd_mode, "DS_ATTENTION_BWD", names, 0);
}
bool attention_bwd_fused() { return attention_bwd_mode() == 1; }

// inline loads by default until the table has run on a GPU in the split passes
bool attention_bwd_qstats() {
  return switch_from_env(flash::g_qstats, "DS_ATTENTION_QSTATS", "inline", "table", false);
}

// DS_ATTENTION_SCHEDULE: lockstep (unset or empty: the default until the others have run on
// a GPU), staggered or pipelined.
int attention_schedule() {
  static const char* const names[] = {"lockstep", "staggered", "pipelined"};
  return choice_from_env(flash::g_stag, "DS_ATTENTION_SCHEDULE", names, 0);
}
bool attention_staggered() { return attention_schedule() == 1; }
bool attention_pipelined() { return attention_schedule() == 2; }

// 128-row blocks by default until the 64-row ones have run on a GPU
bool attention_rows64() {
  return switch_from_env(flash::g_rows64, "DS_ATTENTION_ROWS", "128", "64", false);
}

// wgmma by default (where attention_wgmma_supported): on the H200 (commit c135dd4) it passed
// its tests and ran the forward 1.3-1.4x, the backward 1.03-1.07x mma.sync's speed
bool attention_wgmma() {
  return switch_from_env(flash::g_wgmma, "DS_ATTENTION", "mma", "wgmma", true);
}

}  // namespace ds::cuda
