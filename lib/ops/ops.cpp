// Dispatch of the ops layer (include/ds/ops/ops.hpp): device check, shape/dtype/index checks
// at the boundary, then the CUDA path (cuda/*.cpp, DS_CUDA_ROUTE) for GPU tensors, or the reference
// kernels (cpu/ref_*.cpp) or the optimised ones (cpu/opt_*.cpp) according to Context::impl.
// With Context::prof set, every op's wall time (and a GEMM's FLOPs) goes to the profiler.
#include "ds/ops/ops.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "cpu/opt.hpp"
#include "cpu/ref.hpp"
#include "dispatch.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"

namespace ds::ops {

namespace {

using detail::check_devices;
using detail::check_indices;
using detail::nthreads;
using detail::Scope;
using detail::use_ref;
using detail::f32_target;
using detail::store_codes;

// Rows = product of all dims but the last.
int64_t lead(const Tensor& t) { return t.size(-1) ? t.numel() / t.size(-1) : 0; }

}  // namespace

// OpenMP is the only threading runtime: OpenBLAS runs single-threaded on whichever thread
// calls it and the GEMM splits its output over OpenMP threads itself (cpu/opt_gemm.cpp).
void set_cpu_threads(int n) {
  n = std::max(1, n);
  omp_set_num_threads(n);
  openblas_set_num_threads(1);
}

// ---- GEMM ----------------------------------------------------------------------------------
void matmul(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c, bool trans_a,
            bool trans_b, float alpha, float beta) {
  check_devices(ctx, "matmul", {&a, &b, &c});
  DS_CHECK(a.ndim() == 2 && b.ndim() == 2, "matmul: a and b must be 2-D, got {} and {}",
           shape_str(a.shape()), shape_str(b.shape()));
  const int64_t M = trans_a ? a.size(1) : a.size(0), K = trans_a ? a.size(0) : a.size(1);
  const int64_t N = trans_b ? b.size(0) : b.size(1), Kb = trans_b ? b.size(1) : b.size(0);
  DS_CHECK(K == Kb, "matmul: inner dims differ: op(a) {}x{}, op(b) {}x{}", M, K, Kb, N);
  DS_CHECK_SHAPE(c, {M, N});
  const Scope scope_(ctx, "matmul", opt::matmul_flops(M, N, K),
                     {&a, &b, &c, beta != 0 ? &c : nullptr});
  DS_CUDA_ROUTE(matmul, (ctx, a, b, c, trans_a, trans_b, alpha, beta));
  if (use_ref(ctx))
    ref::matmul(a.f32(), b.f32(), c.f32(), M, N, K, trans_a, trans_b, alpha, beta);
  else
    opt::matmul(a.f32(), b.f32(), c.f32(), M, N, K, trans_a, trans_b, alpha, beta, nthreads(ctx));
}

void linear_forward(const Context& ctx, const Tensor& x, const Tensor& w, Tensor& y) {
  DS_CHECK_SHAPE(w, {-1, -1});
  DS_CHECK_SHAPE(x, {-1, w.size(1)});
  DS_CHECK_SHAPE(y, {x.size(0), w.size(0)});
  if (ctx.device != Device::cpu) {   // timed here: the CUDA path calls no other op
    const Scope scope_(ctx, "matmul", opt::matmul_flops(x.size(0), w.size(0), w.size(1)),
                       {&x, &w, &y});
    DS_CUDA_ROUTE(linear_forward, (ctx, x, w, y));
  }
  if (w.dtype() == DType::bf16) {   // BF16 weights, F32 activations, FP32 products and sums
    check_devices(ctx, "linear_forward", {&x, &w, &y});
    const int64_t N = x.size(0), O = w.size(0), I = w.size(1);
    const Scope scope_(ctx, "matmul_bf16", opt::matmul_flops(N, O, I), {&x, &w, &y});
    const uint16_t* wp = w.data<uint16_t>();
    if (use_ref(ctx)) ref::linear_bf16(x.f32(), wp, y.f32(), N, O, I);
    else opt::linear_bf16(x.f32(), wp, y.f32(), N, O, I, nthreads(ctx));
    return;
  }
  matmul(ctx, x, w, y, false, true, 1.0f, 0.0f);
}

void linear_backward(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     Tensor& dx, Tensor& dw, float dx_beta) {
  DS_CHECK_SHAPE(w, {-1, -1});
  DS_CHECK_SHAPE(x, {-1, w.size(1)});
  DS_CHECK_SHAPE(dy, {x.size(0), w.size(0)});
  DS_CHECK_SHAPE(dw, {w.size(0), w.size(1)});
  if (dx.defined()) {
    DS_CHECK_SHAPE(dx, {x.size(0), x.size(1)});
    matmul(ctx, dy, w, dx, false, false, 1.0f, dx_beta);   // dx = dy @ w (+ dx_beta dx)
  }
  matmul(ctx, dy, x, dw, true, false, 1.0f, 1.0f);          // dw += dy^T @ x
}

// Shared checks of the grouped GEMMs: offsets 0 = o_0 <= ... <= o_G = rows, G groups.
static void check_groups(const char* op, const std::vector<int64_t>& offsets, size_t G,
                         int64_t rows) {
  DS_CHECK(offsets.size() == G + 1 && offsets.front() == 0 && offsets.back() == rows,
           "{}: {} offsets for {} groups over {} rows", op, offsets.size(), G, rows);
  for (size_t g = 0; g < G; ++g)
    DS_CHECK(offsets[g] <= offsets[g + 1], "{}: offsets decrease at group {}", op, g);
}

void grouped_matmul(const Context& ctx, const Tensor& x, const std::vector<Tensor>& w,
                    bool trans_w, const std::vector<int64_t>& offsets, Tensor& y, float beta) {
  check_devices(ctx, "grouped_matmul", {&x, &y});
  DS_CHECK_SHAPE(x, {-1, -1});
  DS_CHECK_SHAPE(y, {x.size(0), -1});
  check_groups("grouped_matmul", offsets, w.size(), x.size(0));
  const int64_t K = x.size(1), N = y.size(1);
  for (const Tensor& wg : w) {
    check_devices(ctx, "grouped_matmul", {&wg});
    DS_CHECK(wg.dtype() == x.dtype(), "grouped_matmul: weight dtype {} differs from x {}",
             dtype_name(wg.dtype()), dtype_name(x.dtype()));
    if (trans_w) DS_CHECK_SHAPE(wg, {N, K});
    else DS_CHECK_SHAPE(wg, {K, N});
  }
  DS_CHECK(y.dtype() == DType::f32 || (y.dtype() == DType::bf16 && beta == 0.0f),
           "grouped_matmul: y must be F32, or BF16 with beta 0, got {} (beta {})",
           dtype_name(y.dtype()), beta);
  if (ctx.device != Device::cpu) {   // timed here; on the CPU each group's matmul is
    const Scope scope_(ctx, "grouped_matmul", opt::matmul_flops(x.size(0), N, K),
                       {&x, &y, beta != 0 ? &y : nullptr});
    for (const Tensor& wg : w) scope_.add_bytes(double(wg.nbytes()));
    DS_CUDA_ROUTE(grouped_matmul, (ctx, x, w, trans_w, offsets, y, beta));
  }
  // BF16 y: the F32 products rounded once (RNE), as a BF16-output GEMM stores its FP32 sums
  Tensor yf = y.dtype() == DType::f32 ? y : Tensor::empty(y.shape(), DType::f32);
  for (size_t g = 0; g < w.size(); ++g) {
    if (offsets[g] == offsets[g + 1]) continue;
    Tensor yg = yf.slice0(offsets[g], offsets[g + 1]);
    matmul(ctx, x.slice0(offsets[g], offsets[g + 1]), w[g], yg, false, trans_w, 1.0f, beta);
  }
  if (y.dtype() == DType::bf16) {
    Context one = ctx;   // part of this op (its matmuls are profiled on their own)
    one.prof = nullptr;
    bf16_round(one, yf, y);
  }
}

void grouped_matmul_wgrad(const Context& ctx, const Tensor& dy, const Tensor& x,
                          const std::vector<int64_t>& offsets, std::vector<Tensor>& dw) {
  check_devices(ctx, "grouped_matmul_wgrad", {&dy, &x});
  DS_CHECK_SHAPE(dy, {-1, -1});
  DS_CHECK_SHAPE(x, {dy.size(0), -1});
  check_groups("grouped_matmul_wgrad", offsets, dw.size(), dy.size(0));
  DS_CHECK(dy.dtype() == x.dtype(), "grouped_matmul_wgrad: dy {} and x {} differ",
           dtype_name(dy.dtype()), dtype_name(x.dtype()));
  for (const Tensor& g : dw) {
    check_devices(ctx, "grouped_matmul_wgrad", {&g});
    DS_CHECK_SHAPE(g, {dy.size(1), x.size(1)});
  }
  if (ctx.device != Device::cpu) {
    const Scope scope_(ctx, "grouped_matmul_wgrad",
                       opt::matmul_flops(dy.size(1), x.size(1), dy.size(0)), {&dy, &x});
    for (const Tensor& g : dw) scope_.add_bytes(2.0 * double(g.nbytes()));   // dw +=
    DS_CUDA_ROUTE(grouped_matmul_wgrad, (ctx, dy, x, offsets, dw));
  }
  for (size_t g = 0; g < dw.size(); ++g) {
    if (offsets[g] == offsets[g + 1]) continue;
    matmul(ctx, dy.slice0(offsets[g], offsets[g + 1]), x.slice0(offsets[g], offsets[g + 1]),
           dw[g], true, false, 1.0f, 1.0f);
  }
}

void transpose(const Context& ctx, const Tensor& x, Tensor& out) {
  check_devices(ctx, "transpose", {&x, &out});
  const Scope scope_(ctx, "transpose", 0, {&x, &out});
  DS_CHECK_SHAPE(x, {-1, -1});
  DS_CHECK_SHAPE(out, {x.size(1), x.size(0)});
  DS_CHECK(x.dtype() == out.dtype() && dtype_size(x.dtype()) <= 4 && x.dtype() != DType::i64,
           "transpose: dtypes {} -> {} (same F32, BF16, I32 or 8-bit dtype needed)",
           dtype_name(x.dtype()), dtype_name(out.dtype()));
  DS_CUDA_ROUTE(transpose, (ctx, x, out));
  const int64_t M = x.size(0), K = x.size(1);
  const size_t es = dtype_size(x.dtype());
  const auto* src = static_cast<const uint8_t*>(x.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  constexpr int64_t kTile = 32;
  for (int64_t i0 = 0; i0 < M; i0 += kTile)
    for (int64_t j0 = 0; j0 < K; j0 += kTile)
      for (int64_t i = i0; i < std::min(M, i0 + kTile); ++i)
        for (int64_t j = j0; j < std::min(K, j0 + kTile); ++j)
          std::memcpy(dst + size_t(j * M + i) * es, src + size_t(i * K + j) * es, es);
}

// ---- embedding -----------------------------------------------------------------------------
void embedding_forward(const Context& ctx, const Tensor& table, const Tensor& ids, Tensor& out) {
  check_devices(ctx, "embedding_forward", {&table, &ids, &out});
  const Scope scope_(ctx, "embedding_forward", 0, {&ids, &out, &out});   // rows read
  DS_CHECK_SHAPE(table, {-1, -1});
  DS_CHECK_SHAPE(ids, {-1});
  DS_CHECK_SHAPE(out, {ids.size(0), table.size(1)});
  check_indices(ids, 0, table.size(0), "embedding_forward ids");
  const int64_t N = ids.size(0), C = table.size(1);
  DS_CUDA_ROUTE(embedding_forward, (ctx, table, ids, out));
  if (use_ref(ctx)) ref::embedding_forward(table.f32(), ids.i32(), out.f32(), N, C);
  else opt::embedding_forward(table.f32(), ids.i32(), out.f32(), N, C, nthreads(ctx));
}

void embedding_backward(const Context& ctx, const Tensor& ids, const Tensor& dout,
                        Tensor& dtable) {
  check_devices(ctx, "embedding_backward", {&ids, &dout, &dtable});
  const Scope scope_(ctx, "embedding_backward", 0, {&ids, &dout, &dout, &dout});   // rows +=
  DS_CHECK_SHAPE(dtable, {-1, -1});
  DS_CHECK_SHAPE(ids, {-1});
  DS_CHECK_SHAPE(dout, {ids.size(0), dtable.size(1)});
  check_indices(ids, 0, dtable.size(0), "embedding_backward ids");
  const int64_t N = ids.size(0), V = dtable.size(0), C = dtable.size(1);
  DS_CUDA_ROUTE(embedding_backward, (ctx, ids, dout, dtable));
  if (use_ref(ctx)) ref::embedding_backward(ids.i32(), dout.f32(), dtable.f32(), N, C);
  else opt::embedding_backward(ids.i32(), dout.f32(), dtable.f32(), N, V, C, nthreads(ctx));
}

// ---- RMSNorm -------------------------------------------------------------------------------
void rmsnorm_forward(const Context& ctx, const Tensor& x, const Tensor& g, float eps, Tensor& y,
                     Tensor& rstd) {
  check_devices(ctx, "rmsnorm_forward", {&x, &g, &y, &rstd});
  const Scope scope_(ctx, "rmsnorm_forward", 0, {&x, &g, &y, &rstd});
  DS_CHECK_SHAPE(x, {-1, -1});
  const int64_t N = x.size(0), C = x.size(1);
  DS_CHECK_SHAPE(g, {C});
  DS_CHECK_SHAPE(y, {N, C});
  DS_CHECK_SHAPE(rstd, {N});
  DS_CHECK(y.dtype() == DType::f32 || y.dtype() == DType::bf16,
           "rmsnorm_forward: y must be F32 or BF16, got {}", dtype_name(y.dtype()));
  DS_CUDA_ROUTE(rmsnorm_forward, (ctx, x, g, eps, y, rstd));
  const Tensor yf = f32_target(y);
  if (use_ref(ctx)) ref::rmsnorm_forward(x.f32(), g.f32(), double(eps), yf.f32(), rstd.f32(), N, C);
  else opt::rmsnorm_forward(x.f32(), g.f32(), eps, yf.f32(), rstd.f32(), N, C, nthreads(ctx));
  store_codes(yf, y);
}

void rmsnorm_backward(const Context& ctx, const Tensor& x, const Tensor& g, const Tensor& rstd,
                      const Tensor& dy, Tensor& dx, Tensor& dg) {
  check_devices(ctx, "rmsnorm_backward", {&x, &g, &rstd, &dy, &dx, &dg});
  const Scope scope_(ctx, "rmsnorm_backward", 0, {&x, &g, &rstd, &dy, &dx, &dg});
  DS_CHECK_SHAPE(x, {-1, -1});
  const int64_t N = x.size(0), C = x.size(1);
  DS_CHECK_SHAPE(g, {C});
  DS_CHECK_SHAPE(rstd, {N});
  DS_CHECK_SHAPE(dy, {N, C});
  DS_CHECK_SHAPE(dx, {N, C});
  DS_CHECK_SHAPE(dg, {C});
  DS_CHECK(dx.dtype() == DType::f32 || dx.dtype() == DType::bf16,
           "rmsnorm_backward: dx must be F32 or BF16, got {}", dtype_name(dx.dtype()));
  DS_CUDA_ROUTE(rmsnorm_backward, (ctx, x, g, rstd, dy, dx, dg));
  const Tensor dxf = f32_target(dx);
  if (use_ref(ctx))
    ref::rmsnorm_backward(x.f32(), g.f32(), rstd.f32(), dy.f32(), dxf.f32(), dg.f32(), N, C);
  else
    opt::rmsnorm_backward(x.f32(), g.f32(), rstd.f32(), dy.f32(), dxf.f32(), dg.f32(), N, C,
                          nthreads(ctx));
  store_codes(dxf, dx);
}

void add_rmsnorm_forward(const Context& ctx, const Tensor& x, const Tensor& a, const Tensor& g,
                         float eps, Tensor& h, Tensor& y, Tensor& rstd) {
  check_devices(ctx, "add_rmsnorm_forward", {&x, &a, &g, &h, &y, &rstd});
  const Scope scope_(ctx, "add_rmsnorm_forward", 0, {&x, &a, &g, &h, &y, &rstd});
  DS_CHECK_SHAPE(x, {-1, -1});
  const int64_t N = x.size(0), C = x.size(1);
  DS_CHECK_SHAPE(a, {N, C});
  DS_CHECK_SHAPE(g, {C});
  DS_CHECK_SHAPE(h, {N, C});
  DS_CHECK_SHAPE(y, {N, C});
  DS_CHECK_SHAPE(rstd, {N});
  DS_CHECK(y.dtype() == DType::f32 || y.dtype() == DType::bf16,
           "add_rmsnorm_forward: y must be F32 or BF16, got {}", dtype_name(y.dtype()));
  DS_CHECK(!detail::overlaps(y, h), "add_rmsnorm_forward: y must not overlap h");
  DS_CUDA_ROUTE(add_rmsnorm_forward, (ctx, x, a, g, eps, h, y, rstd));
  const Tensor yf = f32_target(y);
  if (use_ref(ctx)) {
    ref::add(x.f32(), a.f32(), h.f32(), N * C);
    ref::rmsnorm_forward(h.f32(), g.f32(), double(eps), yf.f32(), rstd.f32(), N, C);
  } else {
    opt::add_rmsnorm_forward(x.f32(), a.f32(), h.f32(), g.f32(), eps, yf.f32(), rstd.f32(), N,
                             C, nthreads(ctx));
  }
  store_codes(yf, y);
}

void rmsnorm_backward_add(const Context& ctx, const Tensor& x, const Tensor& g,
                          const Tensor& rstd, const Tensor& dy, const Tensor& res, Tensor& dx,
                          Tensor& dg, Tensor* dx_codes) {
  const Tensor none;
  const Tensor* dc = dx_codes ? dx_codes : &none;
  check_devices(ctx, "rmsnorm_backward_add", {&x, &g, &rstd, &dy, &res, &dx, &dg, dc});
  const Scope scope_(ctx, "rmsnorm_backward_add", 0, {&x, &g, &rstd, &dy, &res, &dx, &dg, dc});
  DS_CHECK_SHAPE(x, {-1, -1});
  const int64_t N = x.size(0), C = x.size(1);
  DS_CHECK_SHAPE(g, {C});
  DS_CHECK_SHAPE(rstd, {N});
  DS_CHECK_SHAPE(dy, {N, C});
  DS_CHECK_SHAPE(res, {N, C});
  DS_CHECK_SHAPE(dx, {N, C});
  DS_CHECK_SHAPE(dg, {C});
  DS_CHECK(!detail::overlaps(dx, x) && !detail::overlaps(dx, dy),
           "rmsnorm_backward_add: dx must not overlap x or dy");
  if (dx_codes) {
    DS_CHECK(dx_codes->dtype() == DType::bf16, "rmsnorm_backward_add: dx_codes must be BF16, "
             "got {}", dtype_name(dx_codes->dtype()));
    DS_CHECK_SHAPE(*dx_codes, {N, C});
    DS_CHECK(!detail::overlaps(*dx_codes, x) && !detail::overlaps(*dx_codes, dy) &&
                 !detail::overlaps(*dx_codes, res) && !detail::overlaps(*dx_codes, dx),
             "rmsnorm_backward_add: dx_codes must not overlap the other operands");
  }
  DS_CUDA_ROUTE(rmsnorm_backward_add, (ctx, x, g, rstd, dy, res, dx, dg, dx_codes));
  if (use_ref(ctx)) {
    const Tensor t = Tensor::empty({N, C}, DType::f32, Device::cpu);
    ref::rmsnorm_backward(x.f32(), g.f32(), rstd.f32(), dy.f32(), t.f32(), dg.f32(), N, C);
    ref::add(res.f32(), t.f32(), dx.f32(), N * C);
  } else {
    opt::rmsnorm_backward(x.f32(), g.f32(), rstd.f32(), dy.f32(), dx.f32(), dg.f32(), N, C,
                          nthreads(ctx), res.f32());
  }
  if (dx_codes) store_codes(dx, *dx_codes);
}

// ---- RoPE and head layout ------------------------------------------------------------------
static void rope_dispatch(const Context& ctx, const char* op, const Tensor& x, const Tensor& pos,
                          const Tensor& freqs, Tensor& out, int dir) {
  check_devices(ctx, op, {&x, &pos, &freqs, &out});
  DS_CHECK(x.ndim() == 3, "{}: x must be (N, H, Dr), got {}", op, shape_str(x.shape()));
  const int64_t N = x.size(0), H = x.size(1), Dr = x.size(2);
  DS_CHECK(Dr % 2 == 0, "{}: rope dim {} is odd", op, Dr);
  DS_CHECK_SHAPE(pos, {N});
  DS_CHECK_SHAPE(freqs, {Dr / 2});
  DS_CHECK_SHAPE(out, {N, H, Dr});
  const Scope scope_(ctx, op, 0, {&x, &pos, &freqs, &out});
  DS_CUDA_ROUTE(rope, (ctx, x, pos, freqs, out, dir));
  if (use_ref(ctx)) ref::rope(x.f32(), pos.i32(), freqs.f32(), out.f32(), N, H, Dr, dir);
  else opt::rope(x.f32(), pos.i32(), freqs.f32(), out.f32(), N, H, Dr, dir, nthreads(ctx));
}

void rope_forward(const Context& ctx, const Tensor& x, const Tensor& pos, const Tensor& freqs,
                  Tensor& out) {
  rope_dispatch(ctx, "rope_forward", x, pos, freqs, out, +1);
}
void rope_backward(const Context& ctx, const Tensor& dout, const Tensor& pos, const Tensor& freqs,
                   Tensor& dx) {
  rope_dispatch(ctx, "rope_backward", dout, pos, freqs, dx, -1);
}

void rope_tail_inplace(const Context& ctx, Tensor& x, const Tensor& pos, const Tensor& freqs,
                       int dir) {
  const char* op = dir > 0 ? "rope_forward" : "rope_backward";   // timed as the rope
  check_devices(ctx, op, {&x, &pos, &freqs});
  DS_CHECK(x.ndim() == 3, "{}: x must be (N, H, D), got {}", op, shape_str(x.shape()));
  DS_CHECK(dir == 1 || dir == -1, "{}: dir must be +1 or -1, got {}", op, dir);
  const int64_t N = x.size(0), H = x.size(1), D = x.size(2), Dr = 2 * freqs.numel();
  DS_CHECK_SHAPE(freqs, {Dr / 2});
  DS_CHECK_SHAPE(pos, {N});
  DS_CHECK(Dr <= D && D % 2 == 0, "{}: rotating the last {} of {} elements per head", op, Dr, D);
  const Scope scope_(ctx, op, 0, {&pos, &freqs});
  scope_.add_bytes(2.0 * 4.0 * double(N * H * Dr));   // the tails, read and written
  DS_CUDA_ROUTE_FUSED(rope_tail_inplace, (ctx, x, pos, freqs, dir));
  if (ctx.device != Device::cpu) {   // DS_CUDA_FUSED=0: split, rotate, concatenate
    Context one = ctx;
    one.prof = nullptr;
    Tensor a = Tensor::empty({N, H, D - Dr}, DType::f32, ctx.device);
    Tensor b = Tensor::empty({N, H, Dr}, DType::f32, ctx.device);
    Tensor r = Tensor::empty({N, H, Dr}, DType::f32, ctx.device);
    split_last(one, x, a, b);
    rope_dispatch(one, op, b, pos, freqs, r, dir);
    concat_last(one, a, r, x);
    return;
  }
  if (use_ref(ctx))
    ref::rope(x.f32(), pos.i32(), freqs.f32(), x.f32(), N, H, Dr, dir, D, D - Dr);
  else
    opt::rope(x.f32(), pos.i32(), freqs.f32(), x.f32(), N, H, Dr, dir, nthreads(ctx), D, D - Dr);
}

void rope_tail_codes(const Context& ctx, const Tensor& x, const Tensor& pos, const Tensor& freqs,
                     int dir, Tensor& out) {
  const char* op = "rope_tail_codes";
  check_devices(ctx, op, {&x, &pos, &freqs, &out});
  DS_CHECK(x.ndim() == 3, "{}: x must be (N, H, D), got {}", op, shape_str(x.shape()));
  DS_CHECK(x.dtype() == DType::f32, "{}: x must be F32, got {}", op, dtype_name(x.dtype()));
  DS_CHECK(out.dtype() == DType::bf16, "{}: out must be BF16, got {}", op,
           dtype_name(out.dtype()));
  DS_CHECK_SHAPE(out, {x.size(0), x.size(1), x.size(2)});
  DS_CHECK(dir == 1 || dir == -1, "{}: dir must be +1 or -1, got {}", op, dir);
  const int64_t N = x.size(0), D = x.size(2), Dr = 2 * freqs.numel();
  DS_CHECK_SHAPE(freqs, {Dr / 2});
  DS_CHECK_SHAPE(pos, {N});
  DS_CHECK(Dr <= D && D % 2 == 0, "{}: rotating the last {} of {} elements per head", op, Dr, D);
  DS_CHECK(!detail::overlaps(x, out), "{}: out must not overlap x", op);
  const Scope scope_(ctx, op, 0, {&x, &pos, &freqs, &out});
  DS_CUDA_ROUTE_FUSED(rope_tail_codes, (ctx, x, pos, freqs, dir, out));
  Context one = ctx;   // the rotation on a copy, then the rounding (DS_CUDA_FUSED=0 too)
  one.prof = nullptr;
  Tensor t = x.clone();
  rope_tail_inplace(one, t, pos, freqs, dir);
  bf16_round(one, t, out);
}

// x (..., A+B), a (..., A), b (..., B) with equal leading dims.
static void check_split(const char* op, const Tensor& x, const Tensor& a, const Tensor& b) {
  bool ok = x.ndim() >= 1 && a.ndim() == x.ndim() && b.ndim() == x.ndim() &&
            a.size(-1) + b.size(-1) == x.size(-1);
  for (int i = 0; ok && i + 1 < x.ndim(); ++i)
    ok = a.shape()[size_t(i)] == x.shape()[size_t(i)] &&
         b.shape()[size_t(i)] == x.shape()[size_t(i)];
  DS_CHECK(ok, "{}: shapes x {} a {} b {} do not split along the last dim", op,
           shape_str(x.shape()), shape_str(a.shape()), shape_str(b.shape()));
}

void split_last(const Context& ctx, const Tensor& x, Tensor& a, Tensor& b) {
  check_devices(ctx, "split_last", {&x, &a, &b});
  const Scope scope_(ctx, "split_last", 0, {&x, &a, &b});
  check_split("split_last", x, a, b);
  const int64_t R = lead(x), A = a.size(-1), B = b.size(-1);
  DS_CUDA_ROUTE(split_last, (ctx, x, a, b));
  if (use_ref(ctx)) ref::split_last(x.f32(), a.f32(), b.f32(), R, A, B);
  else opt::split_last(x.f32(), a.f32(), b.f32(), R, A, B, nthreads(ctx));
}

void concat_last(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& x) {
  check_devices(ctx, "concat_last", {&x, &a, &b});
  const Scope scope_(ctx, "concat_last", 0, {&a, &b, &x});
  check_split("concat_last", x, a, b);
  const int64_t R = lead(x), A = a.size(-1), B = b.size(-1);
  DS_CUDA_ROUTE(concat_last, (ctx, a, b, x));
  if (use_ref(ctx)) ref::concat_last(a.f32(), b.f32(), x.f32(), R, A, B);
  else opt::concat_last(a.f32(), b.f32(), x.f32(), R, A, B, nthreads(ctx));
}

void broadcast_heads(const Context& ctx, const Tensor& x, Tensor& out) {
  check_devices(ctx, "broadcast_heads", {&x, &out});
  const Scope scope_(ctx, "broadcast_heads", 0, {&x, &out});
  DS_CHECK_SHAPE(x, {-1, -1});
  DS_CHECK_SHAPE(out, {x.size(0), -1, x.size(1)});
  const int64_t N = x.size(0), H = out.size(1), D = x.size(1);
  DS_CUDA_ROUTE(broadcast_heads, (ctx, x, out));
  if (use_ref(ctx)) ref::broadcast_heads(x.f32(), out.f32(), N, H, D);
  else opt::broadcast_heads(x.f32(), out.f32(), N, H, D, nthreads(ctx));
}

void sum_heads(const Context& ctx, const Tensor& dout, Tensor& dx) {
  check_devices(ctx, "sum_heads", {&dout, &dx});
  const Scope scope_(ctx, "sum_heads", 0, {&dout, &dx});
  DS_CHECK_SHAPE(dout, {-1, -1, -1});
  DS_CHECK_SHAPE(dx, {dout.size(0), dout.size(2)});
  const int64_t N = dout.size(0), H = dout.size(1), D = dout.size(2);
  DS_CUDA_ROUTE(sum_heads, (ctx, dout, dx));
  if (use_ref(ctx)) ref::sum_heads(dout.f32(), dx.f32(), N, H, D);
  else opt::sum_heads(dout.f32(), dx.f32(), N, H, D, nthreads(ctx));
}

// ---- cross-entropy -------------------------------------------------------------------------
static void check_ce(const Tensor& logits, const Tensor& targets) {
  DS_CHECK_SHAPE(logits, {-1, -1});
  DS_CHECK(logits.size(1) > 0, "cross_entropy: empty vocabulary");
  DS_CHECK_SHAPE(targets, {logits.size(0)});
  check_indices(targets, -1, logits.size(1), "cross_entropy targets");
}

void cross_entropy_forward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                           Tensor& losses) {
  check_devices(ctx, "cross_entropy_forward", {&logits, &targets, &losses});
  const Scope scope_(ctx, "cross_entropy_forward", 0, {&logits, &targets, &losses});
  check_ce(logits, targets);
  DS_CHECK_SHAPE(losses, {logits.size(0)});
  const int64_t N = logits.size(0), V = logits.size(1);
  DS_CUDA_ROUTE(cross_entropy_forward, (ctx, logits, targets, losses));
  if (use_ref(ctx)) ref::cross_entropy_forward(logits.f32(), targets.i32(), losses.f32(), N, V);
  else opt::cross_entropy_forward(logits.f32(), targets.i32(), losses.f32(), N, V, nthreads(ctx));
}

void cross_entropy_backward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                            float scale, Tensor& dlogits) {
  check_devices(ctx, "cross_entropy_backward", {&logits, &targets, &dlogits});
  const Scope scope_(ctx, "cross_entropy_backward", 0, {&logits, &targets, &dlogits});
  check_ce(logits, targets);
  DS_CHECK_SHAPE(dlogits, logits.shape());
  const int64_t N = logits.size(0), V = logits.size(1);
  DS_CUDA_ROUTE(cross_entropy_backward, (ctx, logits, targets, scale, dlogits));
  if (use_ref(ctx))
    ref::cross_entropy_backward(logits.f32(), targets.i32(), double(scale), dlogits.f32(), N, V);
  else
    opt::cross_entropy_backward(logits.f32(), targets.i32(), scale, dlogits.f32(), N, V,
                                nthreads(ctx));
}

