// DeepSeekMoE layer (see moe.hpp), forward and exact backward: routed expert outputs are
// y_e = expert_e(u[tok]) scatter-added with weights w; backward gathers dy for each expert,
// dw = <dy[tok], y_e> (gather_rows_dot), the expert sees w * dy[tok]. The expert-parallel
// variants of the routed part live in moe_ep.cpp.
// reference: DeepSeek-V3 inference/model.py MoE.forward (loop over experts with their tokens).
#include "ds/model/moe.hpp"

#include <fmt/format.h>

#include "ds/core/error.hpp"
#include "model_util.hpp"

namespace ds::model {

namespace {

// The routes of the sequences' real tokens per expert (for the router-bias update and
// maxvio): s.counts less the routes of each sequence's padding, positions lengths[b] to
// seq_len - 1 (ops::moe_count on those rows of idx). Left empty when nothing is padding.
void count_real_tokens(const ops::Context& ctx, MoESaved& s, int64_t E, int64_t n_seq,
                       int64_t seq_len, std::span<const int32_t> lengths) {
  s.real_counts.clear();
  if (lengths.empty()) return;
  Tensor pad = Tensor::zeros({E}, DType::i32, ctx.device);
  bool any = false;
  for (int64_t b = 0; b < n_seq; ++b) {
    const int64_t L = lengths[size_t(b)];
    if (L >= seq_len) continue;
    ops::moe_count(ctx, s.gate.idx.slice0(b * seq_len + L, (b + 1) * seq_len), pad);
    any = true;
  }
  if (!any) return;
  const std::vector<int32_t> p = detail::download_i32(pad);
  s.real_counts = s.counts;
  for (int64_t e = 0; e < E; ++e) s.real_counts[size_t(e)] -= p[size_t(e)];
}

}  // namespace

using detail::empty_f32;

MoE::MoE(ParamStore& store, const ModelArgs& a, const std::string& prefix, int layer,
         const ExpertParallel& ep_)
    : C(a.dim), E(a.n_routed_experts), K(a.n_activated_experts),
      gate(store, a, prefix + "gate.", layer), ep(ep_) {
  const auto [first, last] = ep.local_range(E);
  e0 = first;
  experts.reserve(size_t(last - first));
  for (int64_t e = first; e < last; ++e)
    experts.emplace_back(store, fmt::format("{}experts.{}.", prefix, e), C, a.moe_inter_dim,
                         a.init_std, layer, int(e));
  has_shared = a.n_shared_experts > 0;
  if (has_shared)
    shared_experts = MLP(store, prefix + "shared_experts.", C,
                         a.n_shared_experts * a.moe_inter_dim, a.init_std, layer);
}

// The (token, k) pairs sorted by expert (ops::moe_sort_pairs, on the device: only the E
// counts come back to the host, for the grouped GEMMs' offsets).
void MoE::group_pairs(const ops::Context& ctx, MoESaved& s) const {
  const int64_t NK = s.gate.idx.numel();
  Tensor counts = Tensor::empty({E}, DType::i32, ctx.device);
  s.pair_src = Tensor::empty({NK}, DType::i32, ctx.device);
  s.pair_tok = Tensor::empty({NK}, DType::i32, ctx.device);
  s.pair_slot = Tensor::empty({NK}, DType::i32, ctx.device);
  // the counts come back as soon as they are counted; the sort runs meanwhile
  ops::moe_sort_pairs(ctx, s.gate.idx, counts, s.pair_src, s.pair_tok, s.pair_slot, &s.counts);
  s.offsets.assign(size_t(E + 1), 0);
  for (int64_t e = 0; e < E; ++e)
    s.offsets[size_t(e + 1)] = s.offsets[size_t(e)] + s.counts[size_t(e)];
  DS_CHECK(s.offsets.back() == NK, "MoE: the router's {} pairs sorted into {} expert slots", NK,
           s.offsets.back());
  s.pair_w = empty_f32(ctx, {NK, 1});
  ops::gather_rows(ctx, s.gate.weights.view({NK, 1}), s.pair_src, s.pair_w);
  s.pair_w = s.pair_w.view({NK});
  if (s.grouped && ctx.linear.mode == ops::Precision::fp8) pad_pairs(ctx, s);
  else s.p_offsets.clear();
}

void MoE::forward(const ops::Context& ctx, const Tensor& u, int64_t n_seq, int64_t seq_len,
                  const MoEOptions& opt, Tensor& y, MoESaved& s,
                  std::span<const int32_t> lengths) const {
  DS_CHECK_SHAPE(u, {n_seq * seq_len, C});
  gate.forward(ctx, u, s.gate);
  s.balance = gate.balance_loss(ctx, s.gate, n_seq, seq_len, opt.balance_alpha, opt.grad_scale,
                                opt.train, lengths);
  const bool fp8 = ctx.linear.mode == ops::Precision::fp8;
  (void)ops::expert_outputs_bf16(ctx);   // DS_EXPERT_OUTPUTS checked on every path
  const int mode = opt.grouped >= 0 ? opt.grouped : ctx.moe_gemm;   // the model's, else the run's
  // auto (mode < 0): grouped on a GPU (in fp8 with tile scaling: measured 2x faster than the
  // loop on the H200, commit c135dd4), the loop on the CPU
  const bool grouped = mode == 1 || (mode < 0 && ctx.device != Device::cpu);
  s.grouped = !ep.active() &&
              (fp8 ? grouped && ctx.linear.granularity == ops::Fp8Granularity::tile : grouped);
  s.fp8_codes = fp8 && (ctx.device != Device::cpu || opt.fp8_codes);
  group_pairs(ctx, s);
  // only training reads the counts (router bias, maxvio): scoring passes skip the device sync
  if (opt.train) count_real_tokens(ctx, s, E, n_seq, seq_len, lengths);
  else s.real_counts.clear();
  if (has_shared) {
    shared_experts.forward(ctx, u, y, s.shared);           // y = shared(u)
  } else {
    if (!y.defined()) y = empty_f32(ctx, {u.size(0), C});
    y.zero_();
  }
  s.a2a_bytes_sent = 0;
  if (ep.active()) routed_forward_ep(ctx, u, opt.train, y, s);
  else if (s.grouped && fp8) routed_forward_fp8(ctx, u, opt.train, y, s);
  else if (s.grouped) routed_forward_grouped(ctx, u, opt.train, y, s);
  else routed_forward(ctx, u, opt.train, y, s);
  if (!opt.train) {
    s.shared = MLPSaved{};
    s.experts.clear();
  }
}

void MoE::routed_forward(const ops::Context& ctx, const Tensor& u, bool train, Tensor& y,
                         MoESaved& s) const {
  s.experts.assign(size_t(E), ExpertSaved{});
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = s.offsets[size_t(e)], M = s.offsets[size_t(e + 1)] - b;
    if (M == 0) continue;
    ExpertSaved& x = s.experts[size_t(e)];
    x.tok = s.pair_tok.slice0(b, b + M);
    x.w = s.pair_w.slice0(b, b + M);
    Tensor ue = empty_f32(ctx, {M, C});
    ops::gather_rows(ctx, u, x.tok, ue);
    experts[size_t(e)].forward(ctx, ue, x.y, x.mlp);
    ops::scatter_add_rows(ctx, x.y, x.tok, x.w, y);        // y += w * expert_e(u)
    if (!train) x = ExpertSaved{};
  }
}

