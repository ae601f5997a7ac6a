// The routed experts of a MoE layer as grouped GEMMs (see moe.hpp): every (token, expert) pair
// row is gathered once into the expert-sorted layout (N*K, C) (in bf16 mode straight into
// the BF16 operand, gather_rows_bf16). gate_proj and up_proj are one ops::grouped_matmul over
// all experts' stacked (2I, C) matrices (the store lays each expert's two out so,
// ParamStore::stack; [gate | up] per row, packed SwiGLU; Context::stacked_gate_up), or two
// where they are not stacked; down_proj is one more. SwiGLU runs once over all rows (on the
// GPU writing the BF16 operands of the next GEMMs itself), and the weighted outputs are added
// back into their tokens once (combine_pairs: per token in the scatter's order, no atomics).
// The backward mirrors it with grouped input-gradient and weight-gradient GEMMs (stacked: one
// of each for gate and up, the input gradient summed over K = 2I in one GEMM). Same numbers as
// the per-expert loop of moe.cpp (same operands, same precision rules as model::Linear for fp32
// and bf16; only summation orders differ); FP8 GEMMs take moe_fp8.cpp.
// reference: DeepSeek-V3 inference/model.py MoE.forward; the grouped-GEMM layout of
// DeepGEMM's "contiguous" MoE GEMMs (rows sorted by expert, one offset per expert).
#include <vector>

#include "ds/model/moe.hpp"
#include "ds/ops/fp8.hpp"
#include "model_util.hpp"

