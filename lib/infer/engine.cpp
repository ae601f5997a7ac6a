// Inference engine (see engine.hpp): weight binding, the latent KV cache, and the batched
// forward of the main model and of the MTP block with absorbed MLA. Host loops only build the
// row bookkeeping (positions, slots, cache rows); every number goes through ops::.
// reference: DeepSeek-V3 inference/model.py MLA.forward (attn_impl="absorb"), Block,
// Transformer.forward (logits of the last position only); spec §2.1, §2.7.
#include "ds/infer/engine.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

#include "ds/core/dtype.hpp"
#include "ds/core/error.hpp"
#include "ds/model/rope_yarn.hpp"

namespace ds::infer {

namespace {

Tensor empty_f32(const ops::Context& ctx, const Shape& s) {
  return Tensor::empty(s, DType::f32, ctx.device);
}
Tensor to_host(const Tensor& t) {
  if (t.device() == Device::cpu) return t;
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  h.copy_from(t);
  return h;
}

Tensor upload_i32(const ops::Context& ctx, const std::vector<int32_t>& v) {
  Tensor host = Tensor::empty({int64_t(v.size())}, DType::i32);
  std::copy(v.begin(), v.end(), host.i32());
  if (ctx.device == Device::cpu) return host;
  Tensor dev = Tensor::empty(host.shape(), DType::i32, ctx.device);
  dev.copy_from(host);
  return dev;
}

// Weights the engine reads only through ops::linear_forward (model::Linear::forward and the
// router's Gate::forward). kv_b_proj is excluded: its rows are split into W^UK / W^UV for the
// absorbed attention (ops::split_last, ops::head_matmul, F32 only).
bool linear_only(const std::string& name) {
  static const char* const kSuffixes[] = {
      "q_a_proj.weight",   "q_b_proj.weight", "q_proj.weight",  "kv_a_proj_with_mqa.weight",
      "o_proj.weight",     "gate_proj.weight", "up_proj.weight", "down_proj.weight",
      "mlp.gate.weight",   "lm_head.weight",  "eh_proj.weight"};
  for (std::string_view suf : kSuffixes)
    if (name.size() >= suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0)
      return true;
  return false;
}

// A BF16 copy of an F32 CPU matrix whose every value round-trips through BF16 bit for bit, or
// an undefined tensor when any value does not.
Tensor exact_bf16(const Tensor& w) {
  if (w.device() != Device::cpu || w.dtype() != DType::f32 || w.ndim() != 2) return {};
  const float* src = w.f32();
  const int64_t n = w.numel();
  for (int64_t i = 0; i < n; ++i)
    if (f32_to_bits(bf16_to_f32(f32_to_bf16(src[i]))) != f32_to_bits(src[i])) return {};
  Tensor out = Tensor::empty(w.shape(), DType::bf16);
  uint16_t* dst = out.data<uint16_t>();
  for (int64_t i = 0; i < n; ++i) dst[i] = uint16_t(f32_to_bits(src[i]) >> 16);
  return out;
}

// The BF16 copy of the weight v of parameter `name` (undefined when not exact). An MLP's
// gate_proj and up_proj lying stacked in `weights` (model::ParamStore::stack) get one copy of
// the pair, so that the MLP still runs them as one GEMM (Tensor::join0): the gate half is
// returned, the up half kept in `pending` under up_proj's name.
Tensor bf16_copy(const model::ParamStore& weights, const std::string& name, const Tensor& v,
                 std::unordered_map<std::string, Tensor>& pending) {
  const std::string_view gate = "gate_proj.weight";
  if (name.size() > gate.size() &&
      name.compare(name.size() - gate.size(), gate.size(), gate) == 0) {
    const std::string up = name.substr(0, name.size() - gate.size()) + "up_proj.weight";
    const model::Param* u = weights.find(up);
    const Tensor h = u ? exact_bf16(v.join0(u->value)) : Tensor();
    if (h.defined()) {
      pending[up] = h.slice0(v.size(0), h.size(0));
      return h.slice0(0, v.size(0));
    }
  }
  return exact_bf16(v);
}

}  // namespace

struct Engine::LayerCache {
  Tensor ckv;   // (S, L, R) normalised KV latents
  Tensor kpe;   // (S, L, Dr) rotated rope keys
  Tensor wuk;   // (H, Dn, R) W^UK per head (absorbed into the queries)
  Tensor wuv;   // (H, Dv, R) W^UV per head (applied to the latent output)
};

struct Engine::Rows {
  int64_t N = 0;
  Tensor pos;         // (N) i32 absolute positions
  Tensor slot;        // (N) i32 cache slot of each row
  Tensor vis;         // (N) i32 visible keys = pos + 1 (causal within the chunk)
  Tensor cache_row;   // (N) i32 row slot * L + pos of the flattened (S*L, .) cache
};

Engine::Engine(const model::ModelArgs& args, const model::ParamStore& weights, ops::Context ctx,
               EngineOptions opts)
    : args_(args), ctx_(ctx), opts_(opts) {
  model::validate(args_, "engine");
  if (opts_.capacity <= 0) opts_.capacity = args_.max_seq_len;
  DS_CHECK_AS(UsageError, opts_.slots >= 1, "engine: slots must be >= 1 (got {})", opts_.slots);
  DS_CHECK_AS(UsageError, opts_.kv_cache == DType::f32 || opts_.kv_cache == DType::bf16,
              "engine: the KV cache must be F32 or BF16 (got {})", dtype_name(opts_.kv_cache));
  // the tensor-core decode over a BF16 cache takes 16-wide fragments of the latent and rope key
  DS_CHECK_AS(UsageError,
              ctx_.device != Device::cuda || opts_.kv_cache != DType::bf16 ||
                  (args_.kv_lora_rank % 16 == 0 && args_.qk_rope_head_dim % 16 == 0),
              "--kv-cache bf16 on cuda needs kv_lora_rank ({}) and qk_rope_head_dim ({}) to be "
              "multiples of 16; use --kv-cache f32", args_.kv_lora_rank, args_.qk_rope_head_dim);
  store_.set_device(ctx_.device);   // its buffers (router biases) beside the ops
  store_.set_allocate(false);
  embed_ = model::Embedding(store_, args_);
  layers_.reserve(size_t(args_.n_layers));
  for (int64_t l = 0; l < args_.n_layers; ++l)
    layers_.emplace_back(store_, args_, fmt::format("model.layers.{}.", l), int(l),
                         args_.is_moe_layer(l));
  norm_ = model::RMSNorm(store_, "model.norm.weight", args_.dim, args_.norm_eps, -1);
  head_ = model::Linear(store_, "lm_head.weight", args_.vocab_size, args_.dim, args_.init_std,
                        false, -1);
  for (int64_t k = 1; k <= args_.n_mtp_layers; ++k) mtp_.emplace_back(store_, args_, int(k));
  std::unordered_map<std::string, Tensor> pending;   // up_proj halves of stacked BF16 copies
  for (model::Param& p : store_.params()) {   // share the weights' tensors
    const model::Param* src = weights.find(p.info.name);
    DS_CHECK_AS(FormatError, src && src->value.defined(), "engine: the weights lack tensor {}",
                p.info.name);
    DS_CHECK_AS(FormatError, src->value.shape() == p.info.shape,
                "engine: tensor {} has shape {}, expected {}", p.info.name,
                shape_str(src->value.shape()), shape_str(p.info.shape));
    p.value = src->value;
    if (opts_.bf16_weights && ctx_.device == Device::cpu && linear_only(p.info.name)) {
      auto half = pending.find(p.info.name);
      Tensor h = half != pending.end() ? half->second
                                       : bf16_copy(weights, p.info.name, p.value, pending);
      if (h.defined()) {
        p.value = std::move(h);
        ++bf16_count_;
      }
    }
  }
  for (auto& entry : store_.buffers()) {
    const std::string& name = entry.first;   // clang 14 lambdas cannot capture bindings
    Tensor& buf = entry.second;
    const auto& wb = weights.buffers();
    auto it = std::find_if(wb.begin(), wb.end(), [&](const auto& e) { return e.first == name; });
    DS_CHECK_AS(FormatError, it != wb.end(), "engine: the weights lack buffer {}", name);
    buf.copy_from(it->second);
  }
  freqs_ = model::rope_freqs_tensor(ctx_, args_);
  const int64_t S = opts_.slots, L = opts_.capacity, H = args_.n_heads, R = args_.kv_lora_rank;
  const int64_t Dn = args_.qk_nope_head_dim, Dr = args_.qk_rope_head_dim, Dv = args_.v_head_dim;
  auto make_cache = [&](const model::MLA& m) {
    LayerCache c;
    c.ckv = Tensor::zeros({S, L, R}, opts_.kv_cache, ctx_.device);
    c.kpe = Tensor::zeros({S, L, Dr}, opts_.kv_cache, ctx_.device);
    c.wuk = empty_f32(ctx_, {H, 1, Dn * R});
    c.wuv = empty_f32(ctx_, {H, 1, Dv * R});
    // wkv_b rows per head: [W^UK_h (Dn rows) | W^UV_h (Dv rows)], each row R wide
    ops::split_last(ctx_, m.wkv_b.w->value.view({H, 1, (Dn + Dv) * R}), c.wuk, c.wuv);
    c.wuk = c.wuk.view({H, Dn, R});
    c.wuv = c.wuv.view({H, Dv, R});
    cache_.push_back(std::move(c));
  };
  for (const model::Block& b : layers_) make_cache(b.attn);
  for (const model::MTPModule& m : mtp_) make_cache(m.block.attn);
  len_.assign(size_t(S), 0);
  mtp_len_.assign(size_t(S), 0);
  tok_.assign(size_t(S), {});
}

Engine::~Engine() = default;

int64_t Engine::length(int slot) const { return len_.at(size_t(slot)); }
int64_t Engine::mtp_length(int slot) const { return mtp_len_.at(size_t(slot)); }
std::span<const int32_t> Engine::tokens(int slot) const { return tok_.at(size_t(slot)); }
void Engine::reset(int slot) { truncate(slot, 0); }
void Engine::truncate(int slot, int64_t len) {
  DS_CHECK(slot >= 0 && slot < opts_.slots && len >= 0, "engine: bad truncate({}, {})", slot, len);
  len_[size_t(slot)] = std::min(len_[size_t(slot)], len);
  mtp_len_[size_t(slot)] = std::min(mtp_len_[size_t(slot)], len);
  tok_[size_t(slot)].resize(size_t(len_[size_t(slot)]));
}

void Engine::copy_slot(int from, int to) {
  DS_CHECK(from >= 0 && from < opts_.slots && to >= 0 && to < opts_.slots,
           "engine: bad copy_slot({}, {})", from, to);
  if (from == to) return;
  const size_t f = size_t(from), t = size_t(to);
  const size_t n_main = layers_.size();
  for (size_t l = 0; l < cache_.size(); ++l) {   // main layers, then the MTP layers
    const int64_t n = l < n_main ? len_[f] : mtp_len_[f];
    if (n == 0) continue;
    LayerCache& c = cache_[l];
    for (Tensor* x : {&c.ckv, &c.kpe}) {          // (S, L, .): a slot's rows are contiguous
      const Tensor src = x->slice0(from, from + 1).view({opts_.capacity, -1}).slice0(0, n);
      x->slice0(to, to + 1).view({opts_.capacity, -1}).slice0(0, n).copy_from(src);
    }
  }
  len_[t] = len_[f];
  mtp_len_[t] = mtp_len_[f];
  tok_[t] = tok_[f];
}

int64_t Engine::cache_bytes_per_token() const {
  return int64_t(dtype_size(opts_.kv_cache)) * (args_.kv_lora_rank + args_.qk_rope_head_dim) *
         int64_t(cache_.size());
}
int64_t Engine::naive_cache_bytes_per_token() const {
  return int64_t(sizeof(float)) * args_.n_heads *
         (args_.qk_nope_head_dim + args_.qk_rope_head_dim + args_.v_head_dim) *
         int64_t(cache_.size());
}

int64_t Engine::cache_bytes_allocated() const {
  int64_t n = 0;
  for (const LayerCache& c : cache_) n += int64_t(c.ckv.nbytes() + c.kpe.nbytes());
  return n;
}

Engine::Rows Engine::make_rows(const std::vector<int>& slots, const std::vector<int64_t>& counts,
                               const std::vector<int64_t>& start) const {
  std::vector<int32_t> pos, slot, vis, crow;
  std::set<int> seen;
  for (size_t c = 0; c < slots.size(); ++c) {
    const int s = slots[c];
    DS_CHECK_AS(UsageError, s >= 0 && s < opts_.slots, "engine: slot {} outside [0, {})", s,
                opts_.slots);
    DS_CHECK_AS(UsageError, seen.insert(s).second, "engine: slot {} appears twice in one call", s);
    DS_CHECK_AS(UsageError, counts[c] >= 1, "engine: empty chunk for slot {}", s);
    DS_CHECK_AS(UsageError, start[c] + counts[c] <= opts_.capacity,
                "engine: sequence of {} tokens exceeds the cache capacity {}",
                start[c] + counts[c], opts_.capacity);
    for (int64_t i = 0; i < counts[c]; ++i) {
      const int64_t p = start[c] + i;
      pos.push_back(int32_t(p));
      slot.push_back(s);
      vis.push_back(int32_t(p + 1));
      crow.push_back(int32_t(int64_t(s) * opts_.capacity + p));
    }
  }
  Rows r;
  r.N = int64_t(pos.size());
  r.pos = upload_i32(ctx_, pos);
  r.slot = upload_i32(ctx_, slot);
  r.vis = upload_i32(ctx_, vis);
  r.cache_row = upload_i32(ctx_, crow);
  return r;
}

// Absorbed MLA over xn (N, C): writes the new latents / rope keys into the cache, attends in
// latent space, returns the o_proj output (N, C).
Tensor Engine::mla_forward(const model::MLA& m, size_t layer, const Rows& rows,
                           const Tensor& xn) const {
  const int64_t N = rows.N, H = m.H, R = m.R, Dn = m.Dn, Dr = m.Dr, Dv = m.Dv;
  const LayerCache& c = cache_[layer];
  Tensor qraw;                                              // (N, H*(Dn+Dr))
  if (m.Q > 0) {
    Tensor qa, cq, rstd;                                    // (N, Q), (N, Q), (N)
    m.wq_a.forward(ctx_, xn, qa);
    m.q_norm.forward(ctx_, qa, cq, rstd);
    m.wq_b.forward(ctx_, cq, qraw);
  } else {
    m.wq.forward(ctx_, xn, qraw);
  }
  Tensor q_nope = empty_f32(ctx_, {N, H, Dn}), q_pe = empty_f32(ctx_, {N, H, Dr});
  ops::split_last(ctx_, qraw.view({N, H, Dn + Dr}), q_nope, q_pe);
  Tensor q_rot = empty_f32(ctx_, {N, H, Dr});
  ops::rope_forward(ctx_, q_pe, rows.pos, freqs_, q_rot);
  Tensor kva;                                               // (N, R+Dr)
  m.wkv_a.forward(ctx_, xn, kva);
  Tensor ckv_raw = empty_f32(ctx_, {N, 1, R}), k_pe = empty_f32(ctx_, {N, 1, Dr});
  ops::split_last(ctx_, kva.view({N, 1, R + Dr}), ckv_raw, k_pe);
  Tensor k_rot = empty_f32(ctx_, {N, 1, Dr});
  ops::rope_forward(ctx_, k_pe, rows.pos, freqs_, k_rot);
  Tensor ckv, kv_rstd;                                      // (N, R), (N)
  m.kv_norm.forward(ctx_, ckv_raw.view({N, R}), ckv, kv_rstd);
  Tensor cache_c = c.ckv.view({-1, R}), cache_k = c.kpe.view({-1, Dr});   // (S*L, .)
  ops::set_rows(ctx_, ckv, rows.cache_row, cache_c);
  ops::set_rows(ctx_, k_rot.view({N, Dr}), rows.cache_row, cache_k);
  Tensor q_lat = empty_f32(ctx_, {N, H, R});                // q_hat_h = W^UK_h^T q_nope_h
  ops::head_matmul(ctx_, q_nope, c.wuk, false, q_lat);
  Tensor lat = empty_f32(ctx_, {N, H, R});                  // sum_j p_hj c_j
  ops::mla_latent_attention(ctx_, q_lat, q_rot, c.ckv, c.kpe, rows.slot, rows.vis,
                            m.softmax_scale, lat);
  Tensor o = empty_f32(ctx_, {N, H, Dv});                   // o_h = W^UV_h latent_h
  ops::head_matmul(ctx_, lat, c.wuv, true, o);
  Tensor out;                                               // (N, C)
  m.wo.forward(ctx_, o.view({N, H * Dv}), out);
  return out;
}

// x (N, C) <- block(x): pre-norm residual attention and FFN (dense or MoE).
void Engine::block_forward(const model::Block& b, size_t layer, const Rows& rows, Tensor& x) const {
  const int64_t N = rows.N;
  Tensor xn, rstd;                                          // (N, C), (N)
  b.attn_norm.forward(ctx_, x, xn, rstd);
  const Tensor a = mla_forward(b.attn, layer, rows, xn);
  Tensor h, u, rstd2, y;                                    // (N, C), (N, C), (N), (N, C)
  b.ffn_norm.forward_add(ctx_, x, a, h, u, rstd2);          // h = x + a; u = ffn_norm(h)
  if (b.moe) {
    model::MoESaved s;
    b.moe->forward(ctx_, u, 1, N, model::MoEOptions{}, y, s);
  } else {
    model::MLPSaved s;
    b.mlp->forward(ctx_, u, y, s);
  }
  Tensor out = empty_f32(ctx_, x.shape());
  ops::add(ctx_, h, y, out);
  x = out;
}

StepOutput Engine::forward(const std::vector<SeqChunk>& chunks) {
  std::vector<int> slots;
  std::vector<int64_t> counts, start;
  std::vector<int32_t> ids;
  for (const SeqChunk& ch : chunks) {
    DS_CHECK_AS(UsageError, ch.slot >= 0 && ch.slot < opts_.slots,
                "engine: slot {} outside [0, {})", ch.slot, opts_.slots);
    slots.push_back(ch.slot);
    counts.push_back(int64_t(ch.tokens.size()));
    start.push_back(len_[size_t(ch.slot)]);
    for (int32_t t : ch.tokens) {
      DS_CHECK_AS(UsageError, t >= 0 && t < args_.vocab_size,
                  "engine: token id {} outside the vocabulary [0, {})", t, args_.vocab_size);
      ids.push_back(t);
    }
  }
  DS_CHECK_AS(UsageError, !chunks.empty(), "engine: forward with no sequences");
  const Rows rows = make_rows(slots, counts, start);
  Tensor x;                                                 // (N, C)
  embed_.forward(ctx_, upload_i32(ctx_, ids), x);
  for (size_t l = 0; l < layers_.size(); ++l) block_forward(layers_[l], l, rows, x);
  StepOutput out;
  Tensor rstd;
  norm_.forward(ctx_, x, out.hidden, rstd);                 // (N, C) post-final-norm hidden
  std::vector<int32_t> sel;
  out.hidden_row.push_back(0);
  out.logit_row.push_back(0);
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t r0 = out.hidden_row.back(), r1 = r0 + counts[c];
    for (int64_t r = chunks[c].all_logits ? r0 : r1 - 1; r < r1; ++r) sel.push_back(int32_t(r));
    out.hidden_row.push_back(r1);
    out.logit_row.push_back(int64_t(sel.size()));
    len_[size_t(slots[c])] += counts[c];
    tok_[size_t(slots[c])].insert(tok_[size_t(slots[c])].end(), chunks[c].tokens.begin(),
                                  chunks[c].tokens.end());
  }
  Tensor g = empty_f32(ctx_, {int64_t(sel.size()), args_.dim});   // (M, C)
  ops::gather_rows(ctx_, out.hidden, upload_i32(ctx_, sel), g);
  head_.forward(ctx_, g, out.logits);                       // (M, V)
  out.logits = to_host(out.logits);                         // the sampler reads them
  return out;
}

