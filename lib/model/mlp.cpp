// SwiGLU MLP (see mlp.hpp), forward and exact backward.
// reference: DeepSeek-V3 inference/model.py MLP.forward: w2(silu(w1(x)) * w3(x)).
#include "ds/model/mlp.hpp"

#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "model_util.hpp"

namespace ds::model {

namespace {

// gate_proj and up_proj as one (2I, C) Linear over their stacked storage (ParamStore::stack):
// a parameter view of the two (values and, where allocated, gradients) and a Linear on it.
// Not copyable: the Linear points at the view.
struct GateUp {
  Param p;
  Linear l;
  GateUp() = default;
  GateUp(const GateUp&) = delete;
  GateUp& operator=(const GateUp&) = delete;
};

// Fills g and says true when the stacked Linear computes what the two apart do: the context
// allows it (Context::stacked_gate_up), the values lie stacked and so do the gradients where
// they exist, and in FP8 the quantisation groups are those of the two matrices apart (tile
// scaling and I a multiple of 128: no 128x128 block or 1x128 group across the two).
bool gate_up(const ops::Context& ctx, const MLP& m, GateUp& g) {
  if (!ops::use_stacked_gate_up(ctx)) return false;
  const Param &p1 = *m.w1.w, &p3 = *m.w3.w;
  if (ctx.linear.mode == ops::Precision::fp8 && p1.info.fp8 &&
      (ctx.linear.granularity != ops::Fp8Granularity::tile || m.w1.out % ops::kFp8Block != 0))
    return false;
  g.p.value = p1.value.join0(p3.value);
  if (!g.p.value.defined()) return false;
  if (p1.grad.defined() || p3.grad.defined()) {
    g.p.grad = p1.grad.join0(p3.grad);
    if (!g.p.grad.defined()) return false;
  }
  g.p.info = p1.info;
  g.p.info.name += " + up_proj";
  g.p.info.shape = {2 * m.w1.out, m.w1.in};
  g.l.w = &g.p;
  g.l.in = m.w1.in;
  g.l.out = 2 * m.w1.out;
  return true;
}

}  // namespace

MLP::MLP(ParamStore& store, const std::string& prefix, int64_t C, int64_t I, double init_std,
         int layer, int expert)
    : w1(store, prefix + "gate_proj.weight", I, C, init_std, /*fp8=*/true, layer, expert),
      w2(store, prefix + "down_proj.weight", C, I, init_std, /*fp8=*/true, layer, expert),
      w3(store, prefix + "up_proj.weight", I, C, init_std, /*fp8=*/true, layer, expert) {
  // gate_proj and up_proj (and their gradients) as one (2I, C) matrix, the operand of one
  // GEMM (here, and in the grouped routed experts: moe_grouped.cpp, moe_fp8.cpp)
  store.stack({w1.w->info.name, w3.w->info.name});
}

void MLP::forward(const ops::Context& ctx, const Tensor& x, Tensor& y, MLPSaved& s) const {
  s.x = gemm_input(ctx, x);   // one operand for w1 and w3, forward and backward
  s.act = gemm_input_empty(ctx, {x.size(0), w1.out});   // w2's operand, written by SwiGLU
  GateUp g;
  if (gate_up(ctx, *this, g)) {   // [gate | up] per row from one GEMM
    s.h = s.h1 = s.h3 = Tensor();
    g.l.forward(ctx, s.x, s.h);
    ops::swiglu_packed_forward(ctx, s.h, s.act);
  } else {
    s.h = Tensor();
    w1.forward(ctx, s.x, s.h1);
    w3.forward(ctx, s.x, s.h3);
    ops::swiglu_forward(ctx, s.h1, s.h3, s.act);
  }
  w2.forward(ctx, s.act, y);
}

void MLP::backward(const ops::Context& ctx, const MLPSaved& s, const Tensor& dy,
                   Tensor& dx) const {
  Tensor dact;                                             // (N, I)
  w2.backward(ctx, s.act, dy, dact);
  if (s.h.defined()) {
    // [dgate | dup] (N, 2I) in the GEMMs' form; dx = [dgate | dup] @ [W1; W3] in one GEMM
    GateUp g;
    DS_CHECK(gate_up(ctx, *this, g), "MLP {}: gate_proj and up_proj are no longer stacked",
             w1.w->info.name);
    Tensor dh = gemm_input_empty(ctx, s.h.shape());
    ops::swiglu_packed_backward(ctx, s.h, dact, dh);
    g.l.backward(ctx, s.x, dh, dx);
    return;
  }
  // (N, I) each, the output gradients of w1 and w3 in their GEMMs' form (gemm_input_empty)
  Tensor dh1 = gemm_input_empty(ctx, s.h1.shape()), dh3 = gemm_input_empty(ctx, s.h3.shape());
  ops::swiglu_backward(ctx, s.h1, s.h3, dact, dh1, dh3);
  w1.backward(ctx, s.x, dh1, dx);
  w3.backward(ctx, s.x, dh3, dx, true, true);   // dx +=
}

}  // namespace ds::model
