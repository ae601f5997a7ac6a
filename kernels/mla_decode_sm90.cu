// Absorbed-MLA latent attention over a BF16 cache on Hopper warpgroup MMAs (opt-in,
// DS_MLA_KERNEL=wgmma; not yet run on a GPU), for DeepSeek-V3's latent dims (R 512 + Dr 64)
// and many heads, where the mma.sync kernel (mla_decode_tc.cu) is compute-bound (98.5 TFLOP/s
// at 128 heads on the H200). Same contract as mla_latent_attention_bf16: q and p rounded to
// BF16, everything else FP32.
//   * a block: one row n, 64 heads, the keys of one split; two warpgroups. Each computes the
//     same S = Q K^T (m64n64k16, Q and the key tile K-major in shared memory) and the same
//     online softmax (identical numbers, so nothing is exchanged), then O over its half of the
//     512 latent columns: m64n256k16 with P from registers (FlashAttention-3's accumulator to
//     operand) and V read MN-major from the same cache rows (no transposed copy). S twice is
//     1.5x the products of a split of S and P between the warpgroups, without the shared P
//     and row maxima that split needs.
//   * a ring of 2 stages of 64 cache rows (cp.async, zero past the split's keys; 72 KB each)
//     after Q (72 KB, rounded to BF16 and stored by the threads); index arithmetic in
//     mla_decode_sm90_layout.hpp (its copies, ring and operand reads run on the CPU in
//     tests/kernels/test_layout_mla_sm90.cpp).
//   * one split writes out = O / l; several write unnormalised partials and (m, l) in natural
//     units, merged by mla_combine (mla_decode.cu), as the mma.sync kernel does.
// reference: DeepSeek FlashMLA (the same decomposition of heads, keys and latent columns onto
// warpgroups, there with P exchanged); PTX ISA wgmma (imm-trans-b for MN-major B).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/common.cuh"
#include "kernels/flash_attention_softmax.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/mla_decode_sm90_layout.hpp"
#include "kernels/mla_decode_tc_layout.hpp"
#include "kernels/mma_sm80.cuh"
#include "kernels/sm90_wgmma.cuh"
#include "kernels/sm90_wgmma_bf16.cuh"