void cross_entropy_forward_backward(const Context& ctx, const Tensor& logits,
                                    const Tensor& targets, float scale, Tensor& losses,
                                    Tensor& dlogits) {
  check_devices(ctx, "cross_entropy_forward_backward", {&logits, &targets, &losses, &dlogits});
  const Scope scope_(ctx, "cross_entropy_forward_backward", 0,
                     {&logits, &targets, &losses, &dlogits});
  check_ce(logits, targets);
  DS_CHECK_SHAPE(dlogits, logits.shape());
  DS_CHECK(dlogits.dtype() == DType::f32 || dlogits.dtype() == DType::bf16,
           "cross_entropy_forward_backward: dlogits must be F32 or BF16, got {}",
           dtype_name(dlogits.dtype()));
  if (losses.defined()) DS_CHECK_SHAPE(losses, {logits.size(0)});
  const int64_t N = logits.size(0), V = logits.size(1);
  DS_CUDA_ROUTE(cross_entropy_forward_backward, (ctx, logits, targets, scale, losses, dlogits));
  const Tensor d = f32_target(dlogits);
  if (use_ref(ctx)) {
    const Tensor src = d.same_storage(logits) ? logits.clone() : logits;
    if (losses.defined()) ref::cross_entropy_forward(src.f32(), targets.i32(), losses.f32(), N, V);
    ref::cross_entropy_backward(src.f32(), targets.i32(), double(scale), d.f32(), N, V);
  } else {
    opt::cross_entropy_fused(logits.f32(), targets.i32(), scale,
                             losses.defined() ? losses.f32() : nullptr, d.f32(), N, V,
                             nthreads(ctx));
  }
  store_codes(d, dlogits);
}

