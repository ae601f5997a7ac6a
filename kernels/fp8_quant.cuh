// FP8 (E4M3) quantisation launchers with DeepSeek-V3's fine-grained scales, pointer level: the
// CUDA side of fp8_quantize / fp8_dequantize / fp8_fake_quant / bf16_round
// (lib/ops/cuda/fp8.cpp; semantics in include/ds/ops/fp8.hpp). Results are bit-identical to
// the CPU reference (lib/ops/cpu/ref_fp8.cpp): the same amax (NaN skipped, inf kept), the same
// IEEE divisions and products, RNE saturating E4M3 casts. Plain C++ header.
#pragma once
#include <cstdint>

namespace ds::cuda {

// Same order as ds::ops::Fp8Group.
enum class Fp8Grouping : int { row_1x128 = 0, col_128x1 = 1, block_128x128 = 2, tensor = 3 };

// x (M, K) F32 -> codes q (M, K) (skipped when null), scales (fp8_scale_shape; skipped when
// null) and/or the dequantised round trip `fake` (M, K) F32 (skipped when null; may alias x).
// ue8m0: power-of-two scales; act: amax clamped to >= 1e-4 (else all-zero groups get 1).
void fp8_quantize(const float* x, int64_t M, int64_t K, Fp8Grouping g, bool ue8m0, bool act,
                  uint8_t* q, float* scales, float* fake);
// The tile quantisers (DS_FP8_QUANT=tiles; off by default until they have run on a GPU):
// x (M, K) F32 read once, in 128x128 tiles (fp8_quant_tiles.cuh quant_tiles_kernel), into
//   q (M, K) codes and s (M, ceil(K/128)) scales of the 1x128 groups (null: not produced), and
//   qt (K, M) codes and st (K, ceil(M/128)) scales of the 128x1 groups written transposed
//   (null: not produced), those of x or, with fake, of the 1x128 round trip
//   fp8_fake_quant(x, row_1x128) (the Wgrad operand of an FP8 Linear's input);
// bit for bit fp8_quantize(x, row_1x128) and fp8_quantize_transposed(x or the round trip).
// Returns false, launching nothing, unless K % 4 == 0, x is 16-byte and q 4-byte aligned, and
// (with qt) M % 16 == 0 and qt is 16-byte aligned; or when nothing is asked (fake needs qt).
bool fp8_quantize_tiles(const float* x, int64_t M, int64_t K, bool ue8m0, bool act, bool fake,
                        uint8_t* q, float* s, uint8_t* qt, float* st);
// The switch the ops layer reads (lib/ops/cuda/fp8.cpp, DS_FP8_QUANT), and the tile kernels'
// launches so far (tests, benchmarks): all of them, or those of one kind.
enum class Fp8TilesKind : int {
  rows = 0,      // the 1x128 codes alone (fp8_quantize)
  cols = 1,      // the transposed 128x1 codes alone (fp8_quantize_transposed)
  dual = 2,      // both (fp8_quantize_dual)
  requant = 3,   // the transposed codes of the 1x128 round trip (fp8_requantize_transposed)
  blocks = 4,    // the many-matrix 128x128 weight quantisation
};
void set_fp8_quant_tiles(bool on);
bool fp8_quant_tiles();
int64_t fp8_quant_tiles_launches();
int64_t fp8_quant_tiles_launches(Fp8TilesKind kind);
// out (M, K) = e4m3(q) * scale(group), FP32.
void fp8_dequantize(const uint8_t* q, const float* scales, int64_t M, int64_t K, Fp8Grouping g,
                    float* out);
// x (M, K) F32 -> qt (K, M) codes and st (K, ceil(M/128)) scales of x^T grouped 1x128 (x's
// 128x1 groups, written transposed), bit-identical to fp8_quantize(x^T, row_1x128, ...).
void fp8_quantize_transposed(const float* x, int64_t M, int64_t K, bool ue8m0, bool act,
                             uint8_t* qt, float* st);
// One weight matrix of fp8_quantize_blocks_multi: x (M, K) F32; q (M, K) codes and s
// (ceil(M/128), ceil(K/128)) scales, and/or the transposed operand qt (K, M) = q^T with
// st = s^T (the 128x128 quantisation of x^T: its blocks are x's, transposed). Null pointers
// are not written; q and s go together, and so do qt and st.
struct Fp8BlockJob {
  const float* x;
  int64_t M, K;
  uint8_t* q;
  float* s;
  uint8_t* qt;
  float* st;
};
// 128x128 weight quantisation (act = false) of every job in one launch (one block per
// 128x128 block of any job), bit-identical to fp8_quantize(..., block_128x128, ...).
// tiles: the tile kernel (fp8_quant_tiles.cuh quant_blocks_tiles_kernel, DS_FP8_QUANT=tiles)
// where every job allows it (K % 4 == 0, M % 16 == 0; x 16-, q 4- and qt 16-byte aligned).
void fp8_quantize_blocks_multi(const Fp8BlockJob* jobs, int count, bool ue8m0,
                               bool tiles = false);
// BF16 rounding (RNE, NaN kept quiet) of n floats: out_f32 gets the round trip, out_codes the
// codes; either may be null. out_f32 may alias x.
void bf16_round(const float* x, float* out_f32, uint16_t* out_codes, int64_t n);
// out (M, C) = bf16(w[m] * src[rows[m]]) (w null: no weight; as 0 + w * x), codes or rounded
// F32 (the other pointer null); zeros for a row index outside [0, n_src).
void gather_rows_bf16(const float* src, int64_t n_src, const int32_t* rows, const float* w,
                      float* out_f32, uint16_t* out_codes, int64_t M, int64_t C);
// The same pass also giving dot (M) = sum_c src[rows[m], c] * b[m, c] (gather_rows_dot_f32's
// sums, bit for bit; 0 for a row index outside [0, n_src)). b F32, or (b_bf16) BF16 codes
// widened exactly (no gather_rows_dot_f32 to match: 4-wide where src, b and out allow it).
void gather_rows_bf16_dot(const float* src, int64_t n_src, const int32_t* rows, const float* w,
                          const void* b, bool b_bf16, float* dot, float* out_f32,
                          uint16_t* out_codes, int64_t M, int64_t C);

}  // namespace ds::cuda
