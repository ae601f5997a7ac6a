// E4M3 quantisation kernels (see fp8_quant.cuh). Bit-exactness with the CPU reference
// (lib/ops/cpu/ref_fp8.cpp, compiled with -ffp-contract=off) rests on:
//   amax   a running max of |x| as integer bits with NaN mapped to 0 (order-free, exact; +inf
//          kept), the same value as the reference's sequential `if (a > m) m = a`;
//   scale  amax / 448 with an IEEE division (__fdiv_rn), the act clamp and the weights'
//          zero-group rule first; UE8M0 rounds up to a power of two on the bits (exact);
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

#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/fp8_quant_tiles.cuh"
#include "kernels/multi_tensor_table.cuh"

namespace ds::cuda {

namespace {

using namespace fp8q;   // the arithmetic and the row / tile kernels (fp8_quant_tiles.cuh)

// 128x1 (kCols == 1: 32 groups of one column each) and 128x128 (kCols == 4: one group) over
// a tile of 128 rows x 32*kCols columns; block (32, 8): thread (tx, ty) holds rows ty + 8r,
// columns tx + 32u. grid (column tiles, row strips wrapping over grid.y).
template <int kCols>
__global__ void quant_tile_kernel(QArgs p) {
  __shared__ uint32_t sh[8][32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j0 = int64_t(blockIdx.x) * 32 * kCols;
  const int64_t strips = (p.M + kBlk - 1) / kBlk;
  for (int64_t rb = blockIdx.y; rb < strips; rb += gridDim.y) {
    float v[16][kCols];
    uint32_t amax = 0;
#pragma unroll
    for (int r = 0; r < 16; ++r)
#pragma unroll
      for (int u = 0; u < kCols; ++u) {
        const int64_t i = rb * kBlk + ty + 8 * r, j = j0 + tx + 32 * u;
        v[r][u] = (i < p.M && j < p.K) ? p.x[i * p.K + j] : 0.0f;
        amax = max(amax, abs_bits(v[r][u]));
      }
    __syncthreads();   // sh reused across strips
    sh[ty][tx] = amax;
    __syncthreads();
    amax = 0;
#pragma unroll
    for (int t = 0; t < 8; ++t) amax = max(amax, sh[t][tx]);   // over the 128 rows
    if (kCols > 1) amax = __reduce_max_sync(0xffffffffu, amax);   // and the 128 columns
    const float s = scale_of(__uint_as_float(amax), p.ue8m0, p.act);
    if (p.scales && ty == 0) {
      if (kCols == 1) {
        if (j0 + tx < p.K) p.scales[rb * p.K + j0 + tx] = s;
      } else if (tx == 0) {
        p.scales[rb * p.SC + blockIdx.x] = s;
      }
    }
#pragma unroll
    for (int r = 0; r < 16; ++r)
#pragma unroll
      for (int u = 0; u < kCols; ++u) {
        const int64_t i = rb * kBlk + ty + 8 * r, j = j0 + tx + 32 * u;
        if (i < p.M && j < p.K) emit(v[r][u], s, i * p.K + j, p.q, p.fake);
      }
  }
}

// Whole-tensor amax into *amax (zeroed before).
__global__ void amax_kernel(const float* __restrict__ x, int64_t n, uint32_t* amax) {
  __shared__ uint32_t sh[32];
  uint32_t m = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    m = max(m, abs_bits(x[i]));
  m = __reduce_max_sync(0xffffffffu, m);
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x < 32) {
    m = threadIdx.x < (blockDim.x >> 5) ? sh[threadIdx.x] : 0u;
    m = __reduce_max_sync(0xffffffffu, m);
    if (threadIdx.x == 0) atomicMax(amax, m);
  }
}

__global__ void quant_tensor_kernel(QArgs p, int64_t n, const uint32_t* amax) {
  const float s = scale_of(__uint_as_float(*amax), p.ue8m0, p.act);
  if (blockIdx.x == 0 && threadIdx.x == 0 && p.scales) p.scales[0] = s;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    emit(p.x[i], s, i, p.q, p.fake);
}

// out[i, j] = e4m3(q[i, j]) * scales[(i / gr) * SC + j / gc]; grid (column chunks of 1024,
// rows wrapping over grid.y).
__global__ void dequant_kernel(const uint8_t* __restrict__ q, const float* __restrict__ scales,
                               int64_t M, int64_t K, int64_t gr, int64_t gc, int64_t SC,
                               float* __restrict__ out) {
  for (int64_t i = blockIdx.y; i < M; i += gridDim.y) {
    const float* srow = scales + (i / gr) * SC;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int64_t j = int64_t(blockIdx.x) * 1024 + threadIdx.x + 256 * t;
      if (j < K) out[i * K + j] = __fmul_rn(e4m3_value(q[i * K + j]), srow[j / gc]);
    }
  }
}

__global__ void bf16_round_kernel(const float* x, float* out_f32, uint16_t* out_codes,
                                  int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint16_t c = f32_to_bf16(x[i]);
    if (out_codes) out_codes[i] = c;
    if (out_f32) out_f32[i] = bf16_to_f32(c);
  }
}
// The aligned body of bf16_round: four elements a thread, one 16-byte load and one 8- or
// 16-byte store (a scalar load a thread keeps too few bytes in flight to reach HBM's rate).
template <bool CODES>
__global__ void bf16_round4_kernel(const float4* __restrict__ x, void* __restrict__ out,
                                   int64_t n4) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4;
       i += int64_t(gridDim.x) * blockDim.x)
    store_bf16x4<CODES>(out, i, x[i]);
}