Tensor Engine::mtp_forward(const std::vector<MtpChunk>& chunks) {
  DS_CHECK_AS(UsageError, !mtp_.empty(),
              "speculative decoding needs an MTP module (num_nextn_predict_layers = 0)");
  DS_CHECK_AS(UsageError, !chunks.empty(), "engine: mtp_forward with no sequences");
  const model::MTPModule& m = mtp_[0];
  const int64_t C = args_.dim;
  std::vector<int> slots;
  std::vector<int64_t> counts, start;
  std::vector<int32_t> ids, last;
  int64_t N = 0;
  for (const MtpChunk& ch : chunks) {
    DS_CHECK_AS(UsageError, ch.slot >= 0 && ch.slot < opts_.slots,
                "engine: slot {} outside [0, {})", ch.slot, opts_.slots);
    DS_CHECK_SHAPE(ch.hidden, {int64_t(ch.tokens.size()), C});
    slots.push_back(ch.slot);
    counts.push_back(int64_t(ch.tokens.size()));
    start.push_back(mtp_len_[size_t(ch.slot)]);
    ids.insert(ids.end(), ch.tokens.begin(), ch.tokens.end());
    N += int64_t(ch.tokens.size());
    last.push_back(int32_t(N - 1));
  }
  const Rows rows = make_rows(slots, counts, start);
  Tensor hid = empty_f32(ctx_, {N, C});                     // (N, C) main hidden rows
  for (size_t c = 0, r = 0; c < chunks.size(); r += size_t(counts[c]), ++c)
    hid.slice0(int64_t(r), int64_t(r) + counts[c]).copy_from(chunks[c].hidden);
  Tensor e, en, hn, r1, r2;                                 // (N, C) x3, (N) x2
  embed_.forward(ctx_, upload_i32(ctx_, ids), e);
  m.enorm.forward(ctx_, e, en, r1);
  m.hnorm.forward(ctx_, hid, hn, r2);
  Tensor cat = empty_f32(ctx_, {N, 1, 2 * C});              // [enorm(emb) ; hnorm(h)]
  ops::concat_last(ctx_, en.view({N, 1, C}), hn.view({N, 1, C}), cat);
  Tensor x;                                                 // (N, C)
  m.eh_proj.forward(ctx_, cat.view({N, 2 * C}), x);
  block_forward(m.block, layers_.size(), rows, x);
  Tensor g, rstd;                                           // (N, C), (N)
  m.norm.forward(ctx_, x, g, rstd);
  Tensor gl = empty_f32(ctx_, {int64_t(last.size()), C});
  ops::gather_rows(ctx_, g, upload_i32(ctx_, last), gl);
  Tensor logits;                                            // (chunks, V)
  head_.forward(ctx_, gl, logits);
  for (size_t c = 0; c < chunks.size(); ++c) mtp_len_[size_t(slots[c])] += counts[c];
  return to_host(logits);
}

}  // namespace ds::infer
