// The DeepSeek-V3 model and its training losses (see transformer.hpp): forward over the main
// blocks and the MTP chain, loss heads, and the manual backward in reverse order (MTP depths
// D..1, final norm, blocks L-1..0, embedding), freeing each layer's activations as it goes;
// and the policy-gradient head (per-token log-probabilities, loss gradient from a callback).
// Host loops here only shift/select token ids and loss weights of the input batch (index
// bookkeeping); all numerics go through ops::.
// reference: DeepSeek-V3 inference/model.py Transformer.forward; paper §2.2 (MTP losses).
#include "ds/model/transformer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "ds/core/error.hpp"
#include "ds/model/rope_yarn.hpp"
#include "model_util.hpp"

namespace ds::model {

using detail::empty_f32;
using detail::upload_i32;

// Host copy of the batch (index bookkeeping only).
namespace {
struct HostBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tok;    // (B, T+1)
  std::vector<int32_t> pos;    // (B, T)
  std::vector<int32_t> seg;    // (B, T) or empty
  std::vector<float> mask;     // (B, T) or empty
  std::vector<int32_t> len;    // (B) real tokens of each row (1..T+1), or empty
};

// The sequences of a pass at MTP depth k (0: the main model) for the balance loss: row b's
// positions i whose prediction y[i + k] is a real token, len_b - 1 - k of them (so a row's
// statistics do not depend on whether its last token happens to be an input, as it is when
// another row of the batch is longer).
std::vector<int32_t> real_prefix(const HostBatch& h, int64_t k) {
  std::vector<int32_t> out;
  for (const int32_t L : h.len) out.push_back(int32_t(std::max<int64_t>(0, L - 1 - k)));
  return out;
}

HostBatch read_batch(const Batch& b) {
  HostBatch h;
  DS_CHECK_AS(UsageError, b.tokens.defined() && b.tokens.ndim() == 2 && b.tokens.size(1) >= 2,
              "batch tokens must be (B, T+1) with T >= 1");
  h.B = b.tokens.size(0);
  h.T = b.tokens.size(1) - 1;
  h.tok = detail::download_i32(b.tokens);
  if (b.positions.defined()) {
    DS_CHECK_SHAPE(b.positions, {h.B, h.T});
    h.pos = detail::download_i32(b.positions);
  } else {
    h.pos.resize(size_t(h.B * h.T));
    for (int64_t i = 0; i < h.B * h.T; ++i) h.pos[size_t(i)] = int32_t(i % h.T);
  }
  if (b.segments.defined()) {
    DS_CHECK_SHAPE(b.segments, {h.B, h.T});
    h.seg = detail::download_i32(b.segments);
  }
  if (b.loss_mask.defined()) {
    DS_CHECK_SHAPE(b.loss_mask, {h.B, h.T});
    h.mask = detail::download_f32(b.loss_mask);
  }
  if (!b.lengths.empty()) {
    DS_CHECK_AS(UsageError, int64_t(b.lengths.size()) == h.B, "batch: {} lengths for {} rows",
                b.lengths.size(), h.B);
    for (const int32_t L : b.lengths)
      DS_CHECK_AS(UsageError, L >= 1 && L <= h.T + 1, "batch: row length {} outside [1, {}]", L,
                  h.T + 1);
    h.len = b.lengths;
  }
  return h;
}

// Rows i < Tk of each sequence of a (B, T) host array.
template <class V>
std::vector<V> prefix_rows(const std::vector<V>& a, int64_t B, int64_t T, int64_t Tk) {
  std::vector<V> out;
  if (a.empty()) return out;
  out.reserve(size_t(B * Tk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tk; ++i) out.push_back(a[size_t(b * T + i)]);
  return out;
}
}  // namespace

struct Transformer::Pass {
  bool train = false;
  const PolicyLossFn* policy = nullptr;   // policy head instead of the CE losses
  bool scores_only = false;             // policy head without a loss (token_scores)
  TokenScores* scores = nullptr;        // receives the policy head's scores
  float grad_scale = 1;
  LossWeights lw;
  MoEOptions opt;
  HostBatch hb;
  double W = 1;                         // loss normaliser (sum of target weights)
  SeqInfo seq;                          // main sequences (B, T)
  Tensor x_ids;                         // (N) i32
  std::vector<BlockSaved> blocks;       // (n_layers) when training
  Tensor h_in;                          // (N, C) previous stage's output (not the first stage)
  Tensor h_last;                        // (N, C) last block output
  Tensor dh_out;                        // (N, C) gradient at h_last from the next stage
  Tensor dh_in;                         // (N, C) gradient at h_in for the previous stage
  Tensor rstd0;                         // (N)
  Tensor g0;                            // (N, C) final norm output
  Tensor dg0;                           // (N, C) gradient at g0
  std::vector<SeqInfo> mtp_seq;         // (D) shortened sequences (B, T-k)
  std::vector<MTPSaved> mtp;            // (D) when training
  std::vector<Tensor> mtp_dg;           // (D) gradient at g^k, (B*(T-k), C)
  StepResult r;
};

Transformer::Transformer(const ModelArgs& args, ParamStore& store, const ModelParallel& par)
    : args_(args), store_(store), par_(par) {
  validate(args_, "model");
  const auto [l0, l1] = stage_layers(args_.n_layers, par_.pp_size, par_.pp_rank);
  layer0_ = l0;
  const bool first = par_.first_stage(), last = par_.last_stage();
  embed_copy_ = last && !first && args_.n_mtp_layers > 0;
  if (first || embed_copy_) {
    if (store.find("model.embed_tokens.weight")) {
      // another model chunk of this rank registered it (DualPipe: the first and last stage
      // on one rank): both use the one tensor, so its gradient sums here, no copy to keep
      embed_.weight = &store.get("model.embed_tokens.weight");
      embed_copy_ = false;
    } else {
      embed_ = Embedding(store, args_);
    }
  }
  layers_.reserve(size_t(l1 - l0));
  for (int64_t l = l0; l < l1; ++l)
    layers_.emplace_back(store, args_, fmt::format("model.layers.{}.", l), int(l),
                         args_.is_moe_layer(l), par_.ep);
  if (last) {
    norm_ = RMSNorm(store, "model.norm.weight", args_.dim, args_.norm_eps, -1);
    head_ = Linear(store, "lm_head.weight", args_.vocab_size, args_.dim, args_.init_std,
                   /*fp8=*/false, -1);
    mtp_.reserve(size_t(args_.n_mtp_layers));
    for (int64_t k = 1; k <= args_.n_mtp_layers; ++k)
      mtp_.emplace_back(store, args_, int(k), par_.ep);
  }
  // MoE slots of the whole model (layout-independent counts), pointers for the local ones.
  moe_slot_.assign(size_t(args_.n_layers), -1);
  for (int64_t l = 0; l < args_.n_layers; ++l)
    if (args_.is_moe_layer(l)) {
      moe_slot_[size_t(l)] = int(moe_layers_.size());
      moe_layers_.push_back(l >= l0 && l < l1 ? layers_[size_t(l - l0)].moe.get() : nullptr);
      moe_names_.push_back(fmt::format("model.layers.{}.mlp", l));
    }
  for (int64_t k = 1; k <= args_.n_mtp_layers; ++k) {
    moe_layers_.push_back(last ? mtp_[size_t(k - 1)].block.moe.get() : nullptr);
    moe_names_.push_back(fmt::format("model.layers.{}.mlp", args_.n_layers + k - 1));
  }
}

std::vector<std::string> Transformer::moe_layer_names() const { return moe_names_; }

int64_t Transformer::a2a_bytes_sent() const {
  int64_t n = 0;
  for (const MoE* m : moe_layers_)
    if (m) n += m->a2a_bytes_total;
  return n;
}

void Transformer::collect_moe(const MoESaved& s, int slot, StepResult& r) const {
  r.expert_counts[size_t(slot)] = s.real_counts.empty() ? s.counts : s.real_counts;
  r.route_idx[size_t(slot)] = s.gate.idx;
  r.loss_balance += s.balance;
}

// Loss of one output head over g (N', C): sum_i w_i CE_i / W (w empty = all 1). When training,
// dg (N', C) = d(coeff * loss * grad_scale)/dg, and lm_head.grad accumulates. The logits are
// made, consumed and turned into dlogits logit_chunk_ elements at a time (rows of N'), so a
// long batch times a large vocabulary never holds all (N', V) logits at once.
double Transformer::head_loss(const ops::Context& ctx, Pass& p, const Tensor& g,
                              const std::vector<int32_t>& tgt, const std::vector<float>& w,
                              double coeff, Tensor& dg) {
  const int64_t N = g.size(0), C = g.size(1), V = args_.vocab_size;
  std::vector<int32_t> t = tgt;
  bool weighted = false;   // some weight other than 0 or 1
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i] == 0.0f) t[i] = -1;
    else if (w[i] != 1.0f) weighted = true;
  }
  const Tensor targets = upload_i32(ctx, t, {N});
  const Tensor wt = weighted ? detail::upload_f32(ctx, w, {N}) : Tensor();
  const Tensor losses = empty_f32(ctx, {N});
  const int64_t rows = std::max<int64_t>(1, logit_chunk_ / std::max<int64_t>(1, V));
  if (p.train && N > rows && !dg.defined()) dg = empty_f32(ctx, {N, C});
  // the head's operand, once for every chunk (a chunk's rows start at r0*C elements: 16-byte
  // aligned BF16 rows for cuBLAS whenever C % 8 == 0, as in every preset)
  const Tensor gin = gemm_input(ctx, g);
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t r1 = std::min(N, r0 + rows);
    const bool whole = r0 == 0 && r1 == N;
    const Tensor gc = whole ? gin : gin.slice0(r0, r1);
    const Tensor tc = whole ? targets : targets.slice0(r0, r1);
    Tensor lc = whole ? losses : losses.slice0(r0, r1), logits, dlogits;
    head_.forward(ctx, gc, logits);
    if (p.train) {   // one fused pass writing dlogits (rows, V): into the logits buffer, or,
                     // under shared GEMM inputs and 0/1 weights, as the head's BF16 operand
      dlogits = !weighted && gemm_inputs_shared(ctx)
                    ? Tensor::empty(logits.shape(), DType::bf16, ctx.device)
                    : logits;
      ops::cross_entropy_forward_backward(ctx, logits, tc, float(p.grad_scale * coeff / p.W), lc,
                                          dlogits);
    } else {
      ops::cross_entropy_forward(ctx, logits, tc, lc);
    }
    const Tensor wc = !weighted ? Tensor() : whole ? wt : wt.slice0(r0, r1);
    if (p.train) {
      if (weighted) {   // dlogits is the logits buffer here
        dlogits = empty_f32(ctx, logits.shape());
        detail::scale_rows(ctx, logits, wc, dlogits);
      }
      Tensor dgc = whole ? dg : dg.slice0(r0, r1);
      head_.backward(ctx, gc, dlogits, dgc);
      if (whole) dg = dgc;   // allocated by the Linear when it was undefined
    }
  }
  // one read of the losses after every chunk (a device round trip per head, not per chunk)
  const double sum = weighted ? detail::dot(ctx, losses, wt) : ops::sum(ctx, losses);
  return sum / p.W;
}