void MoE::backward(const ops::Context& ctx, MoESaved& s, const Tensor& dy, Tensor& du,
                   const Tensor& dy_codes) const {
  const int64_t N = dy.size(0), NK = N * K;
  if (has_shared) {                                        // du = shared'(dy)
    shared_experts.backward(ctx, s.shared, dy_codes.defined() ? dy_codes : dy, du);
    s.shared = MLPSaved{};
  } else {
    if (!du.defined()) du = empty_f32(ctx, {N, C});
    du.zero_();
  }
  Tensor dpair_w = detail::zeros_f32(ctx, {NK});
  if (ep.active()) routed_backward_ep(ctx, s, dy, du, dpair_w);
  else if (s.grouped && !s.p_offsets.empty()) routed_backward_fp8(ctx, s, dy, du, dpair_w);
  else if (s.grouped) routed_backward_grouped(ctx, s, dy, du, dpair_w);
  else routed_backward(ctx, s, dy, du, dpair_w);
  Tensor dweights = detail::zeros_f32(ctx, {N, K});
  Tensor dweights_flat = dweights.view({NK, 1});
  ops::scatter_add_rows(ctx, dpair_w.view({NK, 1}), s.pair_src, Tensor(), dweights_flat);
  gate.backward(ctx, s.gate, dweights, du, true);   // du += the router's input gradient
}

void MoE::routed_backward(const ops::Context& ctx, MoESaved& s, const Tensor& dy, Tensor& du,
                          Tensor& dpair_w) const {
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = s.offsets[size_t(e)], M = s.offsets[size_t(e + 1)] - b;
    if (M == 0) continue;
    ExpertSaved& x = s.experts[size_t(e)];
    Tensor dyw = empty_f32(ctx, {M, C});
    Tensor dw = dpair_w.slice0(b, b + M);
    ops::gather_rows_dot(ctx, dy, x.tok, x.y, dw);        // dL/dw_pair = <dy[tok], y_e>
    ops::gather_rows_scaled(ctx, dy, x.tok, x.w, dyw);    // what the expert sees, w * dy[tok]
    Tensor due;
    experts[size_t(e)].backward(ctx, x.mlp, dyw, due);
    ops::scatter_add_rows(ctx, due, x.tok, Tensor(), du);
    x = ExpertSaved{};
  }
}

}  // namespace ds::model
