// Absorbed-MLA latent attention over a BF16 latent cache on tensor cores (mma.sync m16n8k16,
// BF16 operands, FP32 accumulation); reached from ds::cuda::mla_latent_attention_bf16
// (mla_decode.cuh) for a BF16 cache. Same split-K ("flash-decoding") structure as the exact FP32
// kernel of mla_decode.cu, whose combine kernel it shares.
//   CTA (n, head group, column group, split): one query row n, HG = 16*MT heads (MT m-tiles,
//     MT <= 4: heads split into the fewest groups of at most 64, padded to 16; padded heads
//     get q = 0 and are not stored), output columns [512 cg, 512 cg + 512) of R (one column
//     group unless R > 512; each recomputes the scores), keys [KS sp, KS sp + KS) of the row's
//     visible len[n]. 8 warps.
//   shared memory: q = [q_lat | q_pe] of the group rounded to BF16 once, (HG, D+8), D = R + Dr;
//     a ring of 2-4 key tiles (cp.async, the deepest that fits), each (32 keys, D+8) =
//     [ckv | kpe] of 32 cache rows, rows past the visible keys zero-filled; FP32 partial
//     scores (8 warps, 16, 40); P (HG, 40) BF16; per-head alpha, max, sum. Row strides of
//     (D+8)/8 and 5 16-byte units are odd, so ldmatrix rows hit distinct banks.
//   per tile: 1. S = Q K^T: warp (m-tile, part) multiplies its 16 heads by the 32 keys over
//     part of the D/16 k-steps (8/MT parts); K tiles are [key][dim], i.e. B = K^T as [n][k],
//     ldmatrix non-trans; partial S to shared memory in the accumulator layout.
//     2. online softmax, FP32: warp w owns heads 2*MT*w .. +2*MT, a lane one key: sum of the
//     parts (fixed order), times scale, keys past the visible ones -inf; p = exp(s - m) is
//     rounded to BF16 into P, and the row sum l adds the rounded p (so out = sum p v / sum p
//     with the same weights); alpha = exp(m_old - m_new).
//     3. O = alpha O + P V with V = the latent part of the same tile ([key][dim]: ldmatrix
//     .trans gives B); warp w owns the 16-column chunks w, w+8, w+16, w+24 of the column group
//     for all heads: MT x 4 x 8 FP32 accumulators per thread (128 at MT = 4, no spills).
//   One split writes out = O / l directly (zeros when nothing is visible: bad slot / len);
//   several write unnormalised partials + (m, l) and mla_combine merges them. Splits: about
//   one wave of CTAs (one per SM: shared memory), at least max(128, 4 HG) keys each.
//   Measured on the H200 (Nsight Compute, 2026-11-30): at 16 heads 25% of DRAM bandwidth and
//   34% of issue slots (one CTA per SM, latency-bound); at 128 heads 98.5 TFLOP/s.
// Numerics (ops.hpp): the only roundings beyond FP32 are q and p to BF16 (RNE).
// Index arithmetic (shared-memory layout, block / split / tile geometry, copies, ldmatrix lane
// addresses, warp roles, result addressing, the launcher's choices): mla_decode_tc_layout.hpp,
// whose block algorithm tests/kernels/test_layout_mla_tc.cpp runs on a CPU emulation of the
// PTX (every block of small problems, races and bounds checked, against the reference).
// Ran on the H200 (2026-11-30): the GPU tests (now tests/kernels/test_ops_mla.cpp; against the
// CPU reference over the same BF16 cache) passed; bench_attention: 1,568 GB/s at 16 heads,
// 98.5 TFLOP/s at 128 (docs/benchmarks.md).
// reference: spec §2.1; Dao et al., "Flash-Decoding for long-context inference" (2023); PTX ISA
// mma.m16n8k16 / ldmatrix fragment layouts (as in flash_attention_tc.cu).
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>

#include "kernels/common.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/mla_decode_tc_layout.hpp"
#include "kernels/mma_sm80.cuh"