// Policy head over g (N, C): per-token log-probabilities and entropies of the scored targets
// (tgt = -1 elsewhere), of softmax(logits / policy_temperature_). When training, the
// callback's dL/dlogp (times grad_scale) becomes dlogits in place of the logits, then
// lm_head.grad accumulates and dg (N, C) is written.
// Beyond logit_chunk_ elements the logits are made chunk by chunk twice: once for the scores
// (the callback needs all of them), once more for the backward.
void Transformer::head_policy(const ops::Context& ctx, Pass& p, const Tensor& g,
                              const std::vector<int32_t>& tgt, Tensor& dg) {
  const int64_t N = g.size(0), C = g.size(1), V = args_.vocab_size;
  const Tensor targets = upload_i32(ctx, tgt, {N});
  const Tensor logp = empty_f32(ctx, {N}), lse = empty_f32(ctx, {N}), ent = empty_f32(ctx, {N});
  const int64_t rows = std::max<int64_t>(1, logit_chunk_ / std::max<int64_t>(1, V));
  const Tensor gin = gemm_input(ctx, g);   // the head's operand, once for every chunk
  const float inv_t = 1.0f / policy_temperature_;
  auto chunk = [&](int64_t r0, int64_t r1, Tensor& logits) {   // logits / t of rows [r0, r1)
    const bool whole = r0 == 0 && r1 == N;
    head_.forward(ctx, whole ? gin : gin.slice0(r0, r1), logits);
    if (inv_t != 1.0f) ops::scale_(ctx, logits, inv_t);
  };
  Tensor logits;   // kept from the scoring pass when there is one chunk
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t r1 = std::min(N, r0 + rows);
    Tensor lc;
    chunk(r0, r1, lc);
    Tensor lp = logp.slice0(r0, r1), ls = lse.slice0(r0, r1), en = ent.slice0(r0, r1);
    ops::token_logprob_forward(ctx, lc, targets.slice0(r0, r1), lp, ls, en);
    if (r0 == 0 && r1 == N) logits = lc;
  }
  TokenScores sc{detail::download_f32(logp), detail::download_f32(ent)};
  if (p.train) {
    std::vector<float> d(static_cast<size_t>(N), 0.0f);
    p.r.loss_main = (*p.policy)(sc, d);
    for (size_t i = 0; i < d.size(); ++i)   // only scored targets carry a gradient
      if (tgt[i] < 0) d[i] = 0.0f;
    Tensor dlogp = detail::upload_f32(ctx, d, {N});
    const float dscale = p.grad_scale * inv_t;   // d/dlogits = (1/t) d/d(logits/t)
    if (dscale != 1.0f) ops::scale_(ctx, dlogp, dscale);
    if (N > rows && !dg.defined()) dg = empty_f32(ctx, {N, C});
    for (int64_t r0 = 0; r0 < N; r0 += rows) {
      const int64_t r1 = std::min(N, r0 + rows);
      const bool whole = r0 == 0 && r1 == N;
      Tensor lc = logits;
      if (!whole) chunk(r0, r1, lc);
      // (rows, V) dlogits in place, or as the head's BF16 operand under shared GEMM inputs
      Tensor dl = gemm_inputs_shared(ctx) ? Tensor::empty(lc.shape(), DType::bf16, ctx.device)
                                          : lc;
      ops::token_logprob_backward(ctx, lc, targets.slice0(r0, r1), lse.slice0(r0, r1),
                                  dlogp.slice0(r0, r1), dl);
      Tensor dgc = whole ? dg : dg.slice0(r0, r1);
      head_.backward(ctx, whole ? gin : gin.slice0(r0, r1), dl, dgc);
      if (whole) dg = dgc;
    }
  }
  if (p.scores) *p.scores = std::move(sc);
}

