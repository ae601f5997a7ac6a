// Hopper (sm_90a) causal attention forward on wgmma, reached from attention_forward
// (flash_attention_simt.cu) when selected (DS_ATTENTION=wgmma or set_attention_wgmma; opt-in
// until it has run on a GPU) for head dims (Dk, Dv) in {(64, 64), (96, 64), (128, 128),
// (192, 128)}. Same contract and numbers as the mma.sync forward of flash_attention_tc.cu
// (BF16 operands, FP32 accumulation, online softmax and lse in FP32, the same softmax step),
// with both products on warpgroup MMAs:
//   * block = 2 warpgroups (256 threads), 128 query rows, warpgroup w owning rows 64w..64w+63;
//     key tiles of 64 through a 3-stage cp.async ring shared by both warpgroups;
//   * S (64 x 64 keys) = Q K^T: wgmma m64n64k16 with Q and K both from shared memory, stored
//     in the K-major 128-byte swizzle of the FP8 GEMM (sm90_wgmma.cuh): Dk split into
//     64-column chunks of rows x 128 bytes, one k16 step = 32 bytes;
//   * P stays in registers: wgmma's accumulators are the m16n8 accumulator layout per warp, so
//     the softmax step of the mma.sync kernel applies as is and acc_to_a turns P into the
//     register A operand of O += P V (wgmma m64nDVk16, A from registers);
//   * V enters as V^T (B, H, Dv, Tp) BF16, written by this file's transposing conversion with
//     the key count padded to Tp = 64 * ceil(T / 64) (zeros), so the V^T tile (Dv rows x 64
//     keys = 128 bytes) is K-major like every other operand and its loads never leave a row.
// cp.async writes are generic-proxy writes and wgmma reads through the async proxy, hence
// fence.proxy.async before the barrier that publishes a stage (as in sm90_fp8_gemm.cu).
// The kernel body exists only in the sm_90a build (sm90a_loaded() gates the launch).
// reference: Shah et al., "FlashAttention-3" (2024), section 3 (P from the first GEMM's
// accumulators as the second GEMM's register operand); PTX ISA wgmma (register fragments,
// descriptors).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/flash_attention_common.cuh"
#include "kernels/flash_attention_softmax.cuh"
#include "kernels/mma_sm80.cuh"
#include "kernels/sm90_wgmma.cuh"