// One warp a row m of the output: rows[m] is read once and the row's values go 4 at a time
// (VEC: C % 4 == 0 and src / out aligned, 16-byte loads, 8- or 16-byte stores) or one at a
// time. A row index outside [0, n_src) gives zeros. DOT: the same pass also gives dot[m] =
// sum_c src[rows[m], c] * b[m, c] in double, each lane's terms in gather_rows_dot_kernel's
// order (4 at a time when VEC, as its float4 path), then the warp sum (its bits). BF16B: b
// holds BF16 codes (the routed experts' BF16 outputs), widened exactly (VEC: 8-byte loads).
template <bool VEC, bool CODES, bool DOT = false, bool BF16B = false>
__global__ void gather_rows_bf16_kernel(const float* __restrict__ src, int64_t n_src,
                                        const int32_t* __restrict__ rows,
                                        const float* __restrict__ w, void* __restrict__ out,
                                        int64_t M, int64_t C, const void* __restrict__ b = nullptr,
                                        float* __restrict__ dot = nullptr) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t per_block = blockDim.x / 32;
  for (int64_t m = int64_t(blockIdx.x) * per_block + threadIdx.x / 32; m < M;
       m += int64_t(gridDim.x) * per_block) {
    const int32_t r = rows[m];
    const bool in = r >= 0 && r < n_src;
    const float wm = w ? w[m] : 1.0f;
    const float* srow = src + (in ? int64_t(r) : 0) * C;
    // w * x without FMA: 0 + (w * x) turns a -0 product into +0, as the CPU op does
    auto weigh = [&](float x) { return w ? __fadd_rn(0.0f, __fmul_rn(wm, x)) : x; };
    double acc = 0;
    if constexpr (VEC) {
      void* orow = CODES ? static_cast<void*>(static_cast<uint16_t*>(out) + m * C)
                         : static_cast<void*>(static_cast<float*>(out) + m * C);
      for (int64_t j = lane; j < C / 4; j += 32) {
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (in) {
          v = reinterpret_cast<const float4*>(srow)[j];
          if constexpr (DOT) {
            const float4 y = load_in4<BF16B>(b, m * C / 4 + j);
            acc += double(v.x) * double(y.x) + double(v.y) * double(y.y) +
                   double(v.z) * double(y.z) + double(v.w) * double(y.w);
          }
          v = make_float4(weigh(v.x), weigh(v.y), weigh(v.z), weigh(v.w));
        }
        store_bf16x4<CODES>(orow, j, v);
      }
    } else {
      for (int64_t c = lane; c < C; c += 32) {
        if constexpr (DOT) {
          if (in) acc += double(srow[c]) * double(load_in1<BF16B>(b, m * C + c));
        }
        const uint16_t code = f32_to_bf16(in ? weigh(srow[c]) : 0.0f);
        if (CODES) static_cast<uint16_t*>(out)[m * C + c] = code;
        else static_cast<float*>(out)[m * C + c] = bf16_to_f32(code);
      }
    }
    if constexpr (DOT) {
      acc = warp_sum_d(acc);
      if (lane == 0) dot[m] = in ? float(acc) : 0.0f;
    }
  }
}