// This stage's main blocks; the first stage embeds, the last applies the final norm and the
// head. Other stages leave their output in p.h_last for the next stage.
void Transformer::forward_main(const ops::Context& ctx, Pass& p) {
  const HostBatch& hb = p.hb;
  const int64_t B = hb.B, T = hb.T, N = B * T;
  p.seq = SeqInfo{B, T, upload_i32(ctx, hb.pos, {N}),
                  hb.seg.empty() ? Tensor() : upload_i32(ctx, hb.seg, {B, T}),
                  rope_freqs_tensor(ctx, args_), real_prefix(hb, 0)};
  std::vector<int32_t> x(static_cast<size_t>(N)), y(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i) {
      x[size_t(b * T + i)] = hb.tok[size_t(b * (T + 1) + i)];
      y[size_t(b * T + i)] = hb.tok[size_t(b * (T + 1) + i + 1)];
    }
  Tensor h;
  if (par_.first_stage()) {
    p.x_ids = upload_i32(ctx, x, {N});
    embed_.forward(ctx, p.x_ids, h);
  } else {
    DS_CHECK_SHAPE(p.h_in, {N, args_.dim});
    h = p.h_in;
  }
  if (p.train) p.blocks.resize(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    BlockSaved tmp;
    BlockSaved& s = p.train ? p.blocks[l] : tmp;
    Tensor out;
    layers_[l].forward(ctx, h, p.seq, p.opt, out, s);
    if (layers_[l].moe) collect_moe(s.moe, moe_slot_[size_t(layers_[l].layer)], p.r);
    h = out;
  }
  p.h_last = h;
  if (!par_.last_stage()) return;
  norm_.forward(ctx, h, p.g0, p.rstd0);
  if (p.policy || p.scores_only) {
    for (size_t i = 0; i < hb.mask.size(); ++i)
      if (hb.mask[i] == 0.0f) y[i] = -1;
    head_policy(ctx, p, p.g0, y, p.dg0);
  } else {
    p.r.loss_main = head_loss(ctx, p, p.g0, y, hb.mask, 1.0, p.dg0);
  }
}

