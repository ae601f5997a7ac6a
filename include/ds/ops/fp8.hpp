// FP8 numerics of DeepSeek-V3 (spec §3.1-3.4): E4M3 quantisation with fine-grained scales,
// dequantisation, the CPU emulation used by FP8 training, and the FP8 GEMM with FP32
// promotion every 128 elements of K. Codes are E4M3fn bytes (ds/core/dtype.hpp: RNE,
// saturating at +-448); a scale s multiplies the code's value to give the real value
// (x ~ e4m3(x / s) * s), s = amax / 448 per group (amax clamped to >= 1e-4 for activations,
// as the reference act_quant; a weight block of zeros gets s = 1), or with ScaleFormat::ue8m0
// s = 2^ceil(log2(amax / 448)) so that scaling is exact.
//
// Groupings (M rows, K columns of a row-major (M, K) matrix; ceil-divided, partial edge
// groups use their own amax):
//   1x128   activations / activation gradients along K:   scales (M, ceil(K/128))
//   128x1   the weight-gradient GEMM's operands along M:    scales (ceil(M/128), K)
//   128x128 weights (the released checkpoints' blocks):     scales (ceil(M/128), ceil(K/128))
//   tensor  one scale for the whole tensor:                 scales (1)
// reference: DeepSeek-V3 paper §3.3 and App. B; inference/kernel.py act_quant, weight_dequant,
// fp8_gemm; DeepGEMM's scale layouts.
#pragma once
#include <cstdint>
#include <vector>

#include "ds/core/tensor.hpp"
#include "ds/ops/ops.hpp"

