// Linear layer without bias (weights [out, in] as in nn.Linear and the HF checkpoints) and
// the parameter-registration helpers every component uses, so that names, shapes, init,
// weight-decay and FP8 flags are declared in exactly one place per tensor.
// reference: DeepSeek-V3 inference/model.py Linear / ColumnParallelLinear / RowParallelLinear.
#pragma once
#include <cstdint>
#include <string>

#include "ds/model/params.hpp"
#include "ds/ops/ops.hpp"

namespace ds::model {

// Registers a matrix parameter (decay on, Normal(0, init_std)). fp8: quantised to FP8 in the
// released checkpoints (attention projections and expert/dense FFN matrices only).
Param& add_matrix(ParamStore& store, const std::string& name, int64_t out, int64_t in,
                  double init_std, bool fp8, int layer, int expert = -1);
// Registers an RMSNorm gain (C): no decay, initialised to 1.
Param& add_norm_gain(ParamStore& store, const std::string& name, int64_t C, int layer);

// x as the GEMMs of bf16 Linears read it, made once so that the Linears sharing an input and
// their backward passes do not round it again (ctx.linear.share_inputs): under bf16 GEMMs on
// the GPU its BF16 codes (the layer keeps these for the backward instead of the F32 x; the
// CPU, when forced, widens them per use); x itself otherwise (fp32 and fp8 GEMMs read F32
// inputs, FP8 quantises per use). A Linear given such an input reads it as is (bf16 path
// only).
Tensor gemm_input(const ops::Context& ctx, const Tensor& x);
// Whether gemm_input makes BF16 operands under ctx (bf16 GEMMs and share_inputs on).
bool gemm_inputs_shared(const ops::Context& ctx);
// An uninitialised tensor in gemm_input's form (BF16 when inputs are shared, else F32) for an
// op that writes a Linear's input (or its output gradient) itself: SwiGLU, both directions.
Tensor gemm_input_empty(const ops::Context& ctx, const Shape& shape);

struct Linear {
  Param* w = nullptr;    // (out, in)
  int64_t in = 0, out = 0;

  Linear() = default;
  Linear(ParamStore& store, const std::string& name, int64_t out_features, int64_t in_features,
         double init_std, bool fp8, int layer, int expert = -1);
  // y (N, out) = x (N, in) @ w^T; y is allocated when undefined. The GEMM inputs follow
  // ctx.linear (docs/model.md "Precision"): fp32 as given; bf16 rounded to BF16; fp8 (only
  // when w->info.fp8, else as bf16) y = Q_1x128(x) Q_128x128(w)^T, Q the E4M3 fake-quantisation
  // with the context's granularity (tile; tensor: one scale per operand) and scale format.
  // x may be a BF16 gemm_input in bf16 mode (then backward takes the same tensor).
  void forward(const ops::Context& ctx, const Tensor& x /*(N,in)*/, Tensor& y /*(N,out)*/) const;
  // dx (N, in) = dy @ w (allocated when undefined; skipped when want_dx is false);
  // w.grad (F32) += dy^T @ x. bf16: all three operands rounded to BF16. fp8:
  // dx = Q_1x128(dy) Q_128x128(w) and w.grad += Q_128x1(dy)^T Q_128x1(Q_1x128(x)).
  // accumulate_dx: dx (defined) += dy @ w instead, by the GEMM itself where
  // ops::gemm_accumulates says so (bf16/fp32 GEMMs on the GPU), else a temporary and an add_.
  void backward(const ops::Context& ctx, const Tensor& x /*(N,in)*/, const Tensor& dy /*(N,out)*/,
                Tensor& dx /*(N,in)*/, bool want_dx = true, bool accumulate_dx = false) const;
};

}  // namespace ds::model