void Transformer::forward_mtp(const ops::Context& ctx, Pass& p) {
  const HostBatch& hb = p.hb;
  const int64_t B = hb.B, T = hb.T, D = int64_t(mtp_.size());
  const double coeff = D > 0 ? double(p.lw.mtp_lambda) / double(D) : 0.0;
  // chain skipped (its layers keep zero counts) or held by the last stage
  if (p.lw.mtp_lambda == 0.0f || !par_.last_stage()) return;
  Tensor g_prev = p.g0;
  for (int64_t k = 1; k <= D; ++k) {
    const int64_t Tk = T - k, N = B * Tk;
    std::vector<int32_t> ids(static_cast<size_t>(N)), sel(ids), tgt(ids);
    std::vector<float> w;
    if (!hb.mask.empty() || !hb.seg.empty()) w.assign(size_t(N), 1.0f);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Tk; ++i) {
        const size_t r = size_t(b * Tk + i);
        ids[r] = hb.tok[size_t(b * (T + 1) + i + k)];        // x[i+k]
        tgt[r] = hb.tok[size_t(b * (T + 1) + i + k + 1)];    // y[i+k]
        sel[r] = int32_t(b * (Tk + 1) + i);                  // row i of g^{k-1}
        if (!hb.mask.empty()) w[r] *= hb.mask[size_t(b * T + i + k)];
        if (!hb.seg.empty() && hb.seg[size_t(b * T + i)] != hb.seg[size_t(b * T + i + k)]) w[r] = 0;
      }
    SeqInfo sk{B, Tk, upload_i32(ctx, prefix_rows(hb.pos, B, T, Tk), {N}),
               hb.seg.empty() ? Tensor() : upload_i32(ctx, prefix_rows(hb.seg, B, T, Tk), {B, Tk}),
               p.seq.freqs, real_prefix(hb, k)};
    MTPSaved s;
    s.ids = upload_i32(ctx, ids, {N});
    s.sel = upload_i32(ctx, sel, {N});
    mtp_[size_t(k - 1)].forward(ctx, embed_, g_prev, sk, p.opt, s);
    collect_moe(s.block.moe, int(moe_layers_.size() - size_t(D) + size_t(k - 1)), p.r);
    Tensor dg;
    p.r.loss_mtp += coeff * head_loss(ctx, p, s.g, tgt, w, coeff, dg);
    g_prev = s.g;
    if (p.train) {
      p.mtp_seq.push_back(sk);
      p.mtp.push_back(std::move(s));
      p.mtp_dg.push_back(dg);
    }
  }
}