namespace ds::cuda {
namespace {

using namespace mla90;
using bf16 = __nv_bfloat16;

struct Sm90Args {
  const float *q_lat, *q_pe;
  const uint16_t *ckv, *kpe;
  const int32_t *slot, *len;
  float scale;
  float *out, *po, *pm, *pl;
  int H, S, L, KS, splits, groups;
};

__global__ void __launch_bounds__(kThreads, 1) mla_sm90_kernel(const Sm90Args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  extern __shared__ uint8_t smem_raw[];
  const uint32_t s0 = ptx::smem_addr(smem_raw), base = (s0 + 1023u) & ~1023u;
  uint8_t* const sp_base = smem_raw + (base - s0);
  const int tid = int(threadIdx.x), wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int n = int(blockIdx.x) / a.groups, hg0 = (int(blockIdx.x) % a.groups) * kHeads;
  const int sp = int(blockIdx.y);
  const int sl = a.slot[n], ln = a.len[n];
  const mlatc::KeyRange kr = mlatc::split_keys(sp, a.KS, sl, ln, a.S, a.L);
  const int jb = kr.jb, je = kr.je;
  // this thread's accumulator rows (heads hg0 + i0, hg0 + i1)
  const int i0 = 16 * warp + (lane >> 2), i1 = i0 + 8;
  if (jb >= je) {   // nothing to attend: zeros (one split) or an empty partial
    for (int e = tid; e < kHeads * 256; e += kThreads) {
      const int hh = e / 256, h = hg0 + hh;
      if (h >= a.H) continue;
      if (a.splits == 1) {
        a.out[mlatc::out_row(n, a.H, h) * kR + (e % 256)] = 0.f;
        a.out[mlatc::out_row(n, a.H, h) * kR + 256 + (e % 256)] = 0.f;
      } else if (e % 256 == 0) {
        const int64_t at = mlatc::part_row(n, a.splits, sp, a.H, h);
        a.pm[at] = -INFINITY;
        a.pl[at] = 0.f;
      }
    }
    return;
  }
  const int64_t row0 = mlatc::cache_row0(sl, a.L);
  const int nt = tiles(jb, je);
  auto stage = [&](int st) { return base + kStage0 + uint32_t(st) * kStageBytes; };
  auto load_tile = [&](int st, int t) {   // cache rows jb + 64 t .. into stage st
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const Unit c = copy_unit(tid, i);
      const int j = jb + t * kKeys + c.r;
      const bool ok = j < je;
      const int64_t key = row0 + j;
      const uint16_t* src = !ok ? a.ckv
                          : c.u < kR / 8 ? a.ckv + key * kR + c.u * 8
                                         : a.kpe + key * kDr + (c.u - kR / 8) * 8;
      ptx::cp16(stage(st) + unit_off(c.r, c.u), src, ok);
    }
  };
  load_tile(0, 0);   // the first commit group, with Q's plain stores before the first barrier
  ptx::cp_commit();
#pragma unroll 2
  for (int i = 0; i < kQUnits; ++i) {   // Q rounded to BF16 (zero rows for padded heads)
    const Unit c = copy_unit(tid, i);   // row = head hh, unit u
    const int h = hg0 + c.r;
    float x[8] = {};
    if (h < a.H) {
      const int64_t qr = mlatc::out_row(n, a.H, h);
      const float* src = c.u < kR / 8 ? a.q_lat + qr * kR + c.u * 8
                                      : a.q_pe + qr * kDr + (c.u - kR / 8) * 8;
      const float4 lo = *reinterpret_cast<const float4*>(src);
      const float4 hi = *reinterpret_cast<const float4*>(src + 4);
      x[0] = lo.x; x[1] = lo.y; x[2] = lo.z; x[3] = lo.w;
      x[4] = hi.x; x[5] = hi.y; x[6] = hi.z; x[7] = hi.w;
    }
    const uint4 v = make_uint4(flash::pack2(x[0], x[1]), flash::pack2(x[2], x[3]),
                               flash::pack2(x[4], x[5]), flash::pack2(x[6], x[7]));
    *reinterpret_cast<uint4*>(sp_base + kQ + unit_off(c.r, c.u)) = v;
  }
  const float sl2 = a.scale * flash::kLog2e;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  float o[32][4] = {}, s[8][4] = {};
  for (int it = 0; it < nt; ++it) {
    ptx::cp_wait<0>();   // tile it has landed (this thread's copies)
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");   // and Q's stores
    __syncthreads();     // everyone's; every warpgroup is done with tile it - 1's stage
    if (it + 1 < nt) load_tile((it + 1) & 1, it + 1);
    ptx::cp_commit();
    const uint32_t tb = stage(it & 1);
    fence_acc(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk)   // S = Q K^T over the 576 dims
      wgmma_ss_n64(s, smem_desc(kmajor_step(base + kQ, kk)), smem_desc(kmajor_step(tb, kk)),
                   kk > 0);
    wgmma_commit_wait_all();
    fence_acc(s);
    // online softmax over the tile's keys (log2 units); keys past je masked
    const int k0 = jb + it * kKeys;
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int t = 0; t < 8; ++t)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int j = k0 + t * 8 + (lane & 3) * 2 + (c & 1);
        const float x = j < je ? s[t][c] * sl2 : -INFINITY;
        s[t][c] = x;
        if (c < 2) mx0 = fmaxf(mx0, x); else mx1 = fmaxf(mx1, x);
      }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mu0 = mx0 == -INFINITY ? 0.f : mx0, mu1 = mx1 == -INFINITY ? 0.f : mx1;
    const float al0 = flash::fast_exp2(m0 - mu0), al1 = flash::fast_exp2(m1 - mu1);
    float r0 = 0.f, r1 = 0.f;
#pragma unroll
    for (int t = 0; t < 8; ++t) {   // p rounded to BF16 here, so l sums the p P V uses
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float p = __bfloat162float(
            __float2bfloat16_rn(flash::fast_exp2(s[t][c] - (c < 2 ? mu0 : mu1))));
        s[t][c] = p;
        if (c < 2) r0 += p; else r1 += p;
      }
    }
    l0 = l0 * al0 + r0;
    l1 = l1 * al1 + r1;
    m0 = mx0;
    m1 = mx1;
#pragma unroll
    for (int t = 0; t < 32; ++t) {
      o[t][0] *= al0; o[t][1] *= al0;
      o[t][2] *= al1; o[t][3] *= al1;
    }
    uint32_t pa[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) flash::acc_to_a(pa[kk], s[2 * kk], s[2 * kk + 1]);
    fence_a(pa);
    fence_acc(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)   // O (this warpgroup's 256 columns) += P V
      wgmma_rs_n256_tb(o, pa[kk], desc_mn_sw128(v_step(tb, wg, kk), kVLbo, kVSbo));
    wgmma_commit_wait_all();
    fence_a(pa);
    fence_acc(o);
  }
  ptx::cp_wait<0>();
  float L0 = l0, L1 = l1;   // row sums over the quad's columns
  L0 += __shfl_xor_sync(0xffffffffu, L0, 1);
  L0 += __shfl_xor_sync(0xffffffffu, L0, 2);
  L1 += __shfl_xor_sync(0xffffffffu, L1, 1);
  L1 += __shfl_xor_sync(0xffffffffu, L1, 2);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int h = hg0 + (half ? i1 : i0);
    if (h >= a.H) continue;
    const float L = half ? L1 : L0;
    float* dst;
    float f = 1.f;
    if (a.splits == 1) {
      dst = a.out + mlatc::out_row(n, a.H, h) * kR;
      f = L > 0.f ? 1.f / L : 0.f;
    } else {
      dst = a.po + mlatc::part_row(n, a.splits, sp, a.H, h) * kR;
      if (wg == 0 && (lane & 3) == 0) {   // natural units: m2 ln 2
        const int64_t at = mlatc::part_row(n, a.splits, sp, a.H, h);
        const float m = half ? m1 : m0;
        a.pm[at] = m == -INFINITY ? -INFINITY : m * flash::kLn2;
        a.pl[at] = L;
      }
    }