// ---- element-wise and reductions -----------------------------------------------------------
void add(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  check_devices(ctx, "add", {&a, &b, &out});
  const Scope scope_(ctx, "add", 0, {&a, &b, &out});
  DS_CHECK_SHAPE(b, a.shape());
  DS_CHECK_SHAPE(out, a.shape());
  DS_CUDA_ROUTE(add, (ctx, a, b, out));
  if (use_ref(ctx)) ref::add(a.f32(), b.f32(), out.f32(), a.numel());
  else opt::add(a.f32(), b.f32(), out.f32(), a.numel(), nthreads(ctx));
}

void add_(const Context& ctx, Tensor& dst, const Tensor& src) {
  check_devices(ctx, "add_", {&dst, &src});
  const Scope scope_(ctx, "add_", 0, {&dst, &dst, &src});
  DS_CHECK_SHAPE(src, dst.shape());
  DS_CUDA_ROUTE(add_, (ctx, dst, src));
  if (use_ref(ctx)) ref::add_(dst.f32(), src.f32(), dst.numel());
  else opt::add_(dst.f32(), src.f32(), dst.numel(), nthreads(ctx));
}

void scale_(const Context& ctx, Tensor& x, float s) {
  check_devices(ctx, "scale_", {&x});
  const Scope scope_(ctx, "scale_", 0, {&x, &x});
  DS_CUDA_ROUTE(scale_, (ctx, x, s));
  if (use_ref(ctx)) ref::scale_(x.f32(), s, x.numel());
  else opt::scale_(x.f32(), s, x.numel(), nthreads(ctx));
}