void Transformer::backward(const ops::Context& ctx, Pass& p) {
  Tensor dh;
  if (par_.last_stage()) {
    for (size_t k = p.mtp.size(); k-- > 0;) {
      Tensor& dprev = k == 0 ? p.dg0 : p.mtp_dg[k - 1];
      mtp_[k].backward(ctx, embed_, p.mtp[k], p.mtp_seq[k], p.mtp_dg[k], dprev);
      p.mtp_dg[k] = Tensor();
    }
    norm_.backward(ctx, p.h_last, p.rstd0, p.dg0, dh);
    p.dg0 = p.g0 = Tensor();
  } else {
    DS_CHECK_SHAPE(p.dh_out, {p.hb.B * p.hb.T, args_.dim});
    dh = p.dh_out;
  }
  p.h_last = p.dh_out = Tensor();
  Tensor dh_codes;   // dh's BF16 codes from the block above (Block::backward), or undefined
  for (size_t l = layers_.size(); l-- > 0;) {
    Tensor dx, dx_codes;
    const bool want = l > 0;   // the embedding (or the previous stage) reads F32
    layers_[l].backward(ctx, p.blocks[l], p.seq, dh, dx, std::move(dh_codes),
                        want ? &dx_codes : nullptr);
    dh = dx;
    dh_codes = dx_codes;
  }
  if (par_.first_stage()) embed_.backward(ctx, p.x_ids, dh);
  else p.dh_in = dh;
}

