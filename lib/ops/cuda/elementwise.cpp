// CUDA path of the element-wise, norm, RoPE, layout, row-permutation, reduction and AdamW ops
// (lib/ops/cuda/ops_cuda.hpp). The dispatchers (ops.cpp, mla_decode.cpp) have already checked
// devices and shapes; this layer checks dtypes (f32()/i32() throw on a mismatch) and hands raw
// pointers to the launchers of kernels/elementwise.cuh. Index ranges are not checked here
// (that would need the indices on the host): the kernels skip or zero-fill bad entries.
#include <cmath>

#include "ds/core/error.hpp"
#include "kernels/elementwise.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/multi_tensor.cuh"
#include "kernels/runtime.cuh"
#include "ops_cuda.hpp"

namespace ds::ops::cuda {

namespace {
// Rows = product of all dims but the last (0 for an empty last dim).
int64_t lead_rows(const Tensor& t) { return t.size(-1) ? t.numel() / t.size(-1) : 0; }
}  // namespace

// ---- embedding -----------------------------------------------------------------------------
void embedding_forward(const Context&, const Tensor& table, const Tensor& ids, Tensor& out) {
  ds::cuda::gather_rows_f32(table.f32(), table.size(0), ids.i32(), out.f32(), ids.size(0),
                            table.size(1));
}

void embedding_backward(const Context&, const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  ds::cuda::scatter_add_rows_f32(dout.f32(), ids.i32(), nullptr, dtable.f32(), dtable.size(0),
                                 ids.size(0), dtable.size(1));
}

// ---- RMSNorm -------------------------------------------------------------------------------
// A BF16 y (codes, the next GEMM's operand) straight from the kernel; with DS_CUDA_FUSED=0 the
// F32 kernel into a temporary, then bf16_round.
void rmsnorm_forward(const Context&, const Tensor& x, const Tensor& g, float eps, Tensor& y,
                     Tensor& rstd) {
  const int64_t N = x.size(0), C = x.size(1);
  if (y.dtype() != DType::bf16) {
    ds::cuda::rmsnorm_forward_f32(x.f32(), g.f32(), eps, y.f32(), rstd.f32(), N, C);
  } else if (ds::cuda::fused_ops()) {
    ds::cuda::rmsnorm_forward_bf16(x.f32(), g.f32(), eps, y.data<uint16_t>(), rstd.f32(), N, C);
  } else {
    const Tensor t = Tensor::empty(x.shape(), DType::f32, Device::cuda);
    ds::cuda::rmsnorm_forward_f32(x.f32(), g.f32(), eps, t.f32(), rstd.f32(), N, C);
    ds::cuda::bf16_round(t.f32(), nullptr, y.data<uint16_t>(), N * C);
  }
}

// A BF16 dx (codes, a Linear's output gradient operand) straight from the kernel; with
// DS_CUDA_FUSED=0 the F32 kernel into a temporary, then bf16_round.
void rmsnorm_backward(const Context&, const Tensor& x, const Tensor& g, const Tensor& rstd,
                      const Tensor& dy, Tensor& dx, Tensor& dg) {
  const int64_t N = x.size(0), C = x.size(1);
  if (dx.dtype() != DType::bf16) {
    ds::cuda::rmsnorm_backward_f32(x.f32(), g.f32(), rstd.f32(), dy.f32(), dx.f32(), dg.f32(), N,
                                   C);
  } else if (ds::cuda::fused_ops()) {
    ds::cuda::rmsnorm_backward_f32(x.f32(), g.f32(), rstd.f32(), dy.f32(), nullptr, dg.f32(), N,
                                   C, nullptr, dx.data<uint16_t>());
  } else {
    const Tensor t = Tensor::empty({N, C}, DType::f32, Device::cuda);
    ds::cuda::rmsnorm_backward_f32(x.f32(), g.f32(), rstd.f32(), dy.f32(), t.f32(), dg.f32(), N,
                                   C);
    ds::cuda::bf16_round(t.f32(), nullptr, dx.data<uint16_t>(), N * C);
  }
}

// The residual add fused into the norm; with DS_CUDA_FUSED=0 the add and the norm apart.
void add_rmsnorm_forward(const Context& ctx, const Tensor& x, const Tensor& a, const Tensor& g,
                         float eps, Tensor& h, Tensor& y, Tensor& rstd) {
  const int64_t N = x.size(0), C = x.size(1);
  if (!ds::cuda::fused_ops()) {
    ds::cuda::add_f32(x.f32(), a.f32(), h.f32(), N * C);
    cuda::rmsnorm_forward(ctx, h, g, eps, y, rstd);
    return;
  }
  const bool codes = y.dtype() == DType::bf16;
  ds::cuda::add_rmsnorm_forward(x.f32(), a.f32(), h.f32(), g.f32(), eps,
                                codes ? nullptr : y.f32(), codes ? y.data<uint16_t>() : nullptr,
                                rstd.f32(), N, C);
}

// dx_codes: dx's BF16 codes from the same kernel; with DS_CUDA_FUSED=0 the norm, the add and a
// bf16_round apart.
void rmsnorm_backward_add(const Context&, const Tensor& x, const Tensor& g, const Tensor& rstd,
                          const Tensor& dy, const Tensor& res, Tensor& dx, Tensor& dg,
                          Tensor* dx_codes) {
  const int64_t N = x.size(0), C = x.size(1);
  if (!ds::cuda::fused_ops()) {
    const Tensor t = Tensor::empty({N, C}, DType::f32, Device::cuda);
    ds::cuda::rmsnorm_backward_f32(x.f32(), g.f32(), rstd.f32(), dy.f32(), t.f32(), dg.f32(), N,
                                   C);
    ds::cuda::add_f32(res.f32(), t.f32(), dx.f32(), N * C);
    if (dx_codes) ds::cuda::bf16_round(dx.f32(), nullptr, dx_codes->data<uint16_t>(), N * C);
    return;
  }
  ds::cuda::rmsnorm_backward_f32(x.f32(), g.f32(), rstd.f32(), dy.f32(), dx.f32(), dg.f32(), N,
                                 C, res.f32(), dx_codes ? dx_codes->data<uint16_t>() : nullptr);
}

// ---- RoPE and head layout ------------------------------------------------------------------
void rope(const Context&, const Tensor& x, const Tensor& pos, const Tensor& freqs, Tensor& out,
          int dir) {
  DS_CHECK(dir == 1 || dir == -1, "rope: dir must be +1 or -1, got {}", dir);
  ds::cuda::rope_f32(x.f32(), pos.i32(), freqs.f32(), out.f32(), x.size(0), x.size(1), x.size(2),
                     dir);
}

void rope_tail_inplace(const Context&, Tensor& x, const Tensor& pos, const Tensor& freqs,
                       int dir) {   // shapes checked by ops::rope_tail_inplace
  const int64_t D = x.size(2), Dr = 2 * freqs.numel();
  ds::cuda::rope_f32(x.f32(), pos.i32(), freqs.f32(), x.f32(), x.size(0), x.size(1), Dr, dir, D,
                     D - Dr);
}

void rope_tail_codes(const Context&, const Tensor& x, const Tensor& pos, const Tensor& freqs,
                     int dir, Tensor& out) {   // shapes checked by ops::rope_tail_codes
  ds::cuda::rope_tail_codes(x.f32(), pos.i32(), freqs.f32(), out.data<uint16_t>(), x.size(0),
                            x.size(1), x.size(2), 2 * freqs.numel(), dir);
}

void split_last(const Context&, const Tensor& x, Tensor& a, Tensor& b) {
  ds::cuda::split_last_f32(x.f32(), a.f32(), b.f32(), lead_rows(x), a.size(-1), b.size(-1));
}

void concat_last(const Context&, const Tensor& a, const Tensor& b, Tensor& x) {
  ds::cuda::concat_last_f32(a.f32(), b.f32(), x.f32(), lead_rows(x), a.size(-1), b.size(-1));
}

void broadcast_heads(const Context&, const Tensor& x, Tensor& out) {
  ds::cuda::broadcast_heads_f32(x.f32(), out.f32(), x.size(0), out.size(1), x.size(1));
}

void sum_heads(const Context&, const Tensor& dout, Tensor& dx) {
  ds::cuda::sum_heads_f32(dout.f32(), dx.f32(), dout.size(0), dout.size(1), dout.size(2));
}

// mla_kv_split (forward and backward): shapes and dtypes checked by lib/ops/mla_kv.cpp.
void mla_kv_split(const Context&, const Tensor& kv, const Tensor& k_rot, Tensor& k, Tensor& v) {
  ds::cuda::mla_kv_split_f32(kv.f32(), k_rot.f32(), k.raw(), v.raw(), k.dtype() == DType::bf16,
                             kv.size(0), kv.size(1), k.size(2) - k_rot.size(1), k_rot.size(1),
                             v.size(2));
}

void mla_kv_split_backward(const Context&, const Tensor& dk, const Tensor& dv, Tensor& dkv,
                           Tensor& dk_rot) {
  const bool codes = dkv.dtype() == DType::bf16;
  ds::cuda::mla_kv_split_backward_f32(dk.f32(), dv.f32(), codes ? nullptr : dkv.f32(),
                                      codes ? dkv.data<uint16_t>() : nullptr, dk_rot.f32(),
                                      dk.size(0), dk.size(1), dk.size(2) - dk_rot.size(1),
                                      dk_rot.size(1), dv.size(2));
}

// ---- SwiGLU --------------------------------------------------------------------------------
// BF16 outputs (codes, the next GEMM's operands) straight from the kernel; with
// DS_CUDA_FUSED=0 the F32 kernel into a temporary, then bf16_round (the two ops it fuses).
void swiglu_forward(const Context&, const Tensor& gate, const Tensor& up, Tensor& out) {
  const int64_t n = gate.numel();
  if (out.dtype() != DType::bf16) {
    ds::cuda::swiglu_forward_f32(gate.f32(), up.f32(), out.f32(), n);
  } else if (ds::cuda::fused_ops()) {
    ds::cuda::swiglu_forward_bf16(gate.f32(), up.f32(), out.data<uint16_t>(), n);
  } else {
    const Tensor t = Tensor::empty(gate.shape(), DType::f32, Device::cuda);
    ds::cuda::swiglu_forward_f32(gate.f32(), up.f32(), t.f32(), n);
    ds::cuda::bf16_round(t.f32(), nullptr, out.data<uint16_t>(), n);
  }
}

void swiglu_backward(const Context&, const Tensor& gate, const Tensor& up, const Tensor& dout,
                     Tensor& dgate, Tensor& dup) {
  const int64_t n = gate.numel();
  if (dgate.dtype() != DType::bf16) {
    ds::cuda::swiglu_backward_f32(gate.f32(), up.f32(), dout.f32(), dgate.f32(), dup.f32(), n);
  } else if (ds::cuda::fused_ops()) {
    ds::cuda::swiglu_backward_bf16(gate.f32(), up.f32(), dout.f32(), dgate.data<uint16_t>(),
                                   dup.data<uint16_t>(), n);
  } else {
    const Tensor tg = Tensor::empty(gate.shape(), DType::f32, Device::cuda);
    const Tensor tu = Tensor::empty(gate.shape(), DType::f32, Device::cuda);
    ds::cuda::swiglu_backward_f32(gate.f32(), up.f32(), dout.f32(), tg.f32(), tu.f32(), n);
    ds::cuda::bf16_round(tg.f32(), nullptr, dgate.data<uint16_t>(), n);
    ds::cuda::bf16_round(tu.f32(), nullptr, dup.data<uint16_t>(), n);
  }
}

// Packed [gate | up] rows: one kernel for F32 and BF16 outputs (the codes as the two-tensor
// kernels write them).
// Inputs F32 or BF16 codes (all alike; checked by lib/ops/swiglu.cpp).
void swiglu_packed_forward(const Context&, const Tensor& h, Tensor& out) {
  ds::cuda::swiglu_packed_forward(h.raw(), h.dtype() == DType::bf16, out.raw(),
                                  out.dtype() == DType::bf16, h.size(0), h.size(1) / 2);
}

void swiglu_packed_backward(const Context&, const Tensor& h, const Tensor& dout, Tensor& dh) {
  ds::cuda::swiglu_packed_backward(h.raw(), dout.raw(), h.dtype() == DType::bf16, dh.raw(),
                                   dh.dtype() == DType::bf16, h.size(0), h.size(1) / 2);
}

// ---- token permutation ---------------------------------------------------------------------
void gather_rows(const Context&, const Tensor& src, const Tensor& rows, Tensor& dst) {
  ds::cuda::gather_rows_f32(src.f32(), src.size(0), rows.i32(), dst.f32(), rows.size(0),
                            src.size(1));
}

void gather_rows_scaled(const Context&, const Tensor& src, const Tensor& rows, const Tensor& w,
                        Tensor& dst) {
  ds::cuda::gather_rows_scaled_f32(src.f32(), src.size(0), rows.i32(), w.f32(), dst.f32(),
                                   rows.size(0), src.size(1));
}

void gather_rows_bf16(const Context&, const Tensor& src, const Tensor& rows, const Tensor& w,
                      Tensor& dst) {
  const bool codes = dst.dtype() == DType::bf16;
  ds::cuda::gather_rows_bf16(src.f32(), src.size(0), rows.i32(), w.defined() ? w.f32() : nullptr,
                             codes ? nullptr : dst.f32(),
                             codes ? dst.data<uint16_t>() : nullptr, rows.size(0), src.size(1));
}

void gather_rows_bf16_dot(const Context&, const Tensor& src, const Tensor& rows,
                          const Tensor& w, const Tensor& b, Tensor& dst, Tensor& dot) {
  const bool codes = dst.dtype() == DType::bf16;
  ds::cuda::gather_rows_bf16_dot(src.f32(), src.size(0), rows.i32(),
                                 w.defined() ? w.f32() : nullptr, b.raw(),
                                 b.dtype() == DType::bf16, dot.f32(),
                                 codes ? nullptr : dst.f32(),
                                 codes ? dst.data<uint16_t>() : nullptr, rows.size(0),
                                 src.size(1));
}

void scatter_add_rows(const Context&, const Tensor& src, const Tensor& rows, const Tensor& w,
                      Tensor& dst) {
  ds::cuda::scatter_add_rows_f32(src.f32(), rows.i32(), w.defined() ? w.f32() : nullptr,
                                 dst.f32(), dst.size(0), src.size(0), src.size(1));
}

void gather_rows_dot(const Context&, const Tensor& a, const Tensor& rows, const Tensor& b,
                     Tensor& out) {
  ds::cuda::gather_rows_dot_f32(a.f32(), a.size(0), rows.i32(), b.f32(), out.f32(), rows.size(0),
                                a.size(1));
}

// (src, dst) F32 -> F32, BF16 -> BF16, F32 -> BF16 (RNE); the dispatcher checked the pair.
void set_rows(const Context&, const Tensor& src, const Tensor& rows, Tensor& dst) {
  const int64_t n_dst = dst.size(0), M = src.size(0), C = src.size(1);
  if (dst.dtype() == DType::f32)
    ds::cuda::set_rows_f32(src.f32(), rows.i32(), dst.f32(), n_dst, M, C);
  else if (src.dtype() == DType::bf16)
    ds::cuda::set_rows_bf16(src.data<uint16_t>(), rows.i32(), dst.data<uint16_t>(), n_dst, M, C);
  else
    ds::cuda::set_rows_f32_bf16(src.f32(), rows.i32(), dst.data<uint16_t>(), n_dst, M, C);
}

// ---- element-wise and reductions -----------------------------------------------------------
void add(const Context&, const Tensor& a, const Tensor& b, Tensor& out) {
  ds::cuda::add_f32(a.f32(), b.f32(), out.f32(), a.numel());
}

void add_(const Context&, Tensor& dst, const Tensor& src) {
  ds::cuda::add_inplace_f32(dst.f32(), src.f32(), dst.numel());
}

void scale_(const Context&, Tensor& x, float s) { ds::cuda::scale_f32(x.f32(), s, x.numel()); }

double sum_squares(const Context&, const Tensor& x) {
  return ds::cuda::sum_squares_f32(x.f32(), x.numel());
}

int64_t count_nonfinite(const Context&, const Tensor& x) {
  return ds::cuda::count_nonfinite_f32(x.f32(), x.numel());
}

double sum(const Context&, const Tensor& x) { return ds::cuda::sum_f32(x.f32(), x.numel()); }

// ---- AdamW ---------------------------------------------------------------------------------
namespace {
ds::cuda::AdamWConsts adamw_consts(const AdamWParams& p) {
  return ds::cuda::adamw_consts(p.lr, p.beta1, p.beta2, p.step, p.weight_decay, p.eps,
                                p.grad_scale);
}
}  // namespace

void adamw_step(const Context&, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                const AdamWParams& p) {
  const bool mb = m.dtype() == DType::bf16, vb = v.dtype() == DType::bf16;
  DS_CHECK(mb || m.dtype() == DType::f32, "adamw_step: m must be F32 or BF16");
  DS_CHECK(vb || v.dtype() == DType::f32, "adamw_step: v must be F32 or BF16");
  ds::cuda::adamw_step_f32(param.f32(), grad.f32(), m.raw(), mb, v.raw(), vb, param.numel(),
                           adamw_consts(p));
}

// ---- many tensors in one launch ------------------------------------------------------------
void adamw_step_multi(const Context&, const std::vector<AdamWTensors>& ts, const AdamWParams& p) {
  if (ts.empty()) return;
  const bool mb = ts[0].m->dtype() == DType::bf16, vb = ts[0].v->dtype() == DType::bf16;
  std::vector<ds::cuda::AdamWEntry> e;
  e.reserve(ts.size());
  std::vector<const AdamWTensors*> f32_operands;   // rounded after the update (not the GPU's form)
  for (const AdamWTensors& t : ts) {
    AdamWParams q = p;
    q.weight_decay = t.weight_decay;
    const bool codes = t.operand && t.operand->dtype() == DType::bf16;
    if (t.operand && !codes) f32_operands.push_back(&t);
    e.push_back({t.param->f32(), t.grad->f32(), t.m->raw(), t.v->raw(), t.param->numel(),
                 adamw_consts(q), codes ? t.operand->data<uint16_t>() : nullptr});
  }
  ds::cuda::adamw_step_multi_f32(e.data(), int(e.size()), mb, vb);
  for (const AdamWTensors* t : f32_operands)
    ds::cuda::bf16_round(t->param->f32(), t->operand->f32(), nullptr, t->param->numel());
}

std::vector<double> sum_squares_multi(const Context&, const std::vector<const Tensor*>& xs) {
  std::vector<const float*> p;
  std::vector<int64_t> n;
  for (const Tensor* x : xs) {
    p.push_back(x->f32());
    n.push_back(x->numel());
  }
  std::vector<double> out(xs.size());
  ds::cuda::sum_squares_multi_f32(p.data(), n.data(), int(xs.size()), out.data());
  return out;
}

void zero_multi(const Context&, const std::vector<Tensor*>& xs) {
  std::vector<void*> p;
  std::vector<int64_t> bytes;
  for (Tensor* x : xs)
    if (x->defined() && x->nbytes() > 0) {
      p.push_back(x->raw());
      bytes.push_back(int64_t(x->nbytes()));
    }
  ds::cuda::zero_multi(p.data(), bytes.data(), int(p.size()));
}

}  // namespace ds::ops::cuda
