// The routed experts with FP8 GEMMs as grouped GEMMs (see moe.hpp), DeepSeek-V3's recipe
// (spec §3.3) without a loop over experts. Rows are in the padded expert-sorted layout: expert
// e's pairs, then zero rows up to a multiple of 128. Then
//   * a 1x128 activation group is one row: quantising the whole (NKp, K) tensor gives each
//     expert's rows the scales the per-expert loop gives them;
//   * a 128x1 Wgrad group along the tokens starts at a multiple of 128 inside one expert and
//     holds only that expert's rows and zeros, which do not change an amax; every group has at
//     least one real row, so no all-zero group gets the "scale 1" rule the loop never sees;
//   * each 128-row tile of a GEMM belongs to one expert (ops::fp8_gemm_nt_grouped, one launch
//     on the GPU), and each expert's tokens are a 128-aligned K range of the Wgrad GEMM
//     (ops::fp8_gemm_nt_kgrouped).
// So the numbers are those of the per-expert loop of model::Linear (moe.cpp, linear.cpp) up to
// summation order: on the CPU the same fake-quantised FP32 emulation, on the GPU E4M3 codes
// (and on the CPU too with MoEOptions::fp8_codes, which runs the GPU's sequence of ops).
// Zero rows stay zero through every projection (Q(0) = 0, silu(0) * 0 = 0, with finite
// weights) and drop out when rows are added back into the tokens (combine_pairs reads each
// pair's padded row only; the scatter fallback adds them with gate weight 0, outputs 0; the
// pair gradients are gathered from the real rows only). At most 127 extra rows per expert.
// With I a multiple of 128, gate_proj and up_proj are one GEMM over each expert's stacked
// (2I, C) matrix (ParamStore::stack): its 128x128 blocks, and the 1x128 groups of the packed
// [dgate | dup] rows, are those of the two matrices apart, so only the input gradient's sum
// over K = 2I (one GEMM instead of two and an add) changes order.
// reference: DeepSeek-V3 paper §3.3; DeepGEMM's "contiguous" grouped layout (each expert's
// rows aligned to the GEMM's M block).
#include <algorithm>

#include "ds/model/moe.hpp"
#include "ds/ops/fp8.hpp"
#include "model_util.hpp"

