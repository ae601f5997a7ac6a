// E4M3 quantisation kernels (see fp8_quant.cuh). Bit-exactness with the CPU reference
// (lib/ops/cpu/ref_fp8.cpp, compiled with -ffp-contract=off) rests on:
//   amax   a running max of |x| as integer bits with NaN mapped to 0 (order-free, exact; +inf
//          kept), the same value as the reference's sequential `if (a > m) m = a`;
//   scale  amax / 448 with an IEEE division (__fdiv_rn), the act clamp and the weights'
//          zero-group rule first, a scale without the act clamp raised to FLT_MIN; UE8M0
//          rounds up to a power of two on the bits (exact);
//   codes  e4m3(x / s): __fdiv_rn then the hardware RNE saturating cast (cuda_fp8.h,
//          cvt.rn.satfinite.e4m3x2.f32 on sm_89+); NaN handled first: a NaN x keeps its sign
//          (x86 propagates the NaN operand of a division); inf / inf (an infinite element of a
//          group whose scale is inf) gives x86's default NaN, which has the sign bit set, so
//          code 0xff — the GPU's canonical NaN is positive, hence the explicit rule;
//   fake   e4m3_value(code) * s with __fmul_rn.
// Groupings: 1x128 one warp per group, values kept in registers (one read of x); 128x1 and
// 128x128 one block per 128-row strip x 32 columns / per block, also one read; tensor two
// passes (global amax by atomicMax on the bits, then the element-wise pass). The transposed
// 128x1 quantiser and the many-matrix 128x128 one stage codes in shared memory to write
// transposed rows contiguously.
#include <atomic>
#include <climits>
#include <vector>

#include "kernels/bf16_rows.cuh"
#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/fp8_quant_groups.cuh"
#include "kernels/fp8_quant_tiles.cuh"
#include "kernels/multi_tensor_table.cuh"

namespace ds::cuda {

namespace {

using namespace fp8q;       // the quantisers (fp8_quant_tiles.cuh, fp8_quant_groups.cuh)
using namespace bf16rows;   // bf16_round and the rounding row gathers (bf16_rows.cuh)

unsigned cap_grid(int64_t n) { return unsigned(n < 1 ? 1 : (n > 65535 ? 65535 : n)); }

}  // namespace

void fp8_quantize(const float* x, int64_t M, int64_t K, Fp8Grouping g, bool ue8m0, bool act,
                  uint8_t* q, float* scales, float* fake) {
  QArgs p{x, M, K, 0, ue8m0, act, q, scales, fake};
  switch (g) {
    case Fp8Grouping::row_1x128: {
      if (M == 0 || K == 0) return;
      p.SC = cdiv(K, kBlk);
      quant_row_kernel<<<grid_for(M * p.SC, 8, 65535LL * 16), 256, 0, stream()>>>(p);
      break;
    }
    case Fp8Grouping::col_128x1: {
      if (M == 0 || K == 0) return;
      p.SC = K;
      const dim3 grid(unsigned(cdiv(K, 32)), cap_grid(cdiv(M, kBlk)));
      quant_tile_kernel<1><<<grid, dim3(32, 8), 0, stream()>>>(p);
      break;
    }
    case Fp8Grouping::block_128x128: {
      if (M == 0 || K == 0) return;
      p.SC = cdiv(K, kBlk);
      const dim3 grid(unsigned(p.SC), cap_grid(cdiv(M, kBlk)));
      quant_tile_kernel<4><<<grid, dim3(32, 8), 0, stream()>>>(p);
      break;
    }
    case Fp8Grouping::tensor: {
      // Runs even for an empty tensor: its one scale is still written (scale_of(0)).
      const int64_t n = M * K;
      p.SC = 1;
      auto* amax = static_cast<uint32_t*>(scratch(sizeof(uint32_t)));
      DS_CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(uint32_t), stream()));
      if (n > 0) {
        amax_kernel<<<grid_for(n, 256, 1024), 256, 0, stream()>>>(x, n, amax);
        DS_CUDA_LAUNCHED();
      }
      quant_tensor_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(p, n, amax);
      break;
    }
  }
  DS_CUDA_LAUNCHED();
}

namespace {
std::atomic<bool> g_quant_tiles{false};
std::atomic<int64_t> g_quant_tiles_launches[5] = {};
void count_tiles(Fp8TilesKind kind) { g_quant_tiles_launches[int(kind)].fetch_add(1); }
}  // namespace