namespace ds::cuda {
namespace {

using bf16 = __nv_bfloat16;
using namespace mlatc;   // the index arithmetic (mla_decode_tc_layout.hpp)

struct TcArgs {
  const float *q_lat, *q_pe;
  const uint16_t *ckv, *kpe;
  const int32_t *slot, *len;
  float scale;
  float *out, *po, *pm, *pl;   // partials (N, splits, H, R), (N, splits, H) when splits > 1
  int H, R, Dr, S, L;
  int KS, splits;              // keys per split (multiple of kBK), splits
  int groups, cgroups;         // head groups (16*MT heads), column groups (kCols columns)
  int stages;                  // key tiles in the cp.async ring, 2..kMaxStages
};

__device__ __forceinline__ uint32_t su32(const void* p) { return ptx::smem_addr(p); }
using namespace ptx;   // cp16 (zero-filling 16-byte cp.async), cp_commit/wait, ldsm4(t)
// At most n (0..2) of this thread's newest copy groups still pending.
__device__ __forceinline__ void cp_wait_upto(int n) {
  if (n >= 2) cp_wait<2>();
  else if (n == 1) cp_wait<1>();
  else cp_wait<0>();
}
// c += a (16x16, row) * b (16x8, col), BF16 in, FP32 accumulate. Fragments (g = lane/4,
// t = lane%4): a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..); b0 (k 2t.., n g),
// b1 (k 2t+8.., n g); c0,c1 (g, 2t, 2t+1), c2,c3 (g+8, 2t, 2t+1).
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  ptx::mma_bf16(c, a, b0, b1);
}
// grid (N * groups * cgroups, splits), kNT threads; blockIdx.x = (n, cg, g) with g fastest, so
// the CTAs sharing a row's cache tiles run side by side (L2 reuse). A change of statement order
// or of a barrier here must be mirrored in Block::run of tests/kernels/mla_tc_block_emu.hpp.
// MT = 1 is held to 128 registers (no spills; 134 before, 2026-12-01) so that two blocks fit
// an SM where the ring's shared memory allows (2 stages: 113 KB; the launcher's default, 4
// stages, keeps one; bench_attention --mla-plans times both).
template <int MT>
__global__ void __launch_bounds__(kNT, MT == 1 ? 2 : 1) mla_tc_kernel(const TcArgs a) {
  constexpr int HG = Tiling<MT>::HG, NP = Tiling<MT>::NP, RPW = Tiling<MT>::RPW;
  extern __shared__ __align__(16) unsigned char smraw[];
  const int D = a.R + a.Dr, KSt = row_pitch(D);
  const Smem sm = smem_layout(HG, a.stages, D);
  float* Sp = reinterpret_cast<float*>(smraw);               // (kNW, 16, kSPS) partial scores
  float* alpha = reinterpret_cast<float*>(smraw + sm.alpha);  // (HG) rescale of O this tile
  float* mrow = reinterpret_cast<float*>(smraw + sm.mrow);    // (HG) final running max
  float* lrow = reinterpret_cast<float*>(smraw + sm.lrow);    // (HG) final running sum
  bf16* Qs = reinterpret_cast<bf16*>(smraw + sm.q);           // (HG, KSt) [q_lat | q_pe] BF16
  bf16* Ps = reinterpret_cast<bf16*>(smraw + sm.p);           // (HG, kPS) softmax weights
  unsigned char* Ts = smraw + sm.tiles;                       // stages x (kBK, KSt) tiles
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const BlockPos bp = block_pos(blockIdx.x, a.groups, a.cgroups, HG);
  const int n = bp.n, hg0 = bp.hg0, cg = bp.cg, c0 = bp.c0;
  const int sp = blockIdx.y;
  const int sl = a.slot[n], ln = a.len[n];
  const KeyRange kr = split_keys(sp, a.KS, sl, ln, a.S, a.L);
  const int jb = kr.jb, je = kr.je;
  if (jb >= je) {   // nothing to attend: zeros (bad row) or an empty partial
    if (a.splits == 1) {
      zero_rows(warp, lane, HG, hg0, a.H, group_cols(a.R, c0), [&](int hh, int c) {
        a.out[out_row(n, a.H, hg0 + hh) * a.R + c0 + c] = 0.f;
      });
    } else if (ml_writer(cg, tid, HG, hg0, a.H)) {
      const int64_t at = part_row(n, a.splits, sp, a.H, hg0 + tid);
      a.pm[at] = -INFINITY;
      a.pl[at] = 0.f;
    }
    return;
  }
  const int64_t row0 = cache_row0(sl, a.L);
  const int ntiles = tile_count(jb, je);
  const int CR = chunks(a.R), CD = chunks(D);   // 16-byte chunks per latent row / tile row
  // Tile t -> ring slot t % stages: warp w copies keys w, w+8, ..; lanes walk the chunks.
  auto load_tile = [&](int t) {
    const int j0 = tile_key0(jb, t), nk = tile_keys(je, j0);
    const bf16* dst = reinterpret_cast<const bf16*>(Ts + ring_slot(t, a.stages) * sm.stage);
    tile_copies(warp, lane, nk, CD, [&](int r, int c, bool ok) {
      const uint16_t* src = a.ckv;
      if (ok) src = chunk_src(a.ckv, a.kpe, row0 + j0 + r, c, CR, a.R, a.Dr);
      cp16(su32(dst + tile_elem(r, c, KSt)), src, ok);
    });
  };
  for (int t = 0; t < a.stages - 1; ++t) {   // one commit group per tile, possibly empty
    if (t < ntiles) load_tile(t);
    cp_commit();
  }
  // q of the group, rounded to BF16 (RNE); zero rows for padded heads
  q_pairs(warp, lane, HG, D, [&](int hh, int d) {
    const int h = hg0 + hh;
    float x0 = 0.f, x1 = 0.f;
    if (h < a.H) {
      const float* src = q_src(a.q_lat, a.q_pe, out_row(n, a.H, h), d, a.R, a.Dr);
      x0 = src[0];
      x1 = src[1];
    }
    *reinterpret_cast<__nv_bfloat162*>(Qs + q_elem(hh, d, KSt)) = __floats2bfloat162_rn(x0, x1);
  });
  // S roles: warp = mt_q * NP + part for warp < MT * NP (MT = 3 leaves two warps idle)
  const int mt_q = score_mtile<MT>(warp), part = score_part<MT>(warp);
  const bool qk = score_warp<MT>(warp);
  const int nks = ksteps(D), ks0 = kstep<MT>(part, nks), ks1 = kstep<MT>(part + 1, nks);
  float m_[RPW], l_[RPW];
#pragma unroll
  for (int i = 0; i < RPW; ++i) {
    m_[i] = -INFINITY;
    l_[i] = 0.f;
  }
  float o[MT][kCPW][2][4] = {};   // [m-tile][chunk][8-column half][c0..c3]
  for (int it = 0; it < ntiles; ++it) {
    cp_wait_upto(ring_pending(a.stages));   // tile it has landed (this thread's copies)
    __syncthreads();   // ... everyone's; and every warp is done with tile it - 1
    if (ring_refill(it, a.stages) < ntiles) load_tile(ring_refill(it, a.stages));
    cp_commit();
    const bf16* Tb = reinterpret_cast<const bf16*>(Ts + ring_slot(it, a.stages) * sm.stage);
    const int nk = tile_keys(je, tile_key0(jb, it));
    // 1. partial scores of 16 heads x 32 keys over k-steps [ks0, ks1)
    if (qk) {
      float s[4][4] = {};
      for (int ks = ks0; ks < ks1; ++ks) {
        uint32_t af[4], b0[4], b1[4];
        ldsm4(af, su32(Qs + q_frag(lane, mt_q, ks, KSt)));
        ldsm4(b0, su32(Tb + k_frag(lane, 0, ks, KSt)));
        ldsm4(b1, su32(Tb + k_frag(lane, 1, ks, KSt)));
        mma(s[0], af, b0[0], b0[1]);
        mma(s[1], af, b0[2], b0[3]);
        mma(s[2], af, b1[0], b1[1]);
        mma(s[3], af, b1[2], b1[3]);
      }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        *reinterpret_cast<float2*>(Sp + score_off(warp, lane, nt, 0)) =
            make_float2(s[nt][0], s[nt][1]);
        *reinterpret_cast<float2*>(Sp + score_off(warp, lane, nt, 1)) =
            make_float2(s[nt][2], s[nt][3]);
      }
    }
    __syncthreads();
    // 2. online softmax: heads warp*RPW + i, lane = key
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
      const int r = softmax_head<MT>(warp, i);
      float x = 0.f;
#pragma unroll
      for (int pp = 0; pp < NP; ++pp) x += Sp[score_sum_off<MT>(r, pp, lane)];
      const bool vis = lane < nk;
      x = vis ? x * a.scale : -INFINITY;
      const float mn = fmaxf(m_[i], warp_max(x));   // finite: key 0 of a tile is visible
      const bf16 pb = __float2bfloat16_rn(vis ? expf(x - mn) : 0.f);
      const float al = m_[i] == -INFINITY ? 0.f : expf(m_[i] - mn);
      l_[i] = l_[i] * al + warp_sum(__bfloat162float(pb));
      m_[i] = mn;
      Ps[p_elem(r, lane)] = pb;
      if (lane == 0) alpha[r] = al;
    }
    __syncthreads();
    // 3. O = alpha O + P V over the warp's column chunks
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const float a0 = alpha[acc_head(mt, lane, 0)], a1 = alpha[acc_head(mt, lane, 1)];
#pragma unroll
      for (int i = 0; i < kCPW; ++i)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          o[mt][i][hf][0] *= a0;
          o[mt][i][hf][1] *= a0;
          o[mt][i][hf][2] *= a1;
          o[mt][i][hf][3] *= a1;
        }
    }
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) ldsm4(pa[mt], su32(Ps + p_frag(lane, mt, kk)));
#pragma unroll
      for (int i = 0; i < kCPW; ++i) {
        const int col = pv_col(c0, warp, i);
        if (col < a.R) {
          uint32_t vb[4];
          ldsm4t(vb, su32(Tb + v_frag(lane, kk, col, KSt)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma(o[mt][i][0], pa[mt], vb[0], vb[1]);
            mma(o[mt][i][1], pa[mt], vb[2], vb[3]);
          }
        }
      }
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
      mrow[softmax_head<MT>(warp, i)] = m_[i];
      lrow[softmax_head<MT>(warp, i)] = l_[i];
    }
  }
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {   // accumulator rows g, g + 8
      const int hh = acc_head(mt, lane, hr), h = hg0 + hh;
      if (h >= a.H) continue;
      float* dst;
      float inv = 1.f;
      if (a.splits == 1) {
        dst = a.out + out_row(n, a.H, h) * a.R;
        inv = lrow[hh] > 0.f ? 1.f / lrow[hh] : 0.f;
      } else {
        dst = a.po + part_row(n, a.splits, sp, a.H, h) * a.R;
      }
#pragma unroll
      for (int i = 0; i < kCPW; ++i) {
        const int col = pv_col(c0, warp, i);
        if (col >= a.R) continue;
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          dst[acc_col(col, hf, lane)] = o[mt][i][hf][2 * hr] * inv;
          dst[acc_col(col, hf, lane) + 1] = o[mt][i][hf][2 * hr + 1] * inv;
        }
      }
    }
  if (a.splits > 1 && ml_writer(cg, tid, HG, hg0, a.H)) {
    const int64_t at = part_row(n, a.splits, sp, a.H, hg0 + tid);
    a.pm[at] = mrow[tid];
    a.pl[at] = lrow[tid];
  }
}

