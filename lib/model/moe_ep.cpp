// Expert parallelism inside the MoE layer (see moe.hpp): the routed part of forward and
// backward when the E experts are spread over the R ranks of the ep group, E/R each.
// Forward: the origin rank gathers u[tok] for its (token, expert) pairs, already grouped by
// expert so that the pairs for rank j's experts are contiguous, and sends them with one
// all_to_all_v (dispatch); the expert rank runs each local expert on its rows from all sources
// and sends the unweighted outputs back with the reverse all_to_all_v (combine); the origin
// scatter-adds w * y as the single-rank path does. Backward mirrors it: the origin computes
// dw = <dy[tok], y> locally and dispatches w * dy[tok]; the expert ranks run the expert
// backward (their weight grads see every rank's rows) and combine du back to the origin.
// reference: DeepSeek-V3 paper §3.2.2 (dispatch/combine all-to-all); spec §4.5; DeepEP's
// dispatch/combine interface (without its NVLink/RDMA forwarding).
#include "ds/core/error.hpp"
#include "ds/model/moe.hpp"
#include "model_util.hpp"

namespace ds::model {

using detail::empty_f32;

namespace {

// One all_to_all_v of C-wide F32 rows: send_rows[j] rows of `send` (rank order) go to rank j,
// recv_rows[j] rows from rank j land in `recv` (rank order). Returns the bytes sent to ranks
// other than this one (the copy to itself stays local).
int64_t exchange_rows(dist::Comm& comm, const Tensor& send, const std::vector<int64_t>& send_rows,
                      Tensor& recv, const std::vector<int64_t>& recv_rows, int64_t C) {
  const int R = comm.size(), me = comm.rank();
  std::vector<int64_t> sc(static_cast<size_t>(R)), rc(static_cast<size_t>(R));
  int64_t remote = 0;
  for (int j = 0; j < R; ++j) {
    sc[size_t(j)] = send_rows[size_t(j)] * C;
    rc[size_t(j)] = recv_rows[size_t(j)] * C;
    if (j != me) remote += sc[size_t(j)];
  }
  comm.all_to_all_v(send.raw(), sc, recv.raw(), rc, DType::f32);
  return remote * int64_t(sizeof(float));
}

}  // namespace

// Who sends how many rows to whom, and the permutation between the received order and the
// expert-major order the local experts run in (moe.hpp MoEDispatch). One collective: the
// per-expert counts, E/R i64 per destination.
void MoE::dispatch_plan(const ops::Context& ctx, MoESaved& s) const {
  dist::Comm& comm = *ep.comm;
  const int R = comm.size();
  const int64_t El = E / R;
  MoEDispatch& d = s.ep;
  d.send_rows.assign(size_t(R), 0);
  for (int j = 0; j < R; ++j)
    d.send_rows[size_t(j)] = s.offsets[size_t((j + 1) * El)] - s.offsets[size_t(j * El)];
  // s.counts is already in destination order: rank j's experts are [j*El, (j+1)*El). The
  // exchange goes through ctx.device memory (a NCCL communicator takes device pointers only).
  std::vector<int64_t> send_counts(s.counts.begin(), s.counts.end());   // (E)
  std::vector<int64_t> recv_counts(size_t(R * El));   // (R, El): rows from src for expert l
  const std::vector<int64_t> per_rank(size_t(R), El);
  Tensor send_t = Tensor::empty({E}, DType::i64, ctx.device);
  Tensor recv_t = Tensor::empty({R * El}, DType::i64, ctx.device);
  send_t.copy_from(Tensor::borrow(send_counts.data(), {E}, DType::i64));
  comm.all_to_all_v(send_t.raw(), per_rank, recv_t.raw(), per_rank, DType::i64);
  Tensor::borrow(recv_counts.data(), {R * El}, DType::i64).copy_from(recv_t);

  // Received order is (src, l, row); expert-major order is (l, src, row).
  std::vector<int64_t> src_base(size_t(R) + 1, 0);      // first received row from each source
  std::vector<int64_t> within(size_t(R * El), 0);       // offset of (src, l) inside src's block
  d.recv_rows.assign(size_t(R), 0);
  for (int src = 0; src < R; ++src) {
    for (int64_t l = 0; l < El; ++l) {
      within[size_t(src * El + l)] = d.recv_rows[size_t(src)];
      d.recv_rows[size_t(src)] += recv_counts[size_t(src * El + l)];
    }
    src_base[size_t(src + 1)] = src_base[size_t(src)] + d.recv_rows[size_t(src)];
  }
  const int64_t Mr = src_base[size_t(R)];
  std::vector<int32_t> to_expert(static_cast<size_t>(Mr)), to_source(static_cast<size_t>(Mr));
  d.expert_offsets.assign(size_t(El + 1), 0);
  int64_t q = 0;                                        // expert-major row
  for (int64_t l = 0; l < El; ++l) {
    for (int src = 0; src < R; ++src) {
      const int64_t first = src_base[size_t(src)] + within[size_t(src * El + l)];
      for (int64_t i = 0; i < recv_counts[size_t(src * El + l)]; ++i, ++q) {
        to_expert[size_t(q)] = int32_t(first + i);
        to_source[size_t(first + i)] = int32_t(q);
      }
    }
    d.expert_offsets[size_t(l + 1)] = q;
  }
  d.to_expert = detail::upload_i32(ctx, to_expert, {Mr});
  d.to_source = detail::upload_i32(ctx, to_source, {Mr});
}

void MoE::routed_forward_ep(const ops::Context& ctx, const Tensor& u, bool train, Tensor& y,
                            MoESaved& s) const {
  dist::Comm& comm = *ep.comm;
  const int64_t NK = s.pair_tok.numel(), El = int64_t(experts.size());
  dispatch_plan(ctx, s);
  MoEDispatch& d = s.ep;
  const int64_t Mr = d.to_expert.numel();

  Tensor xs = empty_f32(ctx, {NK, C});                  // (N*K, C) u[tok], pair order
  if (NK > 0) ops::gather_rows(ctx, u, s.pair_tok, xs);
  Tensor xr = empty_f32(ctx, {Mr, C});                  // (Mr, C) received order
  int64_t bytes = exchange_rows(comm, xs, d.send_rows, xr, d.recv_rows, C);   // dispatch
  xs = Tensor();
  Tensor xe = empty_f32(ctx, {Mr, C}), ye = empty_f32(ctx, {Mr, C});   // (Mr, C) expert-major
  if (Mr > 0) ops::gather_rows(ctx, xr, d.to_expert, xe);
  xr = Tensor();
  s.experts.assign(size_t(El), ExpertSaved{});
  for (int64_t l = 0; l < El; ++l) {
    const int64_t b = d.expert_offsets[size_t(l)], M = d.expert_offsets[size_t(l + 1)] - b;
    if (M == 0) continue;
    Tensor yl = ye.slice0(b, b + M);                    // written in place
    experts[size_t(l)].forward(ctx, xe.slice0(b, b + M), yl, s.experts[size_t(l)].mlp);
    if (!train) s.experts[size_t(l)] = ExpertSaved{};
  }
  Tensor yr = empty_f32(ctx, {Mr, C});                  // (Mr, C) back in received order
  if (Mr > 0) ops::gather_rows(ctx, ye, d.to_source, yr);
  ye = Tensor();
  d.y_pairs = empty_f32(ctx, {NK, C});
  bytes += exchange_rows(comm, yr, d.recv_rows, d.y_pairs, d.send_rows, C);   // combine
  // Pairs are in the single-rank path's expert order, so the sums into y run in the same order.
  if (NK > 0) ops::scatter_add_rows(ctx, d.y_pairs, s.pair_tok, s.pair_w, y);
  s.a2a_bytes_sent += bytes;
  a2a_bytes_total += bytes;
  if (!train) s.ep = MoEDispatch{};
}

void MoE::routed_backward_ep(const ops::Context& ctx, MoESaved& s, const Tensor& dy, Tensor& du,
                             Tensor& dpair_w) const {
  dist::Comm& comm = *ep.comm;
  const int64_t NK = s.pair_tok.numel(), El = int64_t(experts.size());
  MoEDispatch& d = s.ep;
  DS_CHECK(d.send_rows.size() == size_t(comm.size()) && d.y_pairs.defined(),
           "MoE::backward with expert parallelism needs a training forward (opt.train)");
  const int64_t Mr = d.to_expert.numel();

  Tensor dys = empty_f32(ctx, {NK, C});                 // (N*K, C) w * dy[tok], pair order
  if (NK > 0) {
    ops::gather_rows_dot(ctx, dy, s.pair_tok, d.y_pairs, dpair_w);   // <dy[tok], y>
    ops::gather_rows_scaled(ctx, dy, s.pair_tok, s.pair_w, dys);
  }
  d.y_pairs = Tensor();
  Tensor dyr = empty_f32(ctx, {Mr, C});                 // (Mr, C) received order
  int64_t bytes = exchange_rows(comm, dys, d.send_rows, dyr, d.recv_rows, C);   // dispatch
  dys = Tensor();
  Tensor dye = empty_f32(ctx, {Mr, C}), due = empty_f32(ctx, {Mr, C});   // expert-major
  if (Mr > 0) ops::gather_rows(ctx, dyr, d.to_expert, dye);
  for (int64_t l = 0; l < El; ++l) {
    const int64_t b = d.expert_offsets[size_t(l)], M = d.expert_offsets[size_t(l + 1)] - b;
    if (M == 0) continue;
    Tensor dul = due.slice0(b, b + M);                  // written in place
    experts[size_t(l)].backward(ctx, s.experts[size_t(l)].mlp, dye.slice0(b, b + M), dul);
    s.experts[size_t(l)] = ExpertSaved{};
  }
  Tensor dur = dyr;                                     // reuse: (Mr, C) back in received order
  if (Mr > 0) ops::gather_rows(ctx, due, d.to_source, dur);
  Tensor dup = empty_f32(ctx, {NK, C});                 // (N*K, C) du of each pair
  bytes += exchange_rows(comm, dur, d.recv_rows, dup, d.send_rows, C);   // combine
  if (NK > 0) ops::scatter_add_rows(ctx, dup, s.pair_tok, Tensor(), du);
  s.a2a_bytes_sent += bytes;
  a2a_bytes_total += bytes;
  s.ep = MoEDispatch{};
}

}  // namespace ds::model