void set_fp8_quant_tiles(bool on) { g_quant_tiles.store(on); }
bool fp8_quant_tiles() { return g_quant_tiles.load(); }
int64_t fp8_quant_tiles_launches(Fp8TilesKind kind) {
  return g_quant_tiles_launches[int(kind)].load();
}
int64_t fp8_quant_tiles_launches() {
  int64_t n = 0;
  for (const auto& c : g_quant_tiles_launches) n += c.load();
  return n;
}

bool fp8_quantize_tiles(const float* x, int64_t M, int64_t K, bool ue8m0, bool act, bool fake,
                        uint8_t* q, float* s, uint8_t* qt, float* st) {
  const fp8q::TileArgs p{x, M, K, ue8m0, act, q, s, qt, st};
  if (!fp8q::tiles_fit(p, fake)) return false;
  if (M == 0 || K == 0) return true;
  const bool rows = q != nullptr, cols = qt != nullptr;
  const dim3 grid = fp8q::tiles_grid(M, K);
  auto* kernel = !cols ? fp8q::quant_tiles_kernel<true, false, false>
                 : !rows ? (fake ? fp8q::quant_tiles_kernel<false, true, true>
                                 : fp8q::quant_tiles_kernel<false, true, false>)
                         : (fake ? fp8q::quant_tiles_kernel<true, true, true>
                                 : fp8q::quant_tiles_kernel<true, true, false>);
  kernel<<<grid, 256, 0, stream()>>>(p);
  DS_CUDA_LAUNCHED();
  count_tiles(fake ? Fp8TilesKind::requant
                   : rows && cols ? Fp8TilesKind::dual
                   : cols ? Fp8TilesKind::cols : Fp8TilesKind::rows);
  return true;
}

void fp8_dequantize(const uint8_t* q, const float* scales, int64_t M, int64_t K, Fp8Grouping g,
                    float* out) {
  if (M == 0 || K == 0) return;
  int64_t gr = 1, gc = 1, SC = 1;
  switch (g) {
    case Fp8Grouping::row_1x128: gr = 1; gc = kBlk; SC = cdiv(K, kBlk); break;
    case Fp8Grouping::col_128x1: gr = kBlk; gc = 1; SC = K; break;
    case Fp8Grouping::block_128x128: gr = kBlk; gc = kBlk; SC = cdiv(K, kBlk); break;
    case Fp8Grouping::tensor: gr = M; gc = K; SC = 1; break;
  }
  const dim3 grid(unsigned(cdiv(K, 1024)), cap_grid(M));
  dequant_kernel<<<grid, 256, 0, stream()>>>(q, scales, M, K, gr, gc, SC, out);
  DS_CUDA_LAUNCHED();
}

void fp8_quantize_transposed(const float* x, int64_t M, int64_t K, bool ue8m0, bool act,
                             uint8_t* qt, float* st) {
  if (M == 0 || K == 0) return;
  const dim3 grid(unsigned(cdiv(K, 32)), cap_grid(cdiv(M, kBlk)));
  quant_cols_t_kernel<<<grid, dim3(32, 8), 0, stream()>>>(x, M, K, ue8m0, act, qt, st);
  DS_CUDA_LAUNCHED();
}

void fp8_quantize_blocks_multi(const Fp8BlockJob* jobs, int count, bool ue8m0, bool tiles) {
  std::vector<BlockEntry> tab;
  int64_t total = 0;
  for (int i = 0; i < count; ++i) {
    const Fp8BlockJob& j = jobs[i];
    if (j.M <= 0 || j.K <= 0) continue;
    tiles = tiles && fp8q::blocks_tiles_fit(j);   // the tile kernel takes every job
    const int64_t SR = cdiv(j.M, kBlk), SC = cdiv(j.K, kBlk);
    tab.push_back({j, SR, SC, total});
    total += SR * SC;
  }
  if (total == 0) return;
  if (total > INT32_MAX) raise_cuda("fp8_quantize_blocks_multi: too many blocks",
                                    cudaErrorInvalidValue, __FILE__, __LINE__);
  const PoolBuffer dtab(tab.size() * sizeof(BlockEntry));
  upload_table(tab, dtab);
  if (tiles) {
    fp8q::quant_blocks_tiles_kernel<<<unsigned(total), 256, 0, stream()>>>(
        dtab.as<BlockEntry>(), int(tab.size()), ue8m0);
    count_tiles(Fp8TilesKind::blocks);
  } else {
    quant_blocks_multi_kernel<<<unsigned(total), dim3(32, 8), 0, stream()>>>(
        dtab.as<BlockEntry>(), int(tab.size()), ue8m0);
  }
  DS_CUDA_LAUNCHED();
}

