// The forward of the Hopper wgmma attention (flash_attention_sm90.cu has the design, the
// backward and the switches): the kernel (lockstep, staggered or pipelined warpgroups, 128- or
// 64-row blocks) and its launcher, reached through flash::sm90_forward.
#include <atomic>

#include "kernels/flash_attention.cuh"
#include "kernels/flash_attention_common.cuh"
#include "kernels/flash_attention_sm90_io.cuh"
#include "kernels/flash_attention_sm90_launch.cuh"
#include "kernels/flash_attention_sm90_layout.hpp"
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

// grid (cdiv(T, BQ), B*H), block_threads(BQ) threads (a warpgroup per 64 rows; BQ = kBQ64
// leaves room for two blocks per SM); shared layout fwd_smem (Q, then NS x [K, V^T]). STAG:
// the staggered warpgroups of the layout header (128-row blocks), NS = kStagStages. PIPE
// (DS_ATTENTION_SCHEDULE=pipelined): each warpgroup issues tile it's S = Q K^T and then the
// previous tile's O += P V as two wgmma groups, waits for S only, runs the softmax of tile it
// while P V runs, then waits for it, rescales O and packs tile it's P (FlashAttention-3's
// intra-warpgroup overlap); the same operations on O in the same order as lockstep, so the
// same bits. Tile it - 1's V is read after barrier it: the ring of STAG (NS = kStagStages).
template <int DK, int DV, int BQ, bool STAG, bool PIPE = false>
__global__ void __launch_bounds__(block_threads(BQ), BQ == kBQ64 ? 2 : 1)
    sm90_fwd_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                    const bf16* __restrict__ vt, const int32_t* __restrict__ seg,
                    const int32_t* __restrict__ kfirst, float scale, float* __restrict__ out,
                    float* __restrict__ lse, int T, int H, int Tp) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(!STAG || BQ == kBQ, "staggered: two warpgroups");
  static_assert(!(STAG && PIPE), "one schedule");
  constexpr bool LAG = STAG || PIPE;   // a tile is still read after the next one's barrier
  constexpr int NS = LAG ? kStagStages : kStages;
  constexpr FwdSmem L = fwd_smem(DK, DV, BQ, NS);
  constexpr int NT = block_threads(BQ);
  extern __shared__ uint8_t smem_raw[];
  __shared__ int bound;
  const uint32_t base = (uint32_t(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  auto stage_k = [&](int s) { return base + L.stages + uint32_t(s) * L.stage_bytes; };
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int q0 = block_row0(true, blockIdx.x, gridDim.x, BQ);   // the longest rows first
  const int64_t rq = int64_t(H) * DK, head = int64_t(b) * T * H + h;
  const bf16* qh = q + head * DK;
  const bf16* kh = k + head * DK;
  const bf16* vth = vt + t_index(int64_t(b) * H + h, 0, 0, DV, Tp);
  const int32_t* sb = seg ? seg + int64_t(b) * T : nullptr;
  const Tiles tiles =
      key_tiles(block_klo(kfirst, int64_t(b) * T, q0, T, BQ, &bound), q0, T, BQ);
  const int kt0 = tiles.t0, nkt = tiles.t1 - tiles.t0;
  auto load_tile = [&](int s, int it) {   // key tile kt0 + it into stage s
    const int kb = (kt0 + it) * kBK;
    load_rows<kBK, DK, NT>(stage_k(s), kh, rq, kb, T);
    load_t<DV, NT>(stage_k(s) + L.vt, vth, Tp, kb);
  };
  load_rows<BQ, DK, NT>(base + L.q, qh, rq, q0, T);   // in the first commit group
#pragma unroll
  for (int s = 0; s < ring_dist(NS, LAG); ++s) {
    if (s < nkt) load_tile(s, s);
    ptx::cp_commit();
  }
  const int r0 = q0 + wg * 64;                     // this warpgroup's first row
  const int i0 = thread_row(q0, wg, warp, lane, 0), i1 = thread_row(q0, wg, warp, lane, 1);
  const int s0 = sb && i0 < T ? sb[i0] : 0, s1 = sb && i1 < T ? sb[i1] : 0;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const float sl = scale * kLog2e;
  float o[DV / 8][4] = {}, s[kBK / 8][4] = {};
  const uint32_t qa = wg_rows(base + L.q, wg);   // this warpgroup's 64 rows of Q
  // Barrier `it` of the ring: tile it has landed and is published; refill a free stage.
  auto ring_sync = [&](int it) {
    ptx::cp_wait<ring_wait(NS, LAG)>();   // this thread's copies of tile it have landed
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    ring_barrier<LAG, NT>();              // everyone's have; the stage refilled is free
    if (const int nx = ring_refill(it, NS, LAG); nx < nkt) load_tile(ring_stage(nx, NS), nx);
    ptx::cp_commit();
  };
  // no row of this warpgroup sees tile it (warpgroup-uniform)
  auto skip = [&](int it) { return skip_query_rows((kt0 + it) * kBK, r0, T); };
  uint32_t a[kBK / 16][4];   // P of a tile, the register A operand of O += P V
  auto issue_s = [&](int it) {   // S = Q K^T over tile it, issued (not committed)
    const uint32_t ks_ = stage_k(ring_stage(it, NS));
    fence_acc(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < DK / 16; ++kk)
      wgmma_ss_n64(s, smem_desc(kstep(qa, BQ, kk)), smem_desc(kstep(ks_, kBK, kk)), kk > 0);
  };
  auto issue_pv = [&](int it) {   // O += P V over tile it (P in a), issued (not committed)
    const uint32_t ks_ = stage_k(ring_stage(it, NS));
    fence_a(a);
    fence_acc(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk)   // keys 16 kk..: the V^T tile's k16 step kk
      wgmma_rs(o, a[kk], smem_desc(kstep(ks_ + L.vt, DV, kk)));
  };
  auto probs = [&](int it) {   // the softmax step's P (in s), max and sums; O's factors
    const int kb = (kt0 + it) * kBK;
    const bool need = sb || kb + kBK - 1 > r0 || kb + kBK > T || r0 + 64 > T;
    return softmax_probs<kBK / 8>(s, m0, m1, l0, l1, sl, need, i0, i1, kb, T, sb, s0, s1, lane);
  };
  auto pack = [&] {
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) acc_to_a(a[kk], s[2 * kk], s[2 * kk + 1]);
  };
  auto scores = [&](int it) {   // S = Q K^T over tile it, waited for
    issue_s(it);
    wgmma_commit_wait_all();
    fence_acc(s);
  };
  auto finish = [&](int it) {   // the softmax step and O += P V over tile it
    rescale_o(o, probs(it));
    pack();
    issue_pv(it);
    wgmma_commit_wait_all();
    fence_a(a);
    fence_acc(o);
  };
  if constexpr (PIPE) {
    // Runs of tiles this warpgroup sees, each: its first tile alone, then every tile's S
    // issued before the previous tile's P V (both groups waited for within the iteration, so
    // that no wgmma group is in flight across the loop's back edge, a run's boundary or a
    // barrier: where one was, ptxas serialised every wgmma), then the last P V; the skipped
    // tiles between runs only meet the ring's barrier. The two warpgroups reach that barrier
    // from different places of the code (a run's first tile, the steady loop, a skipped
    // tile), so it is the named barrier of the staggered schedule (ring_barrier<LAG>).
    for (int it = 0; it < nkt;) {
      for (; it < nkt && skip(it); ++it) ring_sync(it);
      if (it >= nkt) break;
      ring_sync(it);
      scores(it);
      rescale_o(o, probs(it));
      pack();
      for (++it; it < nkt && !skip(it); ++it) {
        ring_sync(it);
        issue_s(it);
        wgmma_commit();
        issue_pv(it - 1);
        wgmma_commit();
        wgmma_wait<1>();   // S of tile it; P V of tile it - 1 still runs under the softmax
        fence_acc(s);
        const float2 al = probs(it);
        wgmma_wait<0>();
        fence_a(a);
        fence_acc(o);
        rescale_o(o, al);
        pack();
      }
      issue_pv(it - 1);   // before the next run's (or the end's) barrier: its V is there
      wgmma_commit_wait_all();
      fence_a(a);
      fence_acc(o);
    }
  } else if (!STAG || wg == 0) {
    for (int it = 0; it < nkt; ++it) {
      ring_sync(it);
      if (!skip(it)) {
        scores(it);
        finish(it);
      }
    }
  } else {   // warpgroup 1, staggered: barrier it + 1 between S and the rest of tile it
    if (nkt > 0) ring_sync(0);
    for (int it = 0; it < nkt; ++it) {
      const bool sk = skip(it);
      if (!sk) scores(it);
      if (it + 1 < nkt) ring_sync(it + 1);
      if (!sk) finish(it);
    }
  }
  ptx::cp_wait<0>();
  float L0 = l0, L1 = l1;
  L0 += __shfl_xor_sync(0xffffffffu, L0, 1);
  L0 += __shfl_xor_sync(0xffffffffu, L0, 2);
  L1 += __shfl_xor_sync(0xffffffffu, L1, 1);
  L1 += __shfl_xor_sync(0xffffffffu, L1, 2);
  const float inv0 = L0 > 0.f ? 1.f / L0 : 0.f, inv1 = L1 > 0.f ? 1.f / L1 : 0.f;
  store_rows(out, o, head, H, T, i0, i1, lane, inv0, inv1);
  if ((lane & 3) == 0) {
    const int64_t lb = (int64_t(b) * H + h) * T;
    if (i0 < T) lse[lb + i0] = m0 * kLn2 + logf(L0);
    if (i1 < T) lse[lb + i1] = m1 * kLn2 + logf(L1);
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL (elsewhere never launched: sm90a_loaded() is false)
}

template <int DK, int DV, int BQ, bool LAG = false>   // LAG: the ring of STAG and PIPE
constexpr size_t sm90_fwd_smem() {   // + room to align the base to 1024
  return size_t(fwd_smem(DK, DV, BQ, LAG ? kStagStages : kStages).bytes) + 1024;
}

template <int DK, int DV, int BQ, bool STAG = false, bool PIPE = false>
void sm90_fwd_launch(const Launch& L, const bf16* q, const bf16* k, const bf16* vt, int64_t Tp,
                     float* out, float* lse) {
  constexpr size_t smem = sm90_fwd_smem<DK, DV, BQ, STAG || PIPE>();
  static_assert(smem <= 227 * 1024, "sm90_fwd_kernel: shared memory");
  auto kern = sm90_fwd_kernel<DK, DV, BQ, STAG, PIPE>;
  set_smem(kern, smem);
  const dim3 grid(unsigned(cdiv(L.s.T, BQ)), unsigned(L.s.B * L.s.H));
  kern<<<grid, block_threads(BQ), smem, stream()>>>(q, k, vt, L.seg, L.kfirst, L.scale, out,
                                                    lse, int(L.s.T), int(L.s.H), int(Tp));
  DS_CUDA_LAUNCHED();
}

template <int DK, int DV>
void sm90_forward(const Launch& L, const bf16* q, const bf16* k, const bf16* vt, int64_t Tp,
                  float* out, float* lse) {
  if constexpr (rows64_fwd(DK, DV)) {
    if (attention_rows64()) {
      constexpr size_t smem = sm90_fwd_smem<DK, DV, kBQ64>();
      static const bool two = [] {
        set_smem(sm90_fwd_kernel<DK, DV, kBQ64, false>, smem);
        return two_per_sm(sm90_fwd_kernel<DK, DV, kBQ64, false>, smem, block_threads(kBQ64));
      }();
      if (two) {
        sm90_fwd_launch<DK, DV, kBQ64>(L, q, k, vt, Tp, out, lse);
        g_rows64_launches.fetch_add(1);
        return;
      }
    }
  }
  if constexpr (stag_fwd(DK, DV)) {
    if (attention_staggered()) {
      sm90_fwd_launch<DK, DV, kBQ, true>(L, q, k, vt, Tp, out, lse);
      g_stag_launches.fetch_add(1);
      return;
    }
    if (attention_pipelined()) {
      sm90_fwd_launch<DK, DV, kBQ, false, true>(L, q, k, vt, Tp, out, lse);
      g_pipe_launches.fetch_add(1);
      return;
    }
  }
  sm90_fwd_launch<DK, DV, kBQ>(L, q, k, vt, Tp, out, lse);
}

}  // namespace

void sm90_forward(const Launch& L, const bf16* q, const bf16* k, const bf16* vt, int64_t Tp,
                  float* out, float* lse) {
  const int64_t Dk = L.s.Dk, Dv = L.s.Dv;
  if (Dk == 64) sm90_forward<64, 64>(L, q, k, vt, Tp, out, lse);
  else if (Dk == 96) sm90_forward<96, 64>(L, q, k, vt, Tp, out, lse);
  else if (Dk == 128 && Dv == 128) sm90_forward<128, 128>(L, q, k, vt, Tp, out, lse);
  else sm90_forward<192, 128>(L, q, k, vt, Tp, out, lse);
  g_launches.fetch_add(1);
}

}  // namespace flash
}  // namespace ds::cuda