namespace ds::cuda {
namespace flash {
namespace {

constexpr int kBQ = 128, kBK = 64, kStages = 3, kThreads = 256;

// V (B, T, H, Dv) F32 -> V^T (B, H, Dv, Tp) BF16, zero for keys t >= T. grid (Tp/64, B*H).
__global__ void to_bf16_vt_kernel(const float* __restrict__ v, bf16* __restrict__ vt, int T,
                                  int H, int Dv, int Tp) {
  __shared__ float tile[64][65];
  const int bh = blockIdx.y, b = bh / H, h = bh % H, t0 = blockIdx.x * 64;
  for (int d0 = 0; d0 < Dv; d0 += 64) {
    for (int e = threadIdx.x; e < 64 * 64; e += blockDim.x) {   // reads along d
      const int tt = e >> 6, dd = e & 63, t = t0 + tt, d = d0 + dd;
      tile[tt][dd] = t < T && d < Dv ? v[((int64_t(b) * T + t) * H + h) * Dv + d] : 0.f;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < 64 * 64; e += blockDim.x) {   // writes along t
      const int dd = e >> 6, tt = e & 63, d = d0 + dd;
      if (d < Dv) vt[(int64_t(bh) * Dv + d) * Tp + t0 + tt] = __float2bfloat16_rn(tile[tt][dd]);
    }
    __syncthreads();
  }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)   // the wgmma pieces exist only in the sm_90a build

// d (64 x 64) = A (64 x 16, shared, desc da) * B (64 x 16, shared, desc db)^T
//                + (scale_d ? d : 0).
__device__ __forceinline__ void wgmma_ss_n64(float (&d)[8][4], uint64_t da, uint64_t db,
                                             int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
        "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
        "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
        "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
        "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "l"(da), "l"(db), "r"(scale_d));
}

// d (64 x 64) += A (64 x 16 in registers: each warp's 16 rows as an m16n8k16 A fragment) *
//                 B (64 x 16, shared, desc db)^T.
__device__ __forceinline__ void wgmma_rs_n64(float (&d)[8][4], const uint32_t (&a)[4],
                                             uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n"
      "}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
        "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
        "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
        "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
        "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

// d (64 x 128) += A (64 x 16 in registers: each warp's 16 rows as an m16n8k16 A fragment) *
//                 B (128 x 16, shared, desc db)^T.
__device__ __forceinline__ void wgmma_rs_n128(float (&d)[16][4], const uint32_t (&a)[4],
                                             uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n"
      "}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
        "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
        "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
        "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
        "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
        "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
        "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
        "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]),
        "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
        "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
        "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
        "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
        "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

template <int N>
__device__ __forceinline__ void fence_acc(float (&d)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int c = 0; c < 4; ++c) asm volatile("" : "+f"(d[i][c])::"memory");
}

template <int DV>
__device__ __forceinline__ void wgmma_pv(float (&o)[DV / 8][4], const uint32_t (&a)[4],
                                         uint64_t db) {
  if constexpr (DV == 64) wgmma_rs_n64(o, a, db);
  else wgmma_rs_n128(o, a, db);
}

// rows [r0, r0 + ROWS) x Dk of one head of q or k (B, T, H, Dk) BF16 -> KC swizzled chunks of
// ROWS x 128 bytes at dst; rows past T and columns past Dk zero-filled.
template <int ROWS, int KC>
__device__ __forceinline__ void load_rows(uint32_t dst, const bf16* src, int64_t rs, int r0,
                                          int T, int Dk) {
#pragma unroll
  for (int i = 0; i < ROWS * KC * 8 / kThreads; ++i) {
    const int e = threadIdx.x + i * kThreads, c = e / (ROWS * 8), r = (e >> 3) % ROWS, ch = e & 7;
    const int col = c * 64 + ch * 8;
    const bool ok = r0 + r < T && col < Dk;
    ptx::cp16(dst + uint32_t(c) * ROWS * 128 + sm90::swizzled(r, ch),
              ok ? src + int64_t(r0 + r) * rs + col : src, ok);
  }
}

// Keys [kb, kb + 64) of one head of V^T (Dv rows of Tp keys) -> DV rows x 128 bytes at dst.
template <int DV>
__device__ __forceinline__ void load_vt(uint32_t dst, const bf16* vth, int Tp, int kb) {
#pragma unroll
  for (int i = 0; i < DV * 8 / kThreads; ++i) {
    const int e = threadIdx.x + i * kThreads, r = e >> 3, ch = e & 7;
    ptx::cp16(dst + sm90::swizzled(r, ch), vth + int64_t(r) * Tp + kb + ch * 8, true);
  }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// grid (cdiv(T, 128), B*H), 256 threads. Shared: Q (KC chunks x 128 rows), then kStages x
// [K (KC chunks x 64 rows), V^T (DV rows)], each piece a multiple of 1024 bytes.
template <int DK, int DV>
__global__ void __launch_bounds__(kThreads, 1)
    sm90_fwd_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                    const bf16* __restrict__ vt, const int32_t* __restrict__ seg,
                    const int32_t* __restrict__ kfirst, float scale, float* __restrict__ out,
                    float* __restrict__ lse, int T, int H, int Tp) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int KC = (DK + 63) / 64, QB = KC * kBQ * 128, KB = KC * kBK * 128, VB = DV * 128;
  extern __shared__ uint8_t smem_raw[];
  __shared__ int bound;
  const uint32_t base = (uint32_t(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  auto stage_k = [&](int s) { return base + QB + uint32_t(s) * (KB + VB); };
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBQ;   // the longest rows first
  const int64_t rq = int64_t(H) * DK, head = int64_t(b) * T * H + h;
  const bf16* qh = q + head * DK;
  const bf16* kh = k + head * DK;
  const bf16* vth = vt + (int64_t(b) * H + h) * DV * Tp;
  const int32_t* sb = seg ? seg + int64_t(b) * T : nullptr;
  const int klo = block_klo(kfirst, int64_t(b) * T, q0, T, kBQ, &bound);
  const int khi = min(q0 + kBQ, T);
  const int kt0 = klo / kBK, nkt = (khi + kBK - 1) / kBK - kt0;
  auto load_tile = [&](int s, int it) {   // key tile kt0 + it into stage s
    const int kb = (kt0 + it) * kBK;
    load_rows<kBK, KC>(stage_k(s), kh, rq, kb, T, DK);
    load_vt<DV>(stage_k(s) + KB, vth, Tp, kb);
  };
  load_rows<kBQ, KC>(base, qh, rq, q0, T, DK);   // in the first commit group
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nkt) load_tile(s, s);
    ptx::cp_commit();
  }
  const int r0 = q0 + wg * 64;                     // this warpgroup's first row
  const int i0 = r0 + warp * 16 + (lane >> 2), i1 = i0 + 8;
  const int s0 = sb && i0 < T ? sb[i0] : 0, s1 = sb && i1 < T ? sb[i1] : 0;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const float sl = scale * kLog2e;
  float o[DV / 8][4] = {}, s[kBK / 8][4] = {};
  const uint32_t qa = base + uint32_t(wg) * 64 * 128;   // this warpgroup's 64 rows of Q
  for (int it = 0; it < nkt; ++it) {
    ptx::cp_wait<kStages - 2>();   // this thread's copies of tile it have landed
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();               // everyone's have; the stage refilled below is free
    if (it + kStages - 1 < nkt) load_tile((it + kStages - 1) % kStages, it + kStages - 1);
    ptx::cp_commit();
    const int kb = (kt0 + it) * kBK;
    if (kb > r0 + 63 || r0 >= T) continue;   // no row of this warpgroup sees the tile
    const uint32_t ks_ = stage_k(it % kStages);
    fence_acc(s);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int kk = 0; kk < DK / 16; ++kk) {   // k16 step kk: chunk kk / 4, bytes 32 (kk % 4)
      const uint64_t da = sm90::smem_desc(qa + uint32_t(kk / 4) * kBQ * 128) + 2 * (kk % 4);
      const uint64_t db = sm90::smem_desc(ks_ + uint32_t(kk / 4) * kBK * 128) + 2 * (kk % 4);
      wgmma_ss_n64(s, da, db, kk > 0);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    fence_acc(s);
    const bool need = sb || kb + kBK - 1 > r0 || kb + kBK > T || r0 + 64 > T;
    softmax_step<kBK / 8, DV / 8>(s, o, m0, m1, l0, l1, sl, need, i0, i1, kb, T, sb, s0, s1,
                                  lane);
    uint32_t a[kBK / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) acc_to_a(a[kk], s[2 * kk], s[2 * kk + 1]);
    fence_acc(o);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk)   // keys 16 kk..: bytes 32 kk of each V^T row
      wgmma_pv<DV>(o, a[kk], sm90::smem_desc(ks_ + KB) + 2 * kk);
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    fence_acc(o);
  }
  ptx::cp_wait<0>();
  float L0 = l0, L1 = l1;
  L0 += __shfl_xor_sync(0xffffffffu, L0, 1);
  L0 += __shfl_xor_sync(0xffffffffu, L0, 2);
  L1 += __shfl_xor_sync(0xffffffffu, L1, 1);
  L1 += __shfl_xor_sync(0xffffffffu, L1, 2);
  const float inv0 = L0 > 0.f ? 1.f / L0 : 0.f, inv1 = L1 > 0.f ? 1.f / L1 : 0.f;
#pragma unroll
  for (int nt = 0; nt < DV / 8; ++nt) {
    const int col = nt * 8 + (lane & 3) * 2;
    if (i0 < T)
      *reinterpret_cast<float2*>(out + (head + int64_t(i0) * H) * DV + col) =
          make_float2(o[nt][0] * inv0, o[nt][1] * inv0);
    if (i1 < T)
      *reinterpret_cast<float2*>(out + (head + int64_t(i1) * H) * DV + col) =
          make_float2(o[nt][2] * inv1, o[nt][3] * inv1);
  }
  if ((lane & 3) == 0) {
    const int64_t lb = (int64_t(b) * H + h) * T;
    if (i0 < T) lse[lb + i0] = m0 * kLn2 + logf(L0);
    if (i1 < T) lse[lb + i1] = m1 * kLn2 + logf(L1);
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL (elsewhere never launched: sm90a_loaded() is false)
}


template <int DK, int DV>
constexpr size_t sm90_fwd_smem() {
  constexpr int KC = (DK + 63) / 64;
  return size_t(KC) * kBQ * 128 + size_t(kStages) * (size_t(KC) * kBK * 128 + DV * 128) + 1024;
}

template <int DK, int DV>
void sm90_forward(const Launch& L, const bf16* q, const bf16* k, const bf16* vt, int64_t Tp,
                  float* out, float* lse) {
  constexpr size_t smem = sm90_fwd_smem<DK, DV>();
  auto kern = sm90_fwd_kernel<DK, DV>;
  set_smem(kern, smem);
  const dim3 grid(unsigned(cdiv(L.s.T, kBQ)), unsigned(L.s.B * L.s.H));
  kern<<<grid, kThreads, smem, stream()>>>(q, k, vt, L.seg, L.kfirst, L.scale, out, lse,
                                           int(L.s.T), int(L.s.H), int(Tp));
  DS_CUDA_LAUNCHED();
}

// -1: not read from DS_ATTENTION yet; 0 mma.sync; 1 wgmma.
std::atomic<int> g_wgmma{-1};
std::atomic<int64_t> g_launches{0};

}  // namespace

int64_t sm90_keys_padded(int64_t T) { return (T + kBK - 1) / kBK * kBK; }

bool sm90_attention(int64_t Dk, int64_t Dv) {
  return attention_wgmma() && attention_wgmma_supported(Dk, Dv);
}

void convert_vt(const float* v, bf16* vt, const AttnShape& s, int64_t Tp) {
  const dim3 grid(unsigned(Tp / 64), unsigned(s.B * s.H));
  to_bf16_vt_kernel<<<grid, 256, 0, stream()>>>(v, vt, int(s.T), int(s.H), int(s.Dv), int(Tp));
  DS_CUDA_LAUNCHED();
}

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

void set_attention_wgmma(bool on) { flash::g_wgmma.store(on ? 1 : 0); }

bool attention_wgmma_supported(int64_t Dk, int64_t Dv) {
  const bool dims = (Dk == 64 && Dv == 64) || (Dk == 96 && Dv == 64) ||
                    (Dk == 128 && Dv == 128) || (Dk == 192 && Dv == 128);
  return dims && sm90a_loaded();
}

int64_t attention_wgmma_launches() { return flash::g_launches.load(); }

bool attention_wgmma() {
  int v = flash::g_wgmma.load();
  if (v < 0) {
    const char* e = std::getenv("DS_ATTENTION");
    if (!e || !*e || std::strcmp(e, "mma") == 0) v = 0;
    else if (std::strcmp(e, "wgmma") == 0) v = 1;
    else throw_cuda_error(std::string("DS_ATTENTION=") + e + ": expected mma or wgmma", __FILE__,
                          __LINE__);
    int expected = -1;
    flash::g_wgmma.compare_exchange_strong(expected, v);
    v = flash::g_wgmma.load();
  }
  return v == 1;
}

}  // namespace ds::cuda