// Host copy of the batch, the loss normaliser W and a result with one (zero) count vector
// per MoE layer of the whole model.
void Transformer::begin(Pass& p, const Batch& batch) {
  p.opt = MoEOptions{p.train, p.lw.balance_alpha, p.grad_scale, moe_grouped_, moe_fp8_codes_};
  p.hb = read_batch(batch);
  DS_CHECK_AS(UsageError, p.lw.mtp_lambda == 0.0f || p.hb.T > args_.n_mtp_layers,
              "sequence length {} must exceed the MTP depth {}", p.hb.T, args_.n_mtp_layers);
  double W = 0;
  int64_t n = 0;
  for (float m : p.hb.mask) {
    W += double(m);
    n += m != 0.0f;
  }
  if (p.hb.mask.empty()) W = double(n = p.hb.B * p.hb.T);
  p.r.n_targets = n;
  p.r.target_weight = W;
  p.W = W > 0 ? W : 1.0;
  p.r.expert_counts.assign(moe_layers_.size(),
                           std::vector<int32_t>(size_t(args_.n_routed_experts), 0));
  p.r.route_idx.assign(moe_layers_.size(), Tensor());
}

StepResult Transformer::run(Pass& p, const ops::Context& ctx, const Batch& batch) {
  DS_CHECK(par_.pp_size == 1, "this entry point needs the whole model: use stage_forward / "
           "stage_backward under pipeline parallelism");
  begin(p, batch);
  forward_main(ctx, p);
  forward_mtp(ctx, p);
  p.r.loss = p.r.loss_main + p.r.loss_mtp + p.r.loss_balance;
  if (p.train) backward(ctx, p);
  return std::move(p.r);
}

void Transformer::PassDeleter::operator()(Pass* p) const { delete p; }

Transformer::PassPtr Transformer::stage_forward(const ops::Context& ctx, const Batch& batch,
                                                const LossWeights& lw, float grad_scale,
                                                bool train, const Tensor& h_in, Tensor& h_out) {
  if (train) store_.alloc_grads();
  PassPtr p(new Pass);
  p->train = train;
  p->grad_scale = grad_scale;
  p->lw = lw;
  p->h_in = h_in;
  begin(*p, batch);
  forward_main(ctx, *p);
  forward_mtp(ctx, *p);
  p->r.loss = p->r.loss_main + p->r.loss_mtp + p->r.loss_balance;
  p->h_in = Tensor();
  h_out = par_.last_stage() ? Tensor() : p->h_last;
  if (!p->train) p->h_last = Tensor();
  return p;
}

void Transformer::stage_backward(const ops::Context& ctx, Pass& p, const Tensor& dh_out,
                                 Tensor& dh_in) {
  DS_CHECK(p.train, "stage_backward on a pass run without train");
  p.dh_out = dh_out;
  backward(ctx, p);
  dh_in = p.dh_in;
  p.dh_in = Tensor();
}

StepResult Transformer::stage_result(Pass& p) { return p.r; }

StepResult Transformer::forward_backward(const ops::Context& ctx, const Batch& batch,
                                         const LossWeights& lw, float grad_scale) {
  store_.alloc_grads();
  Pass p;
  p.train = true;
  p.grad_scale = grad_scale;
  p.lw = lw;
  return run(p, ctx, batch);
}