namespace ds::model {

namespace {

bool bf16_mode(const ops::Context& ctx) { return ctx.linear.mode == ops::Precision::bf16; }

// An uninitialised BF16 GEMM operand: F32 values on the CPU, codes on the GPU (as
// model::Linear's bf16 path).
Tensor operand_like(const ops::Context& ctx, const Shape& shape) {
  return ctx.device == Device::cpu ? detail::empty_f32(ctx, shape)
                                   : Tensor::empty(shape, DType::bf16, ctx.device);
}
// An output that an op (SwiGLU) writes as a GEMM operand: in bf16 mode BF16 codes on the GPU,
// written by the op itself, and F32 on the CPU, rounded by finish_operand (the same bits).
Tensor operand_out(const ops::Context& ctx, const Shape& shape) {
  return bf16_mode(ctx) ? operand_like(ctx, shape) : detail::empty_f32(ctx, shape);
}
void finish_operand(const ops::Context& ctx, Tensor& t) {
  if (bf16_mode(ctx) && t.dtype() == DType::f32) ops::bf16_round(ctx, t, t);
}
// The GEMM operand of w[m] * x[rows[m]] (w undefined: x[rows[m]]) for the expert-sorted pair
// rows: in bf16 mode gathered, weighted and rounded in one pass (gather_rows_bf16, the same
// bits as the three ops it replaces).
Tensor gathered_operand(const ops::Context& ctx, const Tensor& x, const Tensor& rows,
                        const Tensor& w) {
  const Shape shape{rows.size(0), x.size(1)};
  if (bf16_mode(ctx)) {
    Tensor out = operand_like(ctx, shape);
    ops::gather_rows_bf16(ctx, x, rows, w, out);
    return out;
  }
  Tensor g = detail::empty_f32(ctx, shape);
  if (w.defined()) ops::gather_rows_scaled(ctx, x, rows, w, g);   // gather and weight, one pass
  else ops::gather_rows(ctx, x, rows, g);
  return g;
}

const Tensor& value(const MLP& m, int which) {
  return (which == 1 ? m.w1 : which == 2 ? m.w2 : m.w3).w->value;
}

// Each local expert's matrix `which` (1 gate_proj, 2 down_proj, 3 up_proj, 13 gate_proj and
// up_proj stacked (2I, C)) as a GEMM operand; in bf16 mode all of them rounded by one
// bf16_round_multi (one launch on the GPU), the stacked ones into one (2I, C) operand each.
std::vector<Tensor> round_weights(const ops::Context& ctx, const std::vector<MLP>& experts,
                                  int which) {
  std::vector<Tensor> w;
  w.reserve(experts.size());
  if (!bf16_mode(ctx)) {
    for (const MLP& m : experts)
      w.push_back(which == 13 ? m.w1.w->value.join0(m.w3.w->value) : value(m, which));
    return w;
  }
  std::vector<const Tensor*> src;
  std::vector<Tensor> parts;   // where each source's rounded values go
  for (const MLP& m : experts) {
    const Tensor& v = value(m, which == 13 ? 1 : which);
    Shape shape = v.shape();
    if (which == 13) shape[0] *= 2;
    w.push_back(ctx.device == Device::cpu ? detail::empty_f32(ctx, shape)
                                          : Tensor::empty(shape, DType::bf16, ctx.device));
    if (which == 13) {
      const int64_t I = v.size(0);
      src.insert(src.end(), {&m.w1.w->value, &m.w3.w->value});
      parts.push_back(w.back().slice0(0, I));
      parts.push_back(w.back().slice0(I, 2 * I));
    } else {
      src.push_back(&v);
      parts.push_back(w.back());
    }
  }
  std::vector<Tensor*> dst;
  for (Tensor& t : parts) dst.push_back(&t);
  ops::bf16_round_multi(ctx, src, dst);
  return w;
}

// The same, kept in the step's operand cache when the context has one (the forward's
// operands serve the backward; ops::OperandCache), keyed by the first expert's matrix.
std::vector<Tensor> weights(const ops::Context& ctx, const std::vector<MLP>& experts, int which) {
  if (!bf16_mode(ctx) || !ctx.operands || experts.empty())
    return round_weights(ctx, experts, which);
  const Tensor& key = value(experts.front(), which == 13 ? 1 : which);
  // each expert's operand (for 13 its two halves) bound to the matrix it was rounded from: an
  // optimizer step rewrites them in place (OperandCache::refresh_plan)
  auto bind = [&](const std::vector<Tensor>& e) {
    std::vector<ops::OperandCache::Binding> b;
    for (size_t i = 0; i < experts.size(); ++i) {
      if (which != 13) {
        const Tensor& v = value(experts[i], which);
        b.push_back({v.raw(), v.numel(), e[i]});
        continue;
      }
      const Tensor &v1 = value(experts[i], 1), &v3 = value(experts[i], 3);
      const int64_t I = v1.size(0);
      b.push_back({v1.raw(), v1.numel(), e[i].slice0(0, I)});
      b.push_back({v3.raw(), v3.numel(), e[i].slice0(I, 2 * I)});
    }
    return b;
  };
  // kind 100 + which: apart from model::Linear's single-matrix entries (kind 0)
  return ctx.operands->get(key, 100 + which, [&] { return round_weights(ctx, experts, which); },
                           bind);
}

// dst (N, C) += the expert-sorted rows (N*K, C) weighted by the gate weights (N, K) (undefined:
// 1): per token, without atomics (combine_pairs; the CUDA kernel takes at most 16 pairs a
// token, beyond that the scatter with the pairs' weights, the same sums in the same order).
void add_to_tokens(const ops::Context& ctx, const MoESaved& s, const Tensor& rows,
                   const Tensor& gate_w, const Tensor& pair_w, Tensor& dst) {
  const int64_t N = dst.size(0), K = N > 0 ? rows.size(0) / N : 0;
  if (ctx.device == Device::cpu || K <= 16)
    ops::combine_pairs(ctx, rows, s.pair_slot.view({N, K}), gate_w, dst);
  else
    ops::scatter_add_rows(ctx, rows, s.pair_tok, pair_w, dst);
}

// The gradients of matrix `which` (13: gate_proj and up_proj stacked) of every local expert.
std::vector<Tensor> grads(const std::vector<MLP>& experts, int which) {
  std::vector<Tensor> g;
  g.reserve(experts.size());
  for (const MLP& m : experts)
    g.push_back(which == 13 ? m.w1.w->grad.join0(m.w3.w->grad)
                            : (which == 1 ? m.w1 : which == 2 ? m.w2 : m.w3).w->grad);
  return g;
}

// Whether gate_proj and up_proj run as one GEMM over their stacked (2I, C) matrices: the
// context allows it, and every expert's two gradients (when training) and, where the GEMMs
// read the F32 values themselves (not bf16 mode), its two values lie stacked
// (ParamStore::stack; not so after a tool replaced them).
bool stacked(const ops::Context& ctx, const std::vector<MLP>& experts, bool train) {
  if (!ops::use_stacked_gate_up(ctx)) return false;
  for (const MLP& m : experts) {
    if (!bf16_mode(ctx) && !m.w1.w->value.join0(m.w3.w->value).defined()) return false;
    if (train && !m.w1.w->grad.join0(m.w3.w->grad).defined()) return false;
  }
  return true;
}

// An F32 GEMM output, or BF16 codes when `codes` (the routed experts' BF16 outputs).
Tensor gemm_output(const ops::Context& ctx, const Shape& shape, bool codes) {
  return codes ? Tensor::empty(shape, DType::bf16, ctx.device) : detail::empty_f32(ctx, shape);
}

}  // namespace

void MoE::routed_forward_grouped(const ops::Context& ctx, const Tensor& u, bool train, Tensor& y,
                                 MoESaved& s) const {
  const int64_t NK = s.offsets.back(), I = experts.empty() ? 0 : experts[0].w1.out;
  if (NK == 0) return;
  s.g_x = gathered_operand(ctx, u, s.pair_tok, Tensor());   // (N*K, C) expert-sorted inputs
  s.g_act = operand_out(ctx, {NK, I});   // the GEMM operand, kept for the backward
  s.g_h = s.g_h1 = s.g_h3 = Tensor();
  const bool stack = stacked(ctx, experts, train);
  // The experts' GEMM outputs as BF16 (Context::expert_outputs_bf16): bf16 mode over stacked
  // gate/up, and at most 16 pairs a token (the per-token combine reads them). The backward
  // follows the forward (s.g_y's dtype).
  const int64_t N = u.size(0);
  const bool codes = bf16_mode(ctx) && stack && ops::expert_outputs_bf16(ctx) && N > 0 &&
                     NK / N <= 16;
  if (stack) {   // gate and up from one GEMM, [gate | up] per row
    s.g_h = gemm_output(ctx, {NK, 2 * I}, codes);
    ops::grouped_matmul(ctx, s.g_x, weights(ctx, experts, 13), true, s.offsets, s.g_h);
    ops::swiglu_packed_forward(ctx, s.g_h, s.g_act);
  } else {
    s.g_h1 = detail::empty_f32(ctx, {NK, I});
    s.g_h3 = detail::empty_f32(ctx, {NK, I});
    ops::grouped_matmul(ctx, s.g_x, weights(ctx, experts, 1), true, s.offsets, s.g_h1);
    ops::grouped_matmul(ctx, s.g_x, weights(ctx, experts, 3), true, s.offsets, s.g_h3);
    ops::swiglu_forward(ctx, s.g_h1, s.g_h3, s.g_act);
  }
  finish_operand(ctx, s.g_act);
  s.g_y = gemm_output(ctx, {NK, C}, codes);
  ops::grouped_matmul(ctx, s.g_act, weights(ctx, experts, 2), true, s.offsets, s.g_y);
  add_to_tokens(ctx, s, s.g_y, s.gate.weights, s.pair_w, y);   // y += w * expert(u)
  if (!train) s.g_x = s.g_h = s.g_h1 = s.g_h3 = s.g_act = s.g_y = Tensor();
}

void MoE::routed_backward_grouped(const ops::Context& ctx, MoESaved& s, const Tensor& dy,
                                  Tensor& du, Tensor& dpair_w) const {
  const int64_t NK = s.offsets.back();
  if (NK == 0) return;
  const int64_t I = s.g_act.size(1);
  const bool codes = s.g_y.dtype() == DType::bf16;   // the forward's BF16 outputs
  // dL/dw_pair = <dy[tok], y_e>, and what each expert sees (w * dy[tok], its GEMM operand):
  // in bf16 mode in one pass over the gathered rows
  Tensor g;
  if (bf16_mode(ctx)) {
    g = operand_like(ctx, {NK, dy.size(1)});
    ops::gather_rows_bf16_dot(ctx, dy, s.pair_tok, s.pair_w, s.g_y, g, dpair_w);
  } else {
    ops::gather_rows_dot(ctx, dy, s.pair_tok, s.g_y, dpair_w);
    g = gathered_operand(ctx, dy, s.pair_tok, s.pair_w);
  }
  // down_proj: dact = dyw @ W2 (W2 (C, I)), dW2 += dyw^T act
  Tensor dact = gemm_output(ctx, {NK, I}, codes);
  ops::grouped_matmul(ctx, g, weights(ctx, experts, 2), false, s.offsets, dact);
  std::vector<Tensor> dw2 = grads(experts, 2);
  ops::grouped_matmul_wgrad(ctx, g, s.g_act, s.offsets, dw2);
  // gate_proj and up_proj: dx = dh1 @ W1 + dh3 @ W3 (W (I, C)), dW += dh^T x, with dh1 and
  // dh3 written by SwiGLU's backward as GEMM operands; stacked: dx = [dh1 | dh3] @ [W1; W3]
  // and [dW1; dW3] += [dh1 | dh3]^T x, one GEMM each
  Tensor dug = gemm_output(ctx, {NK, C}, codes);
  if (s.g_h.defined()) {
    Tensor dh = operand_out(ctx, {NK, 2 * I});
    ops::swiglu_packed_backward(ctx, s.g_h, dact, dh);
    finish_operand(ctx, dh);
    ops::grouped_matmul(ctx, dh, weights(ctx, experts, 13), false, s.offsets, dug);
    std::vector<Tensor> dw13 = grads(experts, 13);
    ops::grouped_matmul_wgrad(ctx, dh, s.g_x, s.offsets, dw13);
  } else {
    Tensor g1 = operand_out(ctx, {NK, I}), g3 = operand_out(ctx, {NK, I});
    ops::swiglu_backward(ctx, s.g_h1, s.g_h3, dact, g1, g3);
    finish_operand(ctx, g1);
    finish_operand(ctx, g3);
    ops::grouped_matmul(ctx, g1, weights(ctx, experts, 1), false, s.offsets, dug);
    ops::grouped_matmul(ctx, g3, weights(ctx, experts, 3), false, s.offsets, dug, 1.0f);
    std::vector<Tensor> dw1 = grads(experts, 1), dw3 = grads(experts, 3);
    ops::grouped_matmul_wgrad(ctx, g1, s.g_x, s.offsets, dw1);
    ops::grouped_matmul_wgrad(ctx, g3, s.g_x, s.offsets, dw3);
  }
  add_to_tokens(ctx, s, dug, Tensor(), Tensor(), du);
  s.g_x = s.g_h = s.g_h1 = s.g_h3 = s.g_act = s.g_y = Tensor();
}

}  // namespace ds::model