#pragma unroll
    for (int t = 0; t < 32; ++t) {
      const int col = 256 * wg + t * 8 + (lane & 3) * 2;
      *reinterpret_cast<float2*>(dst + col) =
          make_float2(o[t][2 * half] * f, o[t][2 * half + 1] * f);
    }
  }
#endif
}

// -1: not read from DS_MLA_KERNEL yet; 0 mma.sync; 1 wgmma (where it takes the problem).
std::atomic<int> g_mla_wgmma{-1};
std::atomic<int64_t> g_mla_wgmma_launches{0};

}  // namespace

bool mla_wgmma() {
  int v = g_mla_wgmma.load();
  if (v < 0) {
    const char* e = std::getenv("DS_MLA_KERNEL");
    if (!e || !*e || std::strcmp(e, "mma") == 0) v = 0;
    else if (std::strcmp(e, "wgmma") == 0) v = 1;
    else throw_cuda_error(std::string("DS_MLA_KERNEL=") + e + ": expected mma or wgmma",
                          __FILE__, __LINE__);
    int expected = -1;
    g_mla_wgmma.compare_exchange_strong(expected, v);
    v = g_mla_wgmma.load();
  }
  return v == 1;
}

void set_mla_wgmma(bool on) { g_mla_wgmma.store(on ? 1 : 0); }

int64_t mla_wgmma_launches() { return g_mla_wgmma_launches.load(); }

bool mla_wgmma_supported(int64_t H, int64_t R, int64_t Dr) {
  return takes(H, R, Dr) && sm90a_loaded() &&
         size_t(kSmemBytes) + 1024 <= size_t(mla_max_smem_optin());
}

void mla_latent_attention_sm90(const float* q_lat, const float* q_pe, const uint16_t* ckv,
                               const uint16_t* kpe, const int32_t* slot, const int32_t* len,
                               float scale, float* out, const MlaShape& s) {
  if (!mla_wgmma_supported(s.H, s.R, s.Dr))
    throw_cuda_error("mla_latent_attention_sm90: needs R 512, Dr 64, at least 64 heads and an "
                     "sm_90a device", __FILE__, __LINE__);
  const auto misaligned = [](const void* p, uintptr_t a) {
    return reinterpret_cast<uintptr_t>(p) % a != 0;
  };
  if (misaligned(q_lat, 16) || misaligned(q_pe, 16) || misaligned(out, 8))
    throw_cuda_error("mla_latent_attention_sm90: q_lat, q_pe must be 16-byte and out 8-byte "
                     "aligned", __FILE__, __LINE__);
  Sm90Args a{};
  a.q_lat = q_lat; a.q_pe = q_pe; a.ckv = ckv; a.kpe = kpe; a.slot = slot; a.len = len;
  a.scale = scale; a.out = out;
  a.H = int(s.H); a.S = int(s.S); a.L = int(s.L);
  a.groups = head_groups(a.H);
  const int64_t blocks = s.N * a.groups;
  const Plan plan = split_plan(blocks, std::max(sm_count(), 1), s.L);
  a.KS = int(plan.KS);
  a.splits = int(plan.splits);
  if (a.splits > 1) {
    const size_t npart = size_t(s.N * a.splits * s.H);
    const size_t po_bytes = (npart * size_t(kR) * sizeof(float) + 255) / 256 * 256;
    const size_t pm_bytes = (npart * sizeof(float) + 255) / 256 * 256;
    char* p = static_cast<char*>(scratch(po_bytes + 2 * pm_bytes));
    a.po = reinterpret_cast<float*>(p);
    a.pm = reinterpret_cast<float*>(p + po_bytes);
    a.pl = reinterpret_cast<float*>(p + po_bytes + pm_bytes);
  }
  const size_t smem = size_t(kSmemBytes) + 1024;
  static const bool opted = [smem] {   // once per process (one device)
    DS_CUDA_CHECK(cudaFuncSetAttribute(mla_sm90_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    return true;
  }();
  (void)opted;
  const dim3 grid{unsigned(blocks), unsigned(a.splits)};
  mla_sm90_kernel<<<grid, kThreads, smem, stream()>>>(a);
  DS_CUDA_LAUNCHED();
  if (a.splits > 1) mla_combine(a.po, a.pm, a.pl, out, s.N, s.H, kR, a.splits);
  g_mla_wgmma_launches.fetch_add(1);
}

}  // namespace ds::cuda
