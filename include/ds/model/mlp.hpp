// SwiGLU feed-forward w2(silu(w1 x) * w3 x): the dense FFN of layers < n_dense_layers, the
// merged shared experts of a MoE layer and every routed expert (HF gate_proj = w1,
// up_proj = w3, down_proj = w2).
// reference: DeepSeek-V3 inference/model.py MLP / Expert; spec §1.8.
#pragma once
#include <string>

#include "ds/model/linear.hpp"

namespace ds::model {

struct MLPSaved {
  Tensor x;      // (N, C) input as gemm_input (shares storage with the caller's tensor
                 // unless that makes a BF16 operand)
  Tensor h1;     // (N, I) w1 x (gate)
  Tensor h3;     // (N, I) w3 x (up)
  Tensor h;      // (N, 2I) [w1 x | w3 x] instead of h1 and h3 when one GEMM over the stacked
                 // gate_proj / up_proj made them (ops::Context::stacked_gate_up)
  Tensor act;    // (N, I) silu(h1) * h3 as gemm_input
};

struct MLP {
  Linear w1, w2, w3;   // gate_proj (I, C), down_proj (C, I), up_proj (I, C)

  MLP() = default;
  // prefix e.g. "model.layers.0.mlp." or "model.layers.3.mlp.experts.7."; width I.
  MLP(ParamStore& store, const std::string& prefix, int64_t C, int64_t I, double init_std,
      int layer, int expert = -1);
  // y (N, C) allocated when undefined.
  void forward(const ops::Context& ctx, const Tensor& x /*(N,C)*/, Tensor& y /*(N,C)*/,
               MLPSaved& s) const;
  // dx (N, C) overwritten (allocated when undefined); weight grads +=. dy is read by
  // down_proj only: F32, or its BF16 codes under BF16 GEMMs (Block::backward).
  void backward(const ops::Context& ctx, const MLPSaved& s, const Tensor& dy /*(N,C)*/,
                Tensor& dx /*(N,C)*/) const;
};

}  // namespace ds::model
