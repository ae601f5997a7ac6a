// RMSNorm y = x * rstd * g with rstd = 1/sqrt(mean(x^2) + eps), statistics in FP32; used for
// attn_norm/ffn_norm, MLA's q_norm/kv_norm, the final norm and the MTP enorm/hnorm/shared_head.
// reference: DeepSeek-V3 inference/model.py RMSNorm; spec §1.5.
#pragma once
#include <string>

#include "ds/model/params.hpp"
#include "ds/ops/ops.hpp"

namespace ds::model {

struct RMSNorm {
  Param* g = nullptr;   // (C) gain, HF "<prefix>.weight"
  int64_t dim = 0;      // C
  float eps = 1e-6f;

  RMSNorm() = default;
  RMSNorm(ParamStore& store, const std::string& name, int64_t C, double eps, int layer);
  // y (N, C) and rstd (N) are allocated when undefined.
  void forward(const ops::Context& ctx, const Tensor& x /*(N,C)*/, Tensor& y /*(N,C)*/,
               Tensor& rstd /*(N)*/) const;
  // dx (N, C) overwritten (allocated F32 when undefined; a BF16 dx gets the codes of the
  // result, a Linear's gradient operand); g.grad += .
  void backward(const ops::Context& ctx, const Tensor& x /*(N,C)*/, const Tensor& rstd /*(N)*/,
                const Tensor& dy /*(N,C)*/, Tensor& dx /*(N,C)*/) const;
  // A pre-norm block's residual add fused in: h = x + a, y = norm(h) (ops::add_rmsnorm_forward;
  // h, y, rstd allocated when undefined).
  void forward_add(const ops::Context& ctx, const Tensor& x /*(N,C)*/, const Tensor& a /*(N,C)*/,
                   Tensor& h /*(N,C)*/, Tensor& y /*(N,C)*/, Tensor& rstd /*(N)*/) const;
  // dx = res + the norm's input gradient (ops::rmsnorm_backward_add); the input is h.
  // dx_codes: also dx's BF16 codes (allocated when undefined) for the Linears that read dx.
  void backward_add(const ops::Context& ctx, const Tensor& h, const Tensor& rstd,
                    const Tensor& dy, const Tensor& res /*(N,C)*/, Tensor& dx /*(N,C)*/,
                    Tensor* dx_codes = nullptr) const;
};

}  // namespace ds::model
