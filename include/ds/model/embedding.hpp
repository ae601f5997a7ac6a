// Token embedding table (V, C), shared by the main model and every MTP depth (the MTP's
// embed_tokens in the released checkpoint is a copy of this tensor, not a separate parameter).
// reference: DeepSeek-V3 inference/model.py ParallelEmbedding; spec §1.4, §1.11.
#pragma once
#include <string>

#include "ds/model/config.hpp"
#include "ds/model/params.hpp"
#include "ds/ops/ops.hpp"

namespace ds::model {

struct Embedding {
  Param* weight = nullptr;   // (V, C) model.embed_tokens.weight

  Embedding() = default;
  Embedding(ParamStore& store, const ModelArgs& args);
  // out (N, C) = weight[ids]; allocated when undefined.
  void forward(const ops::Context& ctx, const Tensor& ids /*(N) i32*/, Tensor& out /*(N,C)*/) const;
  // weight.grad[ids[n]] += dout[n].
  void backward(const ops::Context& ctx, const Tensor& ids /*(N) i32*/,
                const Tensor& dout /*(N,C)*/) const;
};

}  // namespace ds::model
