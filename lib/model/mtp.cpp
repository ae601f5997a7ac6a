// Multi-token prediction module (see mtp.hpp), forward and exact backward.
// reference: DeepSeek-V3 paper §2.2; spec §1.11; docs/model.md "Multi-token prediction".
#include "ds/model/mtp.hpp"

#include <fmt/format.h>

#include "model_util.hpp"

namespace ds::model {

using detail::empty_f32;

static std::string mtp_prefix(const ModelArgs& a, int depth) {
  return fmt::format("model.layers.{}.", a.n_layers + depth - 1);
}

MTPModule::MTPModule(ParamStore& store, const ModelArgs& a, int k, const ExpertParallel& ep)
    : depth(k), layer(int(a.n_layers) + k - 1), C(a.dim),
      enorm(store, mtp_prefix(a, k) + "enorm.weight", a.dim, a.norm_eps, layer),
      hnorm(store, mtp_prefix(a, k) + "hnorm.weight", a.dim, a.norm_eps, layer),
      eh_proj(store, mtp_prefix(a, k) + "eh_proj.weight", a.dim, 2 * a.dim, a.init_std,
              /*fp8=*/false, layer),
      block(store, a, mtp_prefix(a, k), layer, /*is_moe=*/true, ep),
      norm(store, mtp_prefix(a, k) + "shared_head.norm.weight", a.dim, a.norm_eps, layer) {}

void MTPModule::forward(const ops::Context& ctx, const Embedding& embed, const Tensor& g_prev,
                        const SeqInfo& seq, const MoEOptions& opt, MTPSaved& s) const {
  const int64_t N = seq.B * seq.T;
  DS_CHECK_SHAPE(s.ids, {N});
  embed.forward(ctx, s.ids, s.e);
  s.hsel = empty_f32(ctx, {N, C});
  ops::gather_rows(ctx, g_prev, s.sel, s.hsel);
  Tensor en, hn;                                          // (N, C)
  enorm.forward(ctx, s.e, en, s.e_rstd);
  hnorm.forward(ctx, s.hsel, hn, s.h_rstd);
  Tensor cat = empty_f32(ctx, {N, 2 * C});
  ops::concat_last(ctx, en, hn, cat);                     // embedding half first
  s.cat = gemm_input(ctx, cat);
  eh_proj.forward(ctx, s.cat, s.hp);
  block.forward(ctx, s.hp, seq, opt, s.hb, s.block);
  norm.forward(ctx, s.hb, s.g, s.g_rstd);
}

void MTPModule::backward(const ops::Context& ctx, const Embedding& embed, MTPSaved& s,
                         const SeqInfo& seq, const Tensor& dg, Tensor& dg_prev) const {
  const int64_t N = seq.B * seq.T;
  Tensor dhb, dhp, dcat;
  norm.backward(ctx, s.hb, s.g_rstd, dg, dhb);
  Tensor dhp_codes;   // eh_proj's dy operand, when the block writes it (Block::backward)
  block.backward(ctx, s.block, seq, dhb, dhp, Tensor(), &dhp_codes);
  eh_proj.backward(ctx, s.cat, dhp_codes.defined() ? dhp_codes : dhp, dcat);
  Tensor den = empty_f32(ctx, {N, C}), dhn = empty_f32(ctx, {N, C});
  ops::split_last(ctx, dcat, den, dhn);
  Tensor de, dhsel;
  enorm.backward(ctx, s.e, s.e_rstd, den, de);
  hnorm.backward(ctx, s.hsel, s.h_rstd, dhn, dhsel);
  embed.backward(ctx, s.ids, de);
  ops::scatter_add_rows(ctx, dhsel, s.sel, Tensor(), dg_prev);
  s = MTPSaved{};
}

}  // namespace ds::model
