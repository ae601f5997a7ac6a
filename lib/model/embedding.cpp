// Token embedding (see embedding.hpp).
// reference: DeepSeek-V3 inference/model.py ParallelEmbedding (single-rank case).
#include "ds/model/embedding.hpp"

#include "ds/core/error.hpp"
#include "ds/model/linear.hpp"
#include "model_util.hpp"

namespace ds::model {

Embedding::Embedding(ParamStore& store, const ModelArgs& args) {
  // Not FP8 in the released checkpoint; a matrix for weight decay.
  weight = &add_matrix(store, "model.embed_tokens.weight", args.vocab_size, args.dim,
                       args.init_std, /*fp8=*/false, /*layer=*/-1);
}

void Embedding::forward(const ops::Context& ctx, const Tensor& ids, Tensor& out) const {
  if (!out.defined()) out = detail::empty_f32(ctx, {ids.size(0), weight->info.shape[1]});
  ops::embedding_forward(ctx, weight->value, ids, out);
}

void Embedding::backward(const ops::Context& ctx, const Tensor& ids, const Tensor& dout) const {
  DS_CHECK(weight->grad.defined(), "{}: gradient not allocated", weight->info.name);
  ops::embedding_backward(ctx, ids, dout, weight->grad);
}

}  // namespace ds::model
