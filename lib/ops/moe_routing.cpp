// Dispatch of the MoE layer's routing and token permutation ops (include/ds/ops/ops.hpp): the
// sigmoid group-limited router with its backward and the sequence-wise balance loss, the expert
// counts, and the row gathers / weighted scatters that move tokens into and out of the
// expert-sorted layout. Checks at the boundary, then the CUDA path or the CPU kernels.
#include <initializer_list>
#include <vector>

#include "cpu/opt.hpp"
#include "cpu/ref.hpp"
#include "dispatch.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"

namespace ds::ops {

using detail::check_devices;
using detail::check_indices;
using detail::nthreads;
using detail::Scope;
using detail::use_ref;
// ---- MoE routing ---------------------------------------------------------------------------
static void check_route_params(const RouteParams& p, int64_t E) {
  DS_CHECK(p.n_groups >= 1 && E % p.n_groups == 0,
           "moe_route: {} experts not divisible into {} groups", E, p.n_groups);
  DS_CHECK(p.topk_groups >= 1 && p.topk_groups <= p.n_groups,
           "moe_route: topk_groups {} outside [1, {}]", p.topk_groups, p.n_groups);
  DS_CHECK(p.topk >= 1 && p.topk <= p.topk_groups * (E / p.n_groups),
           "moe_route: topk {} outside [1, {}] (experts in the kept groups)", p.topk,
           p.topk_groups * (E / p.n_groups));
}

void moe_route(const Context& ctx, const Tensor& logits, const Tensor& bias, const RouteParams& p,
               Tensor& scores, Tensor& idx, Tensor& weights) {
  check_devices(ctx, "moe_route", {&logits, &bias, &scores, &idx, &weights});
  const Scope scope_(ctx, "moe_route", 0, {&logits, &bias, &scores, &idx, &weights});
  DS_CHECK_SHAPE(logits, {-1, -1});
  const int64_t N = logits.size(0), E = logits.size(1);
  check_route_params(p, E);
  if (bias.defined()) DS_CHECK_SHAPE(bias, {E});
  DS_CHECK_SHAPE(scores, {N, E});
  DS_CHECK_SHAPE(idx, {N, int64_t(p.topk)});
  DS_CHECK_SHAPE(weights, {N, int64_t(p.topk)});
  DS_CUDA_ROUTE(moe_route, (ctx, logits, bias, p, scores, idx, weights));
  const float* b = bias.defined() ? bias.f32() : nullptr;
  if (use_ref(ctx))
    ref::moe_route(logits.f32(), b, p, N, E, scores.f32(), idx.i32(), weights.f32());
  else
    opt::moe_route(logits.f32(), b, p, N, E, scores.f32(), idx.i32(), weights.f32(), nthreads(ctx));
}

void moe_route_backward(const Context& ctx, const Tensor& scores, const Tensor& idx,
                        const Tensor& dweights, const Tensor& dscores_extra, const RouteParams& p,
                        Tensor& dlogits) {
  check_devices(ctx, "moe_route_backward", {&scores, &idx, &dweights, &dscores_extra, &dlogits});
  const Scope scope_(ctx, "moe_route_backward", 0,
                     {&scores, &idx, &dweights, &dscores_extra, &dlogits});
  DS_CHECK_SHAPE(scores, {-1, -1});
  const int64_t N = scores.size(0), E = scores.size(1);
  DS_CHECK_SHAPE(idx, {N, int64_t(p.topk)});
  DS_CHECK_SHAPE(dweights, {N, int64_t(p.topk)});
  if (dscores_extra.defined()) DS_CHECK_SHAPE(dscores_extra, {N, E});
  DS_CHECK_SHAPE(dlogits, {N, E});
  check_indices(idx, 0, E, "moe_route_backward idx");
  DS_CUDA_ROUTE(moe_route_backward, (ctx, scores, idx, dweights, dscores_extra, p, dlogits));
  const float* extra = dscores_extra.defined() ? dscores_extra.f32() : nullptr;
  if (use_ref(ctx))
    ref::moe_route_backward(scores.f32(), idx.i32(), dweights.f32(), extra, p, N, E, dlogits.f32());
  else
    opt::moe_route_backward(scores.f32(), idx.i32(), dweights.f32(), extra, p, N, E,
                            dlogits.f32(), nthreads(ctx));
}

// O(N*E) and run once per layer: one implementation serves both impls.
double moe_balance_loss(const Context& ctx, const Tensor& scores, const Tensor& idx, int n_seq,
                        int seq_len, float alpha, Tensor& dscores,
                        std::span<const int32_t> lengths) {
  check_devices(ctx, "moe_balance_loss", {&scores, &idx, &dscores});
  const Scope scope_(ctx, "moe_balance_loss", 0, {&scores, &idx, &dscores});
  DS_CHECK(n_seq >= 1 && seq_len >= 1, "moe_balance_loss: n_seq {} seq_len {}", n_seq, seq_len);
  DS_CHECK_SHAPE(scores, {int64_t(n_seq) * seq_len, -1});
  DS_CHECK_SHAPE(idx, {int64_t(n_seq) * seq_len, -1});
  const int64_t E = scores.size(1), K = idx.size(1);
  check_indices(idx, 0, E, "moe_balance_loss idx");
  if (dscores.defined()) DS_CHECK_SHAPE(dscores, scores.shape());
  DS_CHECK(lengths.empty() || int64_t(lengths.size()) == n_seq,
           "moe_balance_loss: {} lengths for {} sequences", lengths.size(), n_seq);
  for (const int32_t L : lengths)
    DS_CHECK(L >= 0 && L <= seq_len, "moe_balance_loss: length {} outside [0, {}]", L, seq_len);
  DS_CUDA_ROUTE(moe_balance_loss, (ctx, scores, idx, n_seq, seq_len, alpha, dscores, lengths));
  return ref::moe_balance_loss(scores.f32(), idx.i32(), n_seq, seq_len, E, K, double(alpha),
                               dscores.defined() ? dscores.f32() : nullptr,
                               lengths.empty() ? nullptr : lengths.data());
}

void moe_count(const Context& ctx, const Tensor& idx, Tensor& counts) {
  check_devices(ctx, "moe_count", {&idx, &counts});
  const Scope scope_(ctx, "moe_count", 0, {&idx, &counts});
  DS_CHECK_SHAPE(counts, {-1});
  check_indices(idx, 0, counts.size(0), "moe_count idx");
  DS_CUDA_ROUTE(moe_count, (ctx, idx, counts));
  ref::moe_count(idx.i32(), idx.numel(), counts.i32());
}

// ---- token permutation ---------------------------------------------------------------------
void gather_rows(const Context& ctx, const Tensor& src, const Tensor& rows, Tensor& dst) {
  check_devices(ctx, "gather_rows", {&src, &rows, &dst});
  const Scope scope_(ctx, "gather_rows", 0, {&rows, &dst, &dst});   // dst's rows of src
  DS_CHECK_SHAPE(src, {-1, -1});
  DS_CHECK_SHAPE(rows, {-1});
  DS_CHECK_SHAPE(dst, {rows.size(0), src.size(1)});
  check_indices(rows, 0, src.size(0), "gather_rows rows");
  const int64_t M = rows.size(0), C = src.size(1);
  DS_CUDA_ROUTE(gather_rows, (ctx, src, rows, dst));
  if (use_ref(ctx)) ref::gather_rows(src.f32(), rows.i32(), dst.f32(), M, C);
  else opt::gather_rows(src.f32(), rows.i32(), dst.f32(), M, C, nthreads(ctx));
}

void gather_rows_scaled(const Context& ctx, const Tensor& src, const Tensor& rows, const Tensor& w,
                        Tensor& dst) {
  check_devices(ctx, "gather_rows_scaled", {&src, &rows, &w, &dst});
  const Scope scope_(ctx, "gather_rows_scaled", 0, {&rows, &w, &dst, &dst});
  DS_CHECK_SHAPE(src, {-1, -1});
  DS_CHECK_SHAPE(rows, {-1});
  DS_CHECK_SHAPE(w, {rows.size(0)});
  DS_CHECK_SHAPE(dst, {rows.size(0), src.size(1)});
  check_indices(rows, 0, src.size(0), "gather_rows_scaled rows");
  DS_CUDA_ROUTE_FUSED(gather_rows_scaled, (ctx, src, rows, w, dst));
  if (ctx.device != Device::cpu) {   // DS_CUDA_FUSED=0: the gather and the weighted scatter
    Context one = ctx;               // into zeros that ran on the H200, timed as this op
    one.prof = nullptr;
    const int64_t M = rows.size(0);
    Tensor g = Tensor::empty(dst.shape(), DType::f32, ctx.device);
    gather_rows(one, src, rows, g);
    Tensor iota = Tensor::empty({M}, DType::i32), di = Tensor::empty({M}, DType::i32, ctx.device);
    for (int64_t m = 0; m < M; ++m) iota.i32()[m] = int32_t(m);
    di.copy_from(iota);
    dst.zero_();
    scatter_add_rows(one, g, di, w, dst);
    return;
  }
  opt::gather_rows_scaled(src.f32(), rows.i32(), w.f32(), dst.f32(), rows.size(0), src.size(1),
                          use_ref(ctx) ? 1 : nthreads(ctx));
}

void gather_rows_bf16(const Context& ctx, const Tensor& src, const Tensor& rows, const Tensor& w,
                      Tensor& dst) {
  check_devices(ctx, "gather_rows_bf16", {&src, &rows, &w, &dst});
  const Scope scope_(ctx, "gather_rows_bf16", 0, {&rows, &w, &dst});
  DS_CHECK_SHAPE(src, {-1, -1});
  DS_CHECK_SHAPE(rows, {-1});
  DS_CHECK_SHAPE(dst, {rows.size(0), src.size(1)});
  if (w.defined()) DS_CHECK_SHAPE(w, {rows.size(0)});
  DS_CHECK(src.dtype() == DType::f32 && (dst.dtype() == DType::f32 || dst.dtype() == DType::bf16),
           "gather_rows_bf16: src must be F32 and dst F32 or BF16, got {} and {}",
           dtype_name(src.dtype()), dtype_name(dst.dtype()));
  check_indices(rows, 0, src.size(0), "gather_rows_bf16 rows");
  scope_.add_bytes(4.0 * double(dst.numel()));   // the F32 rows of src it takes
  DS_CUDA_ROUTE_FUSED(gather_rows_bf16, (ctx, src, rows, w, dst));
  if (ctx.device != Device::cpu) {   // DS_CUDA_FUSED=0: the three ops it fuses
    Context one = ctx;                 // timed as this op
    one.prof = nullptr;
    Tensor g = Tensor::empty(dst.shape(), DType::f32, ctx.device);
    if (w.defined()) gather_rows_scaled(one, src, rows, w, g);   // a gather and a scatter here
    else gather_rows(one, src, rows, g);
    bf16_round(one, g, dst);
    return;
  }
  const bool codes = dst.dtype() == DType::bf16;
  opt::gather_rows_bf16(src.f32(), rows.i32(), w.defined() ? w.f32() : nullptr,
                        codes ? nullptr : dst.f32(), codes ? dst.data<uint16_t>() : nullptr,
                        rows.size(0), src.size(1), nthreads(ctx));
}

void scatter_add_rows(const Context& ctx, const Tensor& src, const Tensor& rows, const Tensor& w,
                      Tensor& dst) {
  check_devices(ctx, "scatter_add_rows", {&src, &rows, &w, &dst});
  const Scope scope_(ctx, "scatter_add_rows", 0, {&src, &rows, &w, &src, &src});   // dst rows +=
  DS_CHECK_SHAPE(src, {-1, -1});
  DS_CHECK_SHAPE(rows, {src.size(0)});
  if (w.defined()) DS_CHECK_SHAPE(w, {src.size(0)});
  DS_CHECK_SHAPE(dst, {-1, src.size(1)});
  check_indices(rows, 0, dst.size(0), "scatter_add_rows rows");
  const int64_t M = src.size(0), N = dst.size(0), C = src.size(1);
  DS_CUDA_ROUTE(scatter_add_rows, (ctx, src, rows, w, dst));
  const float* wp = w.defined() ? w.f32() : nullptr;
  if (use_ref(ctx)) ref::scatter_add_rows(src.f32(), rows.i32(), wp, dst.f32(), M, C);
  else opt::scatter_add_rows(src.f32(), rows.i32(), wp, dst.f32(), M, N, C, nthreads(ctx));
}

void gather_rows_dot(const Context& ctx, const Tensor& a, const Tensor& rows, const Tensor& b,
                     Tensor& out) {
  check_devices(ctx, "gather_rows_dot", {&a, &rows, &b, &out});
  const Scope scope_(ctx, "gather_rows_dot", 0, {&rows, &b, &b, &out});   // b's rows of a
  DS_CHECK_SHAPE(a, {-1, -1});
  DS_CHECK_SHAPE(rows, {-1});
  DS_CHECK_SHAPE(b, {rows.size(0), a.size(1)});
  DS_CHECK_SHAPE(out, {rows.size(0)});
  check_indices(rows, 0, a.size(0), "gather_rows_dot rows");
  const int64_t M = rows.size(0), C = a.size(1);
  DS_CUDA_ROUTE(gather_rows_dot, (ctx, a, rows, b, out));
  if (use_ref(ctx)) ref::gather_rows_dot(a.f32(), rows.i32(), b.f32(), out.f32(), M, C);
  else opt::gather_rows_dot(a.f32(), rows.i32(), b.f32(), out.f32(), M, C, nthreads(ctx));
}

void gather_rows_bf16_dot(const Context& ctx, const Tensor& src, const Tensor& rows,
                          const Tensor& w, const Tensor& b, Tensor& dst, Tensor& dot) {
  check_devices(ctx, "gather_rows_bf16_dot", {&src, &rows, &w, &b, &dst, &dot});
  const Scope scope_(ctx, "gather_rows_bf16_dot", 0, {&rows, &w, &b, &dst, &dot});
  DS_CHECK_SHAPE(src, {-1, -1});
  DS_CHECK_SHAPE(rows, {-1});
  const int64_t M = rows.size(0), C = src.size(1);
  DS_CHECK_SHAPE(dst, {M, C});
  DS_CHECK_SHAPE(b, {M, C});
  DS_CHECK_SHAPE(dot, {M});
  if (w.defined()) DS_CHECK_SHAPE(w, {M});
  DS_CHECK(src.dtype() == DType::f32 && (b.dtype() == DType::f32 || b.dtype() == DType::bf16) &&
               (dst.dtype() == DType::f32 || dst.dtype() == DType::bf16),
           "gather_rows_bf16_dot: src must be F32, b and dst F32 or BF16, got {}, {}, {}",
           dtype_name(src.dtype()), dtype_name(b.dtype()), dtype_name(dst.dtype()));
  check_indices(rows, 0, src.size(0), "gather_rows_bf16_dot rows");
  scope_.add_bytes(4.0 * double(dst.numel()));   // the F32 rows of src it takes, once
  DS_CUDA_ROUTE_FUSED(gather_rows_bf16_dot, (ctx, src, rows, w, b, dst, dot));
  DS_CHECK(ctx.device == Device::cpu || b.dtype() == DType::f32,
           "gather_rows_bf16_dot: a BF16 b needs the fused kernels (DS_CUDA_FUSED=0 is set)");
  Context one = ctx;   // the two ops (the CPU, and the GPU under DS_CUDA_FUSED=0)
  one.prof = nullptr;
  gather_rows_dot(one, src, rows, detail::f32_values(b), dot);
  gather_rows_bf16(one, src, rows, w, dst);
}

}  // namespace ds::ops