void bf16_round(const float* x, float* out_f32, uint16_t* out_codes, int64_t n) {
  if (n <= 0) return;
  auto bits = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  const int64_t n4 = n / 4;
  // One output (the callers pass one), x 16-byte aligned, the output 8 / 16: the vector body,
  // then the last n % 4 elements by the scalar kernel (DS_CUDA_FUSED=0: the scalar kernel,
  // as verified on the H200).
  const bool one = (out_f32 == nullptr) != (out_codes == nullptr);
  if (fused_ops() && one && n4 > 0 && bits(x) % 16 == 0 &&
      (out_codes ? bits(out_codes) % 8 == 0 : bits(out_f32) % 16 == 0)) {
    const auto* x4 = reinterpret_cast<const float4*>(x);
    if (out_codes)
      bf16_round4_kernel<true><<<grid_for(n4, 256), 256, 0, stream()>>>(x4, out_codes, n4);
    else
      bf16_round4_kernel<false><<<grid_for(n4, 256), 256, 0, stream()>>>(x4, out_f32, n4);
    DS_CUDA_LAUNCHED();
    const int64_t done = 4 * n4;
    if (done == n) return;
    x += done;
    if (out_codes) out_codes += done;
    else out_f32 += done;
    n -= done;
  }
  bf16_round_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(x, out_f32, out_codes, n);
  DS_CUDA_LAUNCHED();
}

void gather_rows_bf16(const float* src, int64_t n_src, const int32_t* rows, const float* w,
                      float* out_f32, uint16_t* out_codes, int64_t M, int64_t C) {
  if (M <= 0 || C <= 0) return;
  auto bits = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  const bool codes = out_codes != nullptr;
  void* out = codes ? static_cast<void*>(out_codes) : static_cast<void*>(out_f32);
  const bool vec = C % 4 == 0 && bits(src) % 16 == 0 && bits(out) % (codes ? 8 : 16) == 0;
  const unsigned grid = grid_for(M, 8);   // 8 warps (rows) a block
  auto* kernel = vec ? (codes ? gather_rows_bf16_kernel<true, true>
                              : gather_rows_bf16_kernel<true, false>)
                     : (codes ? gather_rows_bf16_kernel<false, true>
                              : gather_rows_bf16_kernel<false, false>);
  kernel<<<grid, 256, 0, stream()>>>(src, n_src, rows, w, out, M, C, nullptr, nullptr);
  DS_CUDA_LAUNCHED();
}

void gather_rows_bf16_dot(const float* src, int64_t n_src, const int32_t* rows, const float* w,
                          const void* b, bool b_bf16, float* dot, float* out_f32,
                          uint16_t* out_codes, int64_t M, int64_t C) {
  if (M <= 0) return;
  auto bits = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  const bool codes = out_codes != nullptr;
  void* out = codes ? static_cast<void*>(out_codes) : static_cast<void*>(out_f32);
  // the dot's order is gather_rows_dot's: 4-wide exactly when src and b allow it (a BF16 b
  // has no gather_rows_dot to match: 4-wide when src, b (8 bytes) and out allow it)
  const bool vec_dot = C % 4 == 0 && bits(src) % 16 == 0 && bits(b) % (b_bf16 ? 8 : 16) == 0;
  const bool vec_out = C % 4 == 0 && bits(src) % 16 == 0 && bits(out) % (codes ? 8 : 16) == 0;
  const unsigned grid = grid_for(M, 8);   // 8 warps (rows) a block
  if (b_bf16) {   // (C 0: the kernel writes the zero dots)
    const bool vec = vec_dot && vec_out;
    auto* kernel = vec ? (codes ? gather_rows_bf16_kernel<true, true, true, true>
                                : gather_rows_bf16_kernel<true, false, true, true>)
                       : (codes ? gather_rows_bf16_kernel<false, true, true, true>
                                : gather_rows_bf16_kernel<false, false, true, true>);
    kernel<<<grid, 256, 0, stream()>>>(src, n_src, rows, w, out, M, C, b, dot);
    DS_CUDA_LAUNCHED();
    return;
  }
  const auto* bf = static_cast<const float*>(b);
  if (C <= 0 || vec_dot != vec_out) {   // the two passes apart
    gather_rows_dot_f32(src, n_src, rows, bf, dot, M, C);
    gather_rows_bf16(src, n_src, rows, w, out_f32, out_codes, M, C);
    return;
  }
  auto* kernel = vec_out ? (codes ? gather_rows_bf16_kernel<true, true, true>
                                  : gather_rows_bf16_kernel<true, false, true>)
                         : (codes ? gather_rows_bf16_kernel<false, true, true>
                                  : gather_rows_bf16_kernel<false, false, true>);
  kernel<<<grid, 256, 0, stream()>>>(src, n_src, rows, w, out, M, C, b, dot);
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