// Blocks of mla_tc_kernel<MT> per SM with `smem` dynamic shared memory; opts the kernel into
// that much shared memory first. Both are asked of the runtime once per size (one device per
// process), not on every decode step; a lock keeps concurrent decoding threads off the cache.
template <int MT>
int blocks_per_sm(size_t smem) {
  static std::mutex mu;
  static size_t opted = 0;               // the largest size opted into so far
  static std::map<size_t, int> known;    // occupancy per size
  const std::lock_guard<std::mutex> lock(mu);
  if (smem > opted) {
    DS_CUDA_CHECK(cudaFuncSetAttribute(mla_tc_kernel<MT>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    opted = smem;
  }
  const auto it = known.find(smem);
  if (it != known.end()) return it->second;
  int per_sm = 0;
  DS_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, mla_tc_kernel<MT>, kNT,
                                                              smem));
  known.emplace(smem, per_sm);
  return per_sm;
}

// set_mla_bf16_plan's overrides (0: the launcher's choice) and the latest launch's plan.
std::atomic<int> g_stages_override{0}, g_splits_override{0};
std::mutex g_plan_mu;
MlaPlan g_last_plan;

template <int MT>
void launch(TcArgs a, int64_t N, int64_t L) {
  const size_t smem = smem_bytes(MT, a.stages, a.R + a.Dr);
  const int per_sm = blocks_per_sm<MT>(smem);
  // Split keys so that the CTAs fill the GPU about once (floor: no straggler wave), keeping
  // at least max(128, 4 HG) keys per split (partials cost 8 HG R bytes of traffic per split).
  const int64_t base = N * a.groups * a.cgroups;
  const int64_t target = int64_t(std::max(per_sm, 1)) * std::max(sm_count(), 1);
  SplitPlan plan = split_plan(base, target, L, MT);
  if (const int forced = g_splits_override.load(); forced > 0) {   // a benchmark's choice
    const int64_t ks = (L + forced - 1) / forced;
    plan.KS = (ks + kBK - 1) / kBK * kBK;
    plan.splits = (L + plan.KS - 1) / plan.KS;
  }
  const int64_t splits = plan.splits;
  {
    std::lock_guard<std::mutex> lock(g_plan_mu);
    g_last_plan = {MT, a.stages, int(splits), int(plan.KS), per_sm};
  }
  a.KS = int(plan.KS);
  a.splits = int(splits);
  if (splits > 1) {
    const size_t npart = size_t(N * splits * a.H);
    const size_t po_bytes = (npart * size_t(a.R) * sizeof(float) + 255) / 256 * 256;
    const size_t pm_bytes = (npart * sizeof(float) + 255) / 256 * 256;
    char* base_ptr = static_cast<char*>(scratch(po_bytes + 2 * pm_bytes));
    a.po = reinterpret_cast<float*>(base_ptr);
    a.pm = reinterpret_cast<float*>(base_ptr + po_bytes);
    a.pl = reinterpret_cast<float*>(base_ptr + po_bytes + pm_bytes);
  }
  const dim3 grid{unsigned(base), unsigned(splits)};
  mla_tc_kernel<MT><<<grid, kNT, smem, stream()>>>(a);
  DS_CUDA_LAUNCHED();
  if (splits > 1) mla_combine(a.po, a.pm, a.pl, a.out, N, a.H, a.R, splits);
}

}  // namespace