namespace ds::model {

namespace {

using ops::Fp8Group;

// 1 gate_proj, 2 down_proj, 3 up_proj, 13 gate_proj and up_proj as one stacked (2I, C) matrix
// (ParamStore::stack; stacked() checked that they lie so).
Tensor weight(const MLP& m, int which) {
  if (which == 13) return m.w1.w->value.join0(m.w3.w->value);
  return (which == 1 ? m.w1 : which == 2 ? m.w2 : m.w3).w->value;
}

// Whether gate_proj and up_proj run as one FP8 GEMM over their stacked (2I, C) matrices: the
// context allows it, I is a multiple of 128 (so that every 128x128 weight block and every
// 1x128 group of [dgate | dup] lies in one of the two: the same scales and codes as the two
// matrices apart), and every expert's values and (training) gradients lie stacked.
bool stacked(const ops::Context& ctx, const std::vector<MLP>& experts, bool train) {
  if (!ops::use_stacked_gate_up(ctx) || experts.empty() ||
      experts[0].w1.out % ops::kFp8Block != 0)
    return false;
  for (const MLP& m : experts) {
    if (!m.w1.w->value.join0(m.w3.w->value).defined()) return false;
    if (train && !m.w1.w->grad.join0(m.w3.w->grad).defined()) return false;
  }
  return true;
}

// Zero the pad rows of x (NKp, ...) (one launch on the GPU).
void zero_pads(const ops::Context& ctx, const MoESaved& s, Tensor& x) {
  std::vector<Tensor> pads;
  for (size_t e = 0; e + 1 < s.p_offsets.size(); ++e) {
    const int64_t real = s.p_offsets[e] + (s.offsets[e + 1] - s.offsets[e]);
    if (real < s.p_offsets[e + 1]) pads.push_back(x.slice0(real, s.p_offsets[e + 1]));
  }
  std::vector<Tensor*> ptrs;
  for (Tensor& t : pads) ptrs.push_back(&t);
  if (!ptrs.empty()) ops::zero_multi(ctx, ptrs);
}

using detail::fp8_codes;
using detail::fp8_values;

// The 128x128 E4M3 codes and scales of every expert's matrix `which`, or of its transpose
// (Dgrad's operand), by one fp8_quantize_blocks_multi (one launch on the GPU) into one
// allocation: expert e's (R, K) codes start at byte e * stride, stride = R K rounded up to 16
// (the wgmma kernel reads 16-byte aligned rows).
struct ExpertCodes {
  std::vector<Tensor> q, s;
};
ExpertCodes expert_codes(const ops::Context& ctx, const std::vector<MLP>& experts, int which,
                         bool transposed) {
  std::vector<Tensor> ws;
  for (const MLP& m : experts) ws.push_back(weight(m, which));
  const Tensor& w0 = ws[0];
  const int64_t E = int64_t(experts.size());
  const int64_t R = w0.size(transposed ? 1 : 0), K = w0.size(transposed ? 0 : 1);
  const int64_t SR = (R + ops::kFp8Block - 1) / ops::kFp8Block;
  const int64_t SC = (K + ops::kFp8Block - 1) / ops::kFp8Block;
  const int64_t stride = (R * K + 15) / 16 * 16;
  const Tensor q = Tensor::empty({E * stride}, DType::u8, ctx.device);    // E x (R, K) + pad
  const Tensor sc = Tensor::empty({E * SR, SC}, DType::f32, ctx.device);  // (E SR, SC)
  ExpertCodes c;
  std::vector<const Tensor*> xs;
  for (int64_t e = 0; e < E; ++e) {
    c.q.push_back(q.slice0(e * stride, e * stride + R * K).view({R, K}));
    c.s.push_back(sc.slice0(e * SR, (e + 1) * SR));
    xs.push_back(&ws[size_t(e)]);
  }
  std::vector<Tensor*> qp, sp;
  for (int64_t e = 0; e < E; ++e) {
    qp.push_back(&c.q[size_t(e)]);
    sp.push_back(&c.s[size_t(e)]);
  }
  if (transposed) ops::fp8_quantize_blocks_multi(ctx, xs, ctx.linear.scale_format, {}, {}, qp, sp);
  else ops::fp8_quantize_blocks_multi(ctx, xs, ctx.linear.scale_format, qp, sp, {}, {});
  return c;
}

// Fprop (fprop) of projection `which` over all experts: y (NKp, out) = Q_1x128(x)
// Q_128x128(W_e)^T; or Dgrad (!fprop): y = dx (NKp, in) = Q_1x128(dy) Q_128x128(W_e), for
// which the NT GEMM reads the codes of W_e^T (its 128x128 blocks are W_e's, transposed: the
// same scales). x's amax is clamped in Fprop only (an activation, not a gradient). y is
// overwritten.
void expert_gemm(const ops::Context& ctx, bool codes, bool fprop,
                 const std::vector<MLP>& experts, int which, const std::vector<int64_t>& off,
                 const Tensor& x, Tensor& y) {
  if (!codes) {
    std::vector<Tensor> wq;
    for (const MLP& m : experts)
      wq.push_back(fp8_values(ctx, weight(m, which), Fp8Group::block_128x128, false));
    ops::grouped_matmul(ctx, fp8_values(ctx, x, Fp8Group::row_1x128, fprop), wq, fprop, off, y);
    return;
  }
  const detail::Fp8Codes a = fp8_codes(ctx, x, Fp8Group::row_1x128, fprop);
  const ExpertCodes b = expert_codes(ctx, experts, which, !fprop);
  ops::fp8_gemm_nt_grouped(ctx, a.q, a.s, b.q, b.s, off, y, Fp8Group::block_128x128);
}

// Wgrad: dW_e (out, in) += Q_128x1(dy_e)^T Q_128x1(Xc_e), Xc = Q_1x128(x) the input as Fprop
// saw it (recomputed: the same deterministic quantisation), K = the expert's padded rows. On
// codes the 128x1 groups are 1x128 groups of the transposed operands, quantised straight
// into that layout: dy's by the caller (dyt, from fp8_quantize_dual), Xc's by
// fp8_requantize_transposed (the round trip not written out, with DS_FP8_QUANT=tiles).
void wgrad(const ops::Context& ctx, bool codes, const std::vector<MLP>& experts, int which,
           const std::vector<int64_t>& off, const Tensor& x, const Tensor& dy,
           const detail::Fp8Codes& dyt) {
  std::vector<Tensor> dw;
  for (const MLP& m : experts)
    dw.push_back(which == 13 ? m.w1.w->grad.join0(m.w3.w->grad)
                             : (which == 1 ? m.w1 : which == 2 ? m.w2 : m.w3).w->grad);
  if (!codes) {
    const Tensor xc = fp8_values(ctx, x, Fp8Group::row_1x128, true);   // (NKp, in)
    ops::grouped_matmul_wgrad(ctx, fp8_values(ctx, dy, Fp8Group::col_128x1, false),
                              fp8_values(ctx, xc, Fp8Group::col_128x1, true), off, dw);
    return;
  }
  detail::Fp8Codes b;   // (in, NKp)
  ops::fp8_requantize_transposed(ctx, x, ctx.linear.scale_format, true, b.q, b.s);
  ops::fp8_gemm_nt_kgrouped(ctx, dyt.q, dyt.s, b.q, b.s, off, dw);
}

// Dgrad dx (NKp, in) = dy Q(W_e) (expert_gemm) and Wgrad (wgrad) of projection `which` from
// one output gradient dy: on codes dy's two quantisations, 1x128 for Dgrad and the transposed
// 128x1 for Wgrad, come from one fp8_quantize_dual (one read of dy with DS_FP8_QUANT=tiles).
void dgrad_wgrad(const ops::Context& ctx, bool codes, const std::vector<MLP>& experts,
                 int which, const std::vector<int64_t>& off, const Tensor& x, const Tensor& dy,
                 Tensor& dx) {
  if (!codes) {
    expert_gemm(ctx, false, false, experts, which, off, dy, dx);
    wgrad(ctx, false, experts, which, off, x, dy, {});
    return;
  }
  detail::Fp8Codes d, dt;   // (NKp, out) and (out, NKp)
  ops::fp8_quantize_dual(ctx, dy, ctx.linear.scale_format, false, d.q, d.s, dt.q, dt.s);
  const ExpertCodes b = expert_codes(ctx, experts, which, true);
  ops::fp8_gemm_nt_grouped(ctx, d.q, d.s, b.q, b.s, off, dx, Fp8Group::block_128x128);
  wgrad(ctx, true, experts, which, off, x, dy, dt);
}

// dst (N, C) += the padded expert rows (NKp, C), weighted by the gate weights when `weighted`:
// per token without atomics (combine_pairs over each pair's padded row; the pads are not read),
// or, beyond the CUDA kernel's 16 pairs a token, the scatter of every padded row (pads add 0).
// combine_pairs adds a token's rows in ascending row order, as the per-expert loop does (and
// the scatter on the CPU; on the GPU its atomics add in any order).
void add_back(const ops::Context& ctx, const MoESaved& s, const Tensor& rows, bool weighted,
              Tensor& dst) {
  if (ctx.device == Device::cpu || s.p_pair.size(1) <= 16)
    ops::combine_pairs(ctx, rows, s.p_pair, weighted ? s.gate.weights : Tensor(), dst);
  else
    ops::scatter_add_rows(ctx, rows, s.p_tok, weighted ? s.p_w : Tensor(), dst);
}

}  // namespace

// Expert e's rows padded to a multiple of 128 (p_offsets, from the host's counts) and the
// padded layout's tables made by ops::moe_pad_pairs: on the GPU one launch, no host round trip.
void MoE::pad_pairs(const ops::Context& ctx, MoESaved& s) const {
  const int64_t NE = int64_t(s.offsets.size()) - 1, NK = s.offsets.back();
  s.p_offsets.assign(size_t(NE + 1), 0);
  for (int64_t e = 0; e < NE; ++e) {
    const int64_t n = s.offsets[size_t(e + 1)] - s.offsets[size_t(e)];
    s.p_offsets[size_t(e + 1)] =
        s.p_offsets[size_t(e)] + (n + ops::kFp8Block - 1) / ops::kFp8Block * ops::kFp8Block;
  }
  const int64_t NKp = s.p_offsets.back();
  s.p_tok = Tensor::empty({NKp}, DType::i32, ctx.device);
  s.p_w = detail::empty_f32(ctx, {NKp});
  s.p_row = Tensor::empty({NK}, DType::i32, ctx.device);
  Tensor p_pair = Tensor::empty({NK}, DType::i32, ctx.device);
  ops::moe_pad_pairs(ctx, s.pair_src, s.pair_w, K, s.offsets, s.p_offsets, s.p_tok, s.p_w,
                     s.p_row, p_pair);
  s.p_pair = p_pair.view({NK / K, K});
}

void MoE::routed_forward_fp8(const ops::Context& ctx, const Tensor& u, bool train, Tensor& y,
                             MoESaved& s) const {
  const int64_t NKp = s.p_offsets.back(), I = experts.empty() ? 0 : experts[0].w1.out;
  if (NKp == 0) return;
  s.g_x = detail::empty_f32(ctx, {NKp, C});                 // (NKp, C) padded inputs
  ops::gather_rows(ctx, u, s.p_tok, s.g_x);
  zero_pads(ctx, s, s.g_x);
  s.g_act = detail::empty_f32(ctx, {NKp, I});
  s.g_h = s.g_h1 = s.g_h3 = Tensor();
  if (stacked(ctx, experts, train)) {   // gate and up from one GEMM, [gate | up] per row
    s.g_h = detail::empty_f32(ctx, {NKp, 2 * I});
    expert_gemm(ctx, s.fp8_codes, true, experts, 13, s.p_offsets, s.g_x, s.g_h);
    ops::swiglu_packed_forward(ctx, s.g_h, s.g_act);
  } else {
    s.g_h1 = detail::empty_f32(ctx, {NKp, I});
    s.g_h3 = detail::empty_f32(ctx, {NKp, I});
    expert_gemm(ctx, s.fp8_codes, true, experts, 1, s.p_offsets, s.g_x, s.g_h1);
    expert_gemm(ctx, s.fp8_codes, true, experts, 3, s.p_offsets, s.g_x, s.g_h3);
    ops::swiglu_forward(ctx, s.g_h1, s.g_h3, s.g_act);
  }
  s.g_y = detail::empty_f32(ctx, {NKp, C});
  expert_gemm(ctx, s.fp8_codes, true, experts, 2, s.p_offsets, s.g_act, s.g_y);
  add_back(ctx, s, s.g_y, true, y);                         // y += w * expert(u)
  if (!train) s.g_x = s.g_h = s.g_h1 = s.g_h3 = s.g_act = s.g_y = Tensor();
}

void MoE::routed_backward_fp8(const ops::Context& ctx, MoESaved& s, const Tensor& dy,
                              Tensor& du, Tensor& dpair_w) const {
  const int64_t NK = s.offsets.back(), NKp = s.p_offsets.back();
  if (NKp == 0) return;
  const int64_t I = s.g_act.size(1);
  // what each expert sees, w * dy[tok], gathered and weighted in one pass; the pad rows (weight
  // 0: +0 for a finite dy) zeroed as well, so that they stay zero when dy is not finite
  Tensor dyw = detail::empty_f32(ctx, {NKp, C});
  ops::gather_rows_scaled(ctx, dy, s.p_tok, s.p_w, dyw);
  zero_pads(ctx, s, dyw);
  Tensor dpw = detail::empty_f32(ctx, {NKp});
  ops::gather_rows_dot(ctx, dy, s.p_tok, s.g_y, dpw);        // dL/dw = <dy[tok], y_e> per row
  Tensor dpair = dpair_w.view({NK, 1});
  ops::gather_rows(ctx, dpw.view({NKp, 1}), s.p_row, dpair);   // the real rows, pair order
  Tensor dact = detail::empty_f32(ctx, {NKp, I});              // down_proj
  dgrad_wgrad(ctx, s.fp8_codes, experts, 2, s.p_offsets, s.g_act, dyw, dact);
  Tensor dug = detail::empty_f32(ctx, {NKp, C});               // gate and up
  if (s.g_h.defined()) {   // stacked: [dh1 | dh3] against [W1; W3], one Dgrad and one Wgrad
    Tensor dh = detail::empty_f32(ctx, {NKp, 2 * I});
    ops::swiglu_packed_backward(ctx, s.g_h, dact, dh);
    dgrad_wgrad(ctx, s.fp8_codes, experts, 13, s.p_offsets, s.g_x, dh, dug);
  } else {
    Tensor dh1 = detail::empty_f32(ctx, {NKp, I}), dh3 = detail::empty_f32(ctx, {NKp, I});
    ops::swiglu_backward(ctx, s.g_h1, s.g_h3, dact, dh1, dh3);
    Tensor dug3 = detail::empty_f32(ctx, {NKp, C});
    dgrad_wgrad(ctx, s.fp8_codes, experts, 1, s.p_offsets, s.g_x, dh1, dug);
    dgrad_wgrad(ctx, s.fp8_codes, experts, 3, s.p_offsets, s.g_x, dh3, dug3);
    ops::add_(ctx, dug, dug3);
  }
  add_back(ctx, s, dug, false, du);
  s.g_x = s.g_h = s.g_h1 = s.g_h3 = s.g_act = s.g_y = Tensor();
}

}  // namespace ds::model
