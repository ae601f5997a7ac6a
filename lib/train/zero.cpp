// ZeRO-1 sharded AdamW (see include/ds/train/zero.hpp).
// reference: Rajbhandari et al., "ZeRO" (2020) stage 1; lib/train/optimizer.cpp (AdamW::step).
#include "ds/train/zero.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ds/core/error.hpp"

namespace ds::train {

namespace {

// Tags of the point-to-point moment transfers in gather_state (distinct per moment so a
// backend that matches on (peer, tag) can never pair an exp_avg with an exp_avg_sq).
constexpr int kTagExpAvg = 0x5a01, kTagExpAvgSq = 0x5a02;

// A 1-D view of a contiguous F32 or BF16 tensor's elements [begin, begin + n).
Tensor flat_slice(const Tensor& t, int64_t begin, int64_t n) {
  return t.view({t.numel()}).slice0(begin, begin + n);
}

}  // namespace

ShardedAdamW::ShardedAdamW(model::ParamStore& params, const OptimizerOptions& opts,
                           dist::Comm& dp, dist::Comm& edp, std::set<std::string> copies)
    : params_(params), opts_(opts), copies_(std::move(copies)) {
  for (const std::string& c : copies_)
    DS_CHECK(params_.find(c) != nullptr, "ShardedAdamW: copy {} is not a parameter of this rank",
             c);
  groups_[0].name = "dp";
  groups_[0].comm = &dp;
  groups_[1].name = "edp";
  groups_[1].comm = &edp;
  for (model::Param& p : params_.params()) {
    // The chunks are copied with memcpy and reduced by the host communicator.
    DS_CHECK(p.value.device() == Device::cpu, "ShardedAdamW: {} is not in host memory (CPU only)",
             p.info.name);
    Group& g = groups_[p.info.expert >= 0 ? 1 : 0];
    g.members.push_back(&p);
    g.offsets.push_back(g.total);
    g.total += shape_numel(p.info.shape);
  }
  build(groups_[0]);
  build(groups_[1]);
}

void ShardedAdamW::build(Group& g) {
  const int n = g.comm->size(), r = g.comm->rank();
  if (n > 1) {
    // Every rank of a group must flatten the same parameters, or the chunks would mean
    // different elements on different ranks and the reduction would silently mix them.
    int64_t mine[2] = {g.total, int64_t(g.members.size())};
    std::vector<int64_t> all(size_t(2 * n));
    g.comm->all_gather(mine, all.data(), 2, DType::i64);
    for (int k = 0; k < n; ++k)
      if (all[size_t(2 * k)] != mine[0] || all[size_t(2 * k + 1)] != mine[1])
        DS_THROW(InternalError,
                 "ShardedAdamW: {} group rank {} holds {} parameters ({} elements) but rank {} "
                 "holds {} ({}); the ranks of a group must hold the same parameters",
                 g.name, r, mine[1], mine[0], k, all[size_t(2 * k + 1)], all[size_t(2 * k)]);
  }
  g.chunk = (g.total + n - 1) / n;
  const DType mt = opts_.bf16_moments ? DType::bf16 : DType::f32;
  g.grad = Tensor::zeros({g.chunk}, DType::f32);
  g.m = Tensor::zeros({g.chunk}, mt);
  g.v = Tensor::zeros({g.chunk}, mt);
  const int64_t lo = r * g.chunk, hi = std::min(g.total, lo + g.chunk);
  g.owned = std::max<int64_t>(0, hi - lo);
  for (size_t i = 0; i < g.members.size(); ++i) {
    const int64_t b = g.offsets[i], e = b + shape_numel(g.members[i]->info.shape);
    const int64_t s = std::max(b, lo), t = std::min(e, hi);
    if (s < t) g.segs.push_back({g.members[i], s - b, s - lo, t - s});
  }
}

bool ShardedAdamW::writes(const model::Param& p) const {
  const Group& g = groups_[p.info.expert >= 0 ? 1 : 0];
  return g.comm->rank() == 0 && !is_copy(p.info.name);
}

void ShardedAdamW::reduce_gradients(const ops::Context& ctx) {
  (void)ctx;   // host copies and the communicator's reduction; no op runs here
  for (Group& g : groups_) {
    if (g.chunk == 0) continue;
    const int n = g.comm->size();
    // One rank: the flat vector is the chunk itself (no second copy of the gradients).
    Tensor flat = n == 1 ? g.grad : Tensor::empty({n * g.chunk}, DType::f32);
    float* f = flat.f32();
    for (size_t i = 0; i < g.members.size(); ++i) {
      const model::Param& p = *g.members[i];
      DS_CHECK(p.grad.defined() && p.grad.dtype() == DType::f32 &&
                   p.grad.numel() == shape_numel(p.info.shape),
               "ShardedAdamW: gradient of {} is not allocated", p.info.name);
      std::memcpy(f + g.offsets[i], p.grad.raw(), p.grad.nbytes());
    }
    std::memset(f + g.total, 0, size_t(n * g.chunk - g.total) * sizeof(float));
    if (n > 1) g.comm->reduce_scatter_sum(f, g.grad.raw(), g.chunk, DType::f32);
  }
  reduced_ = true;
}

GradStats ShardedAdamW::grad_stats(const ops::Context& ctx, dist::Comm& world) const {
  DS_CHECK(reduced_, "ShardedAdamW::grad_stats before reduce_gradients");
  double acc[2] = {0.0, 0.0};   // sum of squares, non-finite count (exact in double up to 2^53)
  for (const Group& g : groups_) {
    for (const Segment& s : g.segs) {
      if (is_copy(s.param->info.name)) continue;   // counted once, with the original
      const Tensor gv = flat_slice(g.grad, s.chunk_offset, s.length);
      const double q = ops::sum_squares(ctx, gv);
      acc[0] += q;
      // squares summed in double cannot overflow: a finite sum means every element is finite
      if (!std::isfinite(q)) acc[1] += double(ops::count_nonfinite(ctx, gv));
    }
  }
  world.all_reduce_sum_f64(acc, 2);
  GradStats st;
  st.norm = std::sqrt(acc[0]);
  st.nonfinite = int64_t(acc[1]);
  return st;
}

void ShardedAdamW::step(const ops::Context& ctx, float lr, const GradStats& stats) {
  DS_CHECK(reduced_, "ShardedAdamW::step before reduce_gradients");
  if (ctx.operands) ctx.operands->clear();   // the weights' cached operands go stale now
  ++step_;
  // The clipping factor of AdamW::step (torch.nn.utils.clip_grad_norm_), applied as each
  // gradient is read.
  float c = 1.0f;
  if (opts_.clip_norm > 0 && stats.norm > opts_.clip_norm)
    c = float(opts_.clip_norm / (stats.norm + 1e-6));
  for (Group& g : groups_) {
    if (g.chunk == 0) continue;
    const int n = g.comm->size();
    Tensor mine = Tensor::empty({g.chunk}, DType::f32);   // the owned parameter elements
    float* pc = mine.f32();
    for (const Segment& s : g.segs)
      std::memcpy(pc + s.chunk_offset, s.param->value.f32() + s.param_offset,
                  size_t(s.length) * sizeof(float));
    // Neighbouring segments are contiguous in the chunk: one adamw_step per run of equal
    // weight decay (the update is elementwise, so the split does not change any result).
    for (size_t a = 0; a < g.segs.size();) {
      const bool decay = g.segs[a].param->info.decay;
      size_t b = a + 1;
      while (b < g.segs.size() && g.segs[b].param->info.decay == decay) ++b;
      const int64_t off = g.segs[a].chunk_offset;
      const int64_t len = g.segs[b - 1].chunk_offset + g.segs[b - 1].length - off;
      ops::AdamWParams ap;
      ap.lr = lr;
      ap.beta1 = opts_.beta1;
      ap.beta2 = opts_.beta2;
      ap.eps = opts_.eps;
      ap.weight_decay = decay ? opts_.weight_decay : 0.0f;
      ap.step = step_;
      ap.grad_scale = c;
      Tensor pv = mine.slice0(off, off + len), gv = g.grad.slice0(off, off + len);
      Tensor mv = g.m.slice0(off, off + len), vv = g.v.slice0(off, off + len);
      ops::adamw_step(ctx, pv, gv, mv, vv, ap);
      a = b;
    }
    if (n == 1) {
      for (const Segment& s : g.segs)
        std::memcpy(s.param->value.f32() + s.param_offset, pc + s.chunk_offset,
                    size_t(s.length) * sizeof(float));
      continue;
    }
    Tensor full = Tensor::empty({n * g.chunk}, DType::f32);
    // The padding after the owned elements goes on the wire too: give it defined bytes.
    std::memset(pc + g.owned, 0, size_t(g.chunk - g.owned) * sizeof(float));
    g.comm->all_gather(pc, full.raw(), g.chunk, DType::f32);
    const float* f = full.f32();
    for (size_t i = 0; i < g.members.size(); ++i) {
      model::Param& p = *g.members[i];
      std::memcpy(p.value.raw(), f + g.offsets[i], p.value.nbytes());
    }
  }
}

void ShardedAdamW::gather_group(Group& g, Tensor& m_full, Tensor& v_full) {
  const int n = g.comm->size(), r = g.comm->rank();
  if (n == 1) {
    m_full = g.m;
    v_full = g.v;
    return;
  }
  // Chunks travel as bytes in pieces of at most 1 GiB (MPI counts are C ints); pieces with one
  // (source, tag) arrive in the order they were sent.
  const int64_t bytes = int64_t(g.m.nbytes()), piece = int64_t(1) << 30;
  std::vector<dist::Request> reqs;
  auto move = [&](bool send, uint8_t* m, uint8_t* v, int peer) {
    for (int64_t off = 0; off < bytes; off += piece) {
      const int64_t len = std::min(piece, bytes - off);
      if (send) {
        reqs.push_back(g.comm->isend(m + off, len, DType::u8, peer, kTagExpAvg));
        reqs.push_back(g.comm->isend(v + off, len, DType::u8, peer, kTagExpAvgSq));
      } else {
        reqs.push_back(g.comm->irecv(m + off, len, DType::u8, peer, kTagExpAvg));
        reqs.push_back(g.comm->irecv(v + off, len, DType::u8, peer, kTagExpAvgSq));
      }
    }
  };
  if (r != 0) {
    move(true, static_cast<uint8_t*>(g.m.raw()), static_cast<uint8_t*>(g.v.raw()), 0);
    for (auto& q : reqs) q.wait();
    return;
  }
  m_full = Tensor::empty({n * g.chunk}, g.m.dtype());
  v_full = Tensor::empty({n * g.chunk}, g.v.dtype());
  auto* mb = static_cast<uint8_t*>(m_full.raw());
  auto* vb = static_cast<uint8_t*>(v_full.raw());
  std::memcpy(mb, g.m.raw(), size_t(bytes));
  std::memcpy(vb, g.v.raw(), size_t(bytes));
  for (int k = 1; k < n; ++k) move(false, mb + k * bytes, vb + k * bytes, k);
  for (auto& q : reqs) q.wait();
}

std::vector<std::pair<std::string, Tensor>> ShardedAdamW::gather_state() {
  Tensor m_full[2], v_full[2];
  for (int k = 0; k < 2; ++k)
    if (groups_[k].chunk > 0) gather_group(groups_[k], m_full[k], v_full[k]);
    else m_full[k] = groups_[k].m, v_full[k] = groups_[k].v;   // empty (zero-sized members)
  std::vector<std::pair<std::string, Tensor>> out;
  size_t next[2] = {0, 0};   // members are in registration order: walk them in step
  for (const model::Param& p : params_.params()) {
    const int k = p.info.expert >= 0 ? 1 : 0;
    const int64_t off = groups_[k].offsets[next[k]++], len = shape_numel(p.info.shape);
    if (!writes(p)) continue;
    out.emplace_back(p.info.name + ".exp_avg", m_full[k].slice0(off, off + len).view(p.info.shape));
    out.emplace_back(p.info.name + ".exp_avg_sq",
                     v_full[k].slice0(off, off + len).view(p.info.shape));
  }
  return out;
}

void ShardedAdamW::load_state(const StateLookup& find) {
  std::vector<std::string> missing;
  for (Group& g : groups_) {
    if (g.chunk == 0) continue;
    g.m.zero_();
    g.v.zero_();
    for (const Segment& s : g.segs) {
      const model::Param& p = *s.param;
      for (int which = 0; which < 2; ++which) {
        const std::string name = p.info.name + (which ? ".exp_avg_sq" : ".exp_avg");
        const io::TensorView* t = find(name);
        if (!t) { missing.push_back(name); continue; }
        Tensor& dst = which ? g.v : g.m;
        if (t->shape == p.info.shape)
          check_moment_dtype("optimizer state", name, t->dtype, dst.dtype());
        if (t->dtype != dst.dtype() || t->shape != p.info.shape)
          DS_THROW(FormatError, "optimizer state: tensor {} is {} {}, expected {} {}", name,
                   dtype_name(t->dtype), shape_str(t->shape), dtype_name(dst.dtype()),
                   shape_str(p.info.shape));
        const size_t es = dtype_size(dst.dtype());
        std::memcpy(static_cast<uint8_t*>(dst.raw()) + size_t(s.chunk_offset) * es,
                    t->data + size_t(s.param_offset) * es, size_t(s.length) * es);
      }
    }
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 20; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 20) list += fmt::format(" (+{} more)", missing.size() - 20);
    DS_THROW(FormatError, "optimizer state: {} moment tensors missing: {}", missing.size(), list);
  }
}

}  // namespace ds::train