StepResult Transformer::forward_loss(const ops::Context& ctx, const Batch& batch,
                                     const LossWeights& lw) {
  Pass p;
  p.lw = lw;
  return run(p, ctx, batch);
}

TokenScores Transformer::token_scores(const ops::Context& ctx, const Batch& batch) {
  TokenScores out;
  Pass p;
  p.lw = LossWeights{0.0f, 0.0f};
  p.scores_only = true;
  p.scores = &out;
  run(p, ctx, batch);
  return out;
}

StepResult Transformer::forward_backward_policy(const ops::Context& ctx, const Batch& batch,
                                                const PolicyLossFn& loss_fn, float balance_alpha,
                                                float grad_scale, TokenScores* scores) {
  DS_CHECK(bool(loss_fn), "forward_backward_policy: no loss function");
  store_.alloc_grads();
  Pass p;
  p.train = true;
  p.grad_scale = grad_scale;
  p.lw = LossWeights{0.0f, balance_alpha};
  p.policy = &loss_fn;
  p.scores = scores;
  return run(p, ctx, batch);
}

void Transformer::forward_logits(const ops::Context& ctx, const Tensor& tokens, Tensor& logits) {
  DS_CHECK(par_.pp_size == 1, "forward_logits needs the whole model (no pipeline stages)");
  DS_CHECK_SHAPE(tokens, {-1, -1});
  const int64_t B = tokens.size(0), T = tokens.size(1), N = B * T;
  std::vector<int32_t> pos(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) pos[size_t(i)] = int32_t(i % T);
  const SeqInfo seq{B, T, upload_i32(ctx, pos, {N}), Tensor(), rope_freqs_tensor(ctx, args_),
                    {}};
  MoEOptions opt;
  opt.grouped = moe_grouped_;
  opt.fp8_codes = moe_fp8_codes_;
  Tensor h, ids = tokens.view({N});
  if (tokens.device() != ctx.device) {
    ids = Tensor::empty({N}, DType::i32, ctx.device);
    ids.copy_from(tokens.view({N}));
  }
  embed_.forward(ctx, ids, h);
  for (const Block& b : layers_) {
    BlockSaved s;
    Tensor out;
    b.forward(ctx, h, seq, opt, out, s);
    h = out;
  }
  Tensor g, rstd;
  norm_.forward(ctx, h, g, rstd);
  if (!logits.defined()) logits = empty_f32(ctx, {B, T, args_.vocab_size});
  DS_CHECK_SHAPE(logits, {B, T, args_.vocab_size});
  Tensor l2 = logits.view({N, args_.vocab_size});
  head_.forward(ctx, g, l2);
}

void Transformer::update_router_bias(const std::vector<std::vector<int32_t>>& counts,
                                     float gamma) {
  DS_CHECK(counts.size() == moe_layers_.size(),
           "update_router_bias: {} count vectors for {} MoE layers", counts.size(),
           moe_layers_.size());
  ops::Context ctx;
  for (size_t l = 0; l < moe_layers_.size(); ++l) {
    if (!moe_layers_[l]) continue;   // another stage's layer
    Tensor bias = moe_layers_[l]->gate.bias();
    if (!bias.defined()) continue;
    const std::vector<int32_t>& c = counts[l];
    const int64_t E = int64_t(c.size());
    DS_CHECK(E == bias.numel(), "update_router_bias: {} counts for {} experts", E, bias.numel());
    int64_t total = 0;
    for (int32_t v : c) total += v;
    std::vector<float> delta(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {   // sign(mean - c_e), exactly 0 at the mean
      const int64_t d = total - E * int64_t(c[size_t(e)]);
      delta[size_t(e)] = d > 0 ? gamma : d < 0 ? -gamma : 0.0f;
    }
    ctx.device = bias.device();
    ops::add_(ctx, bias, detail::upload_f32(ctx, delta, {E}));
  }
}

std::vector<ParamInfo> describe_params(const ModelArgs& args) {
  ParamStore store;
  store.set_allocate(false);
  Transformer model(args, store);
  std::vector<ParamInfo> out;
  out.reserve(store.params().size());
  for (const Param& p : store.params()) out.push_back(p.info);
  return out;
}

}  // namespace ds::model