double sum_squares(const Context& ctx, const Tensor& x) {
  check_devices(ctx, "sum_squares", {&x});
  const Scope scope_(ctx, "sum_squares", 0, {&x});
  DS_CUDA_ROUTE(sum_squares, (ctx, x));
  return use_ref(ctx) ? ref::sum_squares(x.f32(), x.numel())
                      : opt::sum_squares(x.f32(), x.numel(), nthreads(ctx));
}

int64_t count_nonfinite(const Context& ctx, const Tensor& x) {
  check_devices(ctx, "count_nonfinite", {&x});
  const Scope scope_(ctx, "count_nonfinite", 0, {&x});
  DS_CUDA_ROUTE(count_nonfinite, (ctx, x));
  return use_ref(ctx) ? ref::count_nonfinite(x.f32(), x.numel())
                      : opt::count_nonfinite(x.f32(), x.numel(), nthreads(ctx));
}

double sum(const Context& ctx, const Tensor& x) {
  check_devices(ctx, "sum", {&x});
  const Scope scope_(ctx, "sum", 0, {&x});
  DS_CUDA_ROUTE(sum, (ctx, x));
  return use_ref(ctx) ? ref::sum(x.f32(), x.numel()) : opt::sum(x.f32(), x.numel(), nthreads(ctx));
}

