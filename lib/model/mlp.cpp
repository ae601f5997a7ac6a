// SwiGLU MLP (see mlp.hpp), forward and exact backward.
// reference: DeepSeek-V3 inference/model.py MLP.forward: w2(silu(w1(x)) * w3(x)).
#include "ds/model/mlp.hpp"

#include "model_util.hpp"

namespace ds::model {

MLP::MLP(ParamStore& store, const std::string& prefix, int64_t C, int64_t I, double init_std,
         int layer, int expert)
    : w1(store, prefix + "gate_proj.weight", I, C, init_std, /*fp8=*/true, layer, expert),
      w2(store, prefix + "down_proj.weight", C, I, init_std, /*fp8=*/true, layer, expert),
      w3(store, prefix + "up_proj.weight", I, C, init_std, /*fp8=*/true, layer, expert) {}

void MLP::forward(const ops::Context& ctx, const Tensor& x, Tensor& y, MLPSaved& s) const {
  s.x = gemm_input(ctx, x);   // one operand for w1 and w3, forward and backward
  w1.forward(ctx, s.x, s.h1);
  w3.forward(ctx, s.x, s.h3);
  s.act = gemm_input_empty(ctx, s.h1.shape());   // w2's operand, written by SwiGLU
  ops::swiglu_forward(ctx, s.h1, s.h3, s.act);
  w2.forward(ctx, s.act, y);
}

void MLP::backward(const ops::Context& ctx, const MLPSaved& s, const Tensor& dy,
                   Tensor& dx) const {
  Tensor dact;                                             // (N, I)
  // (N, I) each, the output gradients of w1 and w3 in their GEMMs' form (gemm_input_empty)
  Tensor dh1 = gemm_input_empty(ctx, s.h1.shape()), dh3 = gemm_input_empty(ctx, s.h3.shape());
  w2.backward(ctx, s.act, dy, dact);
  ops::swiglu_backward(ctx, s.h1, s.h3, dact, dh1, dh3);
  w1.backward(ctx, s.x, dh1, dx);
  Tensor dx3;
  w3.backward(ctx, s.x, dh3, dx3);
  ops::add_(ctx, dx, dx3);
}

}  // namespace ds::model