// fp8_quantize_blocks_multi: one block (32, 8) per 128x128 block of one job, found by binary
// search over the jobs' block prefix sums. Thread (tx, ty) holds rows ty + 8r, columns
// tx + 32u of the block, as quant_tile_kernel<4> (the same amax and codes). The transposed
// codes go through a shared tile (rows padded to 132 bytes: the column-wise reads of 32
// consecutive rows hit 32 different banks) so that qt's rows are written contiguously.
__global__ void quant_blocks_multi_kernel(const BlockEntry* tab, int count, bool ue8m0) {
  constexpr int kPitch = kBlk + 4;
  __shared__ uint32_t sh[8][32];
  __shared__ __align__(4) uint8_t tile[kBlk * kPitch];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 32 + tx;
  const BlockEntry e = tab[entry_of(tab, count, blockIdx.x)];   // by value: the byte stores
  const Fp8BlockJob& p = e.job;                                  // below cannot alias it
  const int64_t b = int64_t(blockIdx.x) - e.first, rb = b / e.SC, cb = b % e.SC;
  const int64_t i0 = rb * kBlk, j0 = cb * kBlk;
  float v[16][4];
  uint32_t amax = 0;
#pragma unroll
  for (int r = 0; r < 16; ++r)
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t i = i0 + ty + 8 * r, j = j0 + tx + 32 * u;
      v[r][u] = (i < p.M && j < p.K) ? p.x[i * p.K + j] : 0.0f;
      amax = max(amax, abs_bits(v[r][u]));
    }
  sh[ty][tx] = amax;
  __syncthreads();
  amax = 0;
#pragma unroll
  for (int t = 0; t < 8; ++t) amax = max(amax, sh[t][tx]);
  amax = __reduce_max_sync(0xffffffffu, amax);
  const float s = scale_of(__uint_as_float(amax), ue8m0, false);
  if (tid == 0) {
    if (p.s) p.s[rb * e.SC + cb] = s;
    if (p.st) p.st[cb * e.SR + rb] = s;
  }
#pragma unroll
  for (int r = 0; r < 16; ++r)
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int il = ty + 8 * r, jl = tx + 32 * u;
      const int64_t i = i0 + il, j = j0 + jl;
      const uint8_t c = quant_code(v[r][u], s);
      if (p.q && i < p.M && j < p.K) p.q[i * p.K + j] = c;
      tile[il * kPitch + jl] = c;
    }
  if (!p.qt) return;   // uniform over the block
  __syncthreads();
  // qt row j0 + jl holds x's column j0 + jl: bytes il = 0..127 of the block's rows.
  for (int idx = tid; idx < kBlk * kBlk; idx += 256) {
    const int jl = idx / kBlk, il = idx % kBlk;
    const int64_t i = i0 + il, j = j0 + jl;
    if (i < p.M && j < p.K) p.qt[j * p.M + i] = tile[il * kPitch + jl];
  }
}

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