// ---- AdamW ---------------------------------------------------------------------------------
void detail::check_adamw(const Tensor& param, const Tensor& grad, const Tensor& m,
                         const Tensor& v, const AdamWParams& p) {
  DS_CHECK_SHAPE(grad, param.shape());
  DS_CHECK_SHAPE(m, param.shape());
  DS_CHECK_SHAPE(v, param.shape());
  DS_CHECK(p.step >= 1, "adamw_step: step {} must be >= 1", p.step);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&m, &v})
    DS_CHECK(t->dtype() == DType::f32 || t->dtype() == DType::bf16,
             "adamw_step: moments must be F32 or BF16, got {}", dtype_name(t->dtype()));
}

void adamw_step(const Context& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                const AdamWParams& p) {
  check_devices(ctx, "adamw_step", {&param, &grad, &m, &v});
  const Scope scope_(ctx, "adamw_step", 0, {&param, &param, &grad, &m, &m, &v, &v});
  detail::check_adamw(param, grad, m, v, p);
  DS_CUDA_ROUTE(adamw_step, (ctx, param, grad, m, v, p));
  const bool mb = m.dtype() == DType::bf16, vb = v.dtype() == DType::bf16;
  float* m32 = mb ? nullptr : m.f32();
  float* v32 = vb ? nullptr : v.f32();
  uint16_t* m16 = mb ? m.data<uint16_t>() : nullptr;
  uint16_t* v16 = vb ? v.data<uint16_t>() : nullptr;
  if (use_ref(ctx)) ref::adamw_step(param.f32(), grad.f32(), m32, v32, m16, v16, param.numel(), p);
  else
    opt::adamw_step(param.f32(), grad.f32(), m32, v32, m16, v16, param.numel(), p, nthreads(ctx));
}

}  // namespace ds::ops