namespace ds::ops {

inline constexpr int64_t kFp8Block = 128;

enum class Fp8Group : uint8_t { row_1x128, col_128x1, block_128x128, tensor };

// Shape of the scale tensor of an (M, K) matrix under `g` (see the table above).
Shape fp8_scale_shape(int64_t M, int64_t K, Fp8Group g);

// Tensors of more than two dims are (M, K) with K the last dim and M the product of the
// others. Non-finite inputs: a NaN element stays NaN (code 0x7f, the scale comes from the
// group's other elements); an infinity makes its group's scale infinite (dequantised: NaN).
//
// x (M, K) F32 -> q (M, K) u8 E4M3 codes and scales (fp8_scale_shape) F32; q and scales are
// allocated when undefined (q may also be a caller-allocated F8_E4M3 tensor). act: amax
// clamped to >= 1e-4 (activations); otherwise an all-zero group gets scale 1 (weights, as the
// released checkpoints).
void fp8_quantize(const Context& ctx, const Tensor& x, Fp8Group g, ScaleFormat fmt, bool act,
                  Tensor& q, Tensor& scales);
// q (M, K) u8 (or F8_E4M3) E4M3 codes + scales -> out (M, K) F32 (allocated when undefined):
// out[i, j] = e4m3(q[i, j]) * scale(group of (i, j)), computed in FP32.
void fp8_dequantize(const Context& ctx, const Tensor& q, const Tensor& scales, Fp8Group g,
                    Tensor& out);
// Quantise then dequantise in one pass (the CPU emulation of an FP8 GEMM operand):
// out (M, K) F32 = fp8_dequantize(fp8_quantize(x)) bit for bit, the E4M3 values an FP8 GEMM
// multiplies times their scales (rounded to FP32; exact with UE8M0 scales). out may alias x.
void fp8_fake_quant(const Context& ctx, const Tensor& x, Fp8Group g, ScaleFormat fmt, bool act,
                    Tensor& out);
// Round every element to BF16 (RNE) and back: out may alias x. With a BF16 `out`, the BF16
// codes themselves are written (the operands of a BF16 GEMM).
void bf16_round(const Context& ctx, const Tensor& x, Tensor& out);
// bf16_round(*xs[i], *outs[i]) for every i in one call (one launch on the GPU: the routed
// experts' weights of a MoE layer); every out defined, all F32 or all BF16.
void bf16_round_multi(const Context& ctx, const std::vector<const Tensor*>& xs,
                      const std::vector<Tensor*>& outs);

// The FP8 GEMM of spec §3.4 in NT layout: c (M, N) F32 = sum over K-blocks kb of
//   (sum_{k in kb} e4m3(a[m,k]) * e4m3(b[n,k]))  [FP32 partial sum of exact products]
//     * a_scale(m, kb) * b_scale(n, kb)          [promotion to the FP32 accumulator]
// a (M, K) u8 codes with scales grouped by a_group: row_1x128 (M, ceil(K/128)) or tensor (1);
// b (N, K) u8 codes grouped by b_group: block_128x128 (ceil(N/128), ceil(K/128)) as the
// weights of Fprop/Dgrad, row_1x128 (N, ceil(K/128)) as the transposed 128x1 operand of
// Wgrad, or tensor (1). K-blocks are 128 wide whatever the grouping (the last may be partial).
// c allocated when undefined, overwritten.
void fp8_gemm_nt(const Context& ctx, const Tensor& a, const Tensor& a_scales, const Tensor& b,
                 const Tensor& b_scales, Tensor& c, Fp8Group a_group = Fp8Group::row_1x128,
                 Fp8Group b_group = Fp8Group::block_128x128);

// The Wgrad operand of an FP8 GEMM along the tokens in one pass: x (M, K) F32 -> qt (K, M)
// codes and st (K, ceil(M/128)) scales of x^T grouped 1x128, i.e. x's 128x1 groups written
// transposed; bit-identical to fp8_quantize(transpose(x), row_1x128, fmt, act) without the
// F32 transpose. qt (U8 or F8_E4M3) and st allocated when undefined.
void fp8_quantize_transposed(const Context& ctx, const Tensor& x, ScaleFormat fmt, bool act,
                             Tensor& qt, Tensor& st);

// An FP8 Linear's output gradient as both of its backward operands: q (M, K) codes and s
// (M, ceil(K/128)) scales of x's 1x128 groups (Dgrad's), and qt, st of x's 128x1 groups
// written transposed (Wgrad's); bit for bit fp8_quantize(x, row_1x128, fmt, act, q, s) then
// fp8_quantize_transposed(x, fmt, act, qt, st). On the GPU with DS_FP8_QUANT=tiles one read
// of x (docs/cuda.md). x 2-D F32; outputs allocated when undefined.
void fp8_quantize_dual(const Context& ctx, const Tensor& x, ScaleFormat fmt, bool act, Tensor& q,
                       Tensor& s, Tensor& qt, Tensor& st);
// Wgrad's operand of an FP8 Linear's input: the transposed 128x1 quantisation of the values
// the forward's 1x128 quantisation gave, i.e. fp8_quantize_transposed(fp8_fake_quant(x,
// row_1x128, fmt, act), fmt, act, qt, st) bit for bit (NaN codes as NaN: a NaN the round trip
// makes is positive on the GPU, as in fp8_fake_quant there); on the GPU with
// DS_FP8_QUANT=tiles without the F32 round trip in memory. x 2-D F32; qt, st allocated when
// undefined.
void fp8_requantize_transposed(const Context& ctx, const Tensor& x, ScaleFormat fmt, bool act,
                               Tensor& qt, Tensor& st);

// The 128x128 weight quantisation (act = false) of several matrices in one call (one launch
// on the GPU: the routed experts' weights of a projection): for each i, xs[i] (M_i, K_i) F32
// -> qs[i] (M_i, K_i) codes and ss[i] (ceil(M_i/128), ceil(K_i/128)) scales, bit-identical to
// fp8_quantize(*xs[i], block_128x128, fmt, false), and/or the transposed operand qts[i]
// (K_i, M_i) = qs[i]^T with sts[i] = ss[i]^T, which is the same quantisation of xs[i]^T (its
// 128x128 blocks are xs[i]'s, transposed). Either pair of vectors may be empty (not
// produced); outputs are caller-allocated (U8 or F8_E4M3 codes, all of one dtype; F32
// scales). No matrices: nothing to do.
void fp8_quantize_blocks_multi(const Context& ctx, const std::vector<const Tensor*>& xs,
                               ScaleFormat fmt, const std::vector<Tensor*>& qs,
                               const std::vector<Tensor*>& ss, const std::vector<Tensor*>& qts,
                               const std::vector<Tensor*>& sts);

// The routed experts' FP8 GEMMs over the padded expert-sorted layout (lib/model/moe_fp8.cpp):
// group g owns rows (or K columns) [offsets[g], offsets[g+1]), every offset a multiple of 128,
// so that each 128-row tile, and each 1x128 scale group along K, lies inside one group. Host
// offsets, G + 1 of them, offsets[0] = 0, non-decreasing; a group may be empty.
//
// m-grouped (Fprop, Dgrad): rows [offsets[g], offsets[g+1]) of c (M, N) = fp8_gemm_nt of those
// rows of a (M, K) with b[g] (N, K); offsets[G] = M. a grouped 1x128; every b[g] grouped
// b_group (128x128 or 1x128). c allocated when undefined, every row overwritten.
void fp8_gemm_nt_grouped(const Context& ctx, const Tensor& a, const Tensor& a_scales,
                         const std::vector<Tensor>& b, const std::vector<Tensor>& b_scales,
                         const std::vector<int64_t>& offsets, Tensor& c,
                         Fp8Group b_group = Fp8Group::block_128x128);
// k-grouped (Wgrad): c[g] (M, N) += fp8_gemm_nt of a (M, Ktot)'s columns [offsets[g],
// offsets[g+1]) with the same columns of b (N, Ktot); both grouped 1x128 along K (scales
// (M, ceil(Ktot/128)) and (N, ceil(Ktot/128))); offsets[G] = Ktot, which (unlike the other
// offsets) need not be a multiple of 128: the last K block may be partial, as in fp8_gemm_nt.
// Each group's sum starts from zero and is added to c[g] once (an empty group leaves c[g]
// unchanged); with one group {0, K} it is fp8_gemm_nt's c then c[0] += c, in one pass (an FP8
// Linear's Wgrad into its gradient). c[g] F32 (M, N), defined, pairwise disjoint in memory.
void fp8_gemm_nt_kgrouped(const Context& ctx, const Tensor& a, const Tensor& a_scales,
                          const Tensor& b, const Tensor& b_scales,
                          const std::vector<int64_t>& offsets, std::vector<Tensor>& c);

}  // namespace ds::ops