int mla_max_smem_optin() {
  static const int v = [] {
    int dev = 0, bytes = 0;
    DS_CUDA_CHECK(cudaGetDevice(&dev));
    DS_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return bytes;
  }();
  return v;
}

void set_mla_bf16_plan(int stages, int splits) {
  g_stages_override.store(std::max(stages, 0));
  g_splits_override.store(std::max(splits, 0));
}

MlaPlan mla_bf16_last_plan() {
  std::lock_guard<std::mutex> lock(g_plan_mu);
  return g_last_plan;
}

bool mla_bf16_supported(int64_t R, int64_t Dr) {
  return R > 0 && Dr >= 0 && R % 16 == 0 && Dr % 16 == 0 && R + Dr <= (int64_t(1) << 20) &&
         smem_bytes(1, 2, R + Dr) <= size_t(mla_max_smem_optin());
}

void mla_latent_attention_bf16(const float* q_lat, const float* q_pe, const uint16_t* ckv,
                               const uint16_t* kpe, const int32_t* slot, const int32_t* len,
                               float scale, float* out, const MlaShape& s) {
  if (s.N == 0 || s.H == 0 || s.R == 0) return;
  if (s.S == 0 || s.L == 0) {   // no valid row: all zeros
    DS_CUDA_CHECK(cudaMemsetAsync(out, 0, size_t(s.N * s.H * s.R) * sizeof(float), stream()));
    return;
  }
  const auto aligned = [](const void* p, uintptr_t a) {
    return reinterpret_cast<uintptr_t>(p) % a == 0;
  };
  if (mla_wgmma() && mla_wgmma_supported(s.H, s.R, s.Dr) && aligned(q_lat, 16) &&
      aligned(q_pe, 16) && aligned(out, 8)) {   // opt-in (mla_decode_sm90.cu)
    mla_latent_attention_sm90(q_lat, q_pe, ckv, kpe, slot, len, scale, out, s);
    return;
  }
  const int64_t D = s.R + s.Dr;
  const size_t cap = size_t(mla_max_smem_optin());
  // Heads: the fewest groups of at most kMaxHeads, each padded to m-tiles of 16; fewer heads
  // per CTA when q and two tiles do not fit.
  const int MT = head_mtiles(s.H, D, cap);
  int stages = ring_stages(MT, D, cap);
  if (const int forced = g_stages_override.load(); forced > 0) {   // a benchmark's choice
    stages = std::min(std::max(forced, 2), kMaxStages);
    while (stages > 2 && smem_bytes(MT, stages, D) > cap) --stages;
  }
  TcArgs a{};
  a.q_lat = q_lat; a.q_pe = q_pe; a.ckv = ckv; a.kpe = kpe; a.slot = slot; a.len = len;
  a.scale = scale; a.out = out;
  a.H = int(s.H); a.R = int(s.R); a.Dr = int(s.Dr); a.S = int(s.S); a.L = int(s.L);
  a.groups = head_groups(s.H, MT);
  a.cgroups = col_groups(s.R);
  a.stages = stages;
  switch (MT) {
    case 1: launch<1>(a, s.N, s.L); break;
    case 2: launch<2>(a, s.N, s.L); break;
    case 3: launch<3>(a, s.N, s.L); break;
    default: launch<4>(a, s.N, s.L); break;
  }
}

}  // namespace ds::cuda
