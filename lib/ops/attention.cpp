// Causal / segment-masked attention of the training path (include/ds/ops/ops.hpp): shape and
// dtype checks, then the CUDA kernels (lib/ops/cuda/attention.cpp) or the CPU reference /
// optimised loops. q, k, v are F32 or BF16 codes: the codes are the values the GPU's
// tensor-core kernels read, written by their producers (ops::attention_bf16_inputs says when);
// the CPU widens them and runs its FP32 attention on those values.
#include <cstring>

#include "cpu/opt.hpp"
#include "cpu/ref.hpp"
#include "dispatch.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/ops.hpp"

#if defined(DS_HAVE_CUDA)
#include "kernels/flash_attention.cuh"
#include "kernels/runtime.cuh"
#endif

namespace ds::ops {

using detail::check_devices;
using detail::nthreads;
using detail::Scope;
using detail::use_ref;

namespace {

ref::AttnDims check_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& segments) {
  DS_CHECK_SHAPE(q, {-1, -1, -1, -1});
  ref::AttnDims d{q.size(0), q.size(1), q.size(2), q.size(3), 0};
  DS_CHECK_SHAPE(k, {d.B, d.T, d.H, d.Dk});
  DS_CHECK_SHAPE(v, {d.B, d.T, d.H, -1});
  d.Dv = v.size(3);
  DS_CHECK(d.Dk > 0 && d.Dv > 0, "attention: empty head dims Dk {} Dv {}", d.Dk, d.Dv);
  if (segments.defined()) DS_CHECK_SHAPE(segments, {d.B, d.T});
  const DType t = q.dtype();
  DS_CHECK((t == DType::f32 || t == DType::bf16) && k.dtype() == t && v.dtype() == t,
           "attention: q, k, v must be all F32 or all BF16 codes (got {}, {}, {})",
           dtype_name(q.dtype()), dtype_name(k.dtype()), dtype_name(v.dtype()));
  return d;
}

// A CPU copy of x as F32: x itself, or BF16 codes widened (exactly).
Tensor f32_values(const Tensor& x) {
  if (x.dtype() == DType::f32) return x;
  Tensor w = Tensor::empty(x.shape());
  const auto* c = x.data<uint16_t>();
  float* f = w.f32();
  for (int64_t i = 0; i < x.numel(); ++i) f[i] = bf16_to_f32(c[i]);
  return w;
}

}  // namespace

bool attention_bf16_inputs(const Context& ctx, int64_t Dk, int64_t Dv) {
  if (ctx.attention_inputs >= 0) return ctx.attention_inputs == 1;
  if (ctx.device != Device::cuda || ctx.linear.mode == Precision::fp32 || ctx.exact_attention)
    return false;
#if defined(DS_HAVE_CUDA)
  return ds::cuda::fused_ops() && ds::cuda::attention_tc_supported(Dk, Dv);
#else
  (void)Dk;
  (void)Dv;
  return false;
#endif
}

void attention_forward(const Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& segments, float scale, Tensor& out, Tensor& lse) {
  check_devices(ctx, "attention_forward", {&q, &k, &v, &segments, &out, &lse});
  const Scope scope_(ctx, "attention_forward", 0, {&q, &k, &v, &segments, &out, &lse});
  const ref::AttnDims d = check_attention(q, k, v, segments);
  DS_CHECK_SHAPE(out, {d.B, d.T, d.H, d.Dv});
  DS_CHECK_SHAPE(lse, {d.B, d.H, d.T});
  DS_CUDA_ROUTE(attention_forward, (ctx, q, k, v, segments, scale, out, lse));
  const int32_t* seg = segments.defined() ? segments.i32() : nullptr;
  const Tensor qf = f32_values(q), kf = f32_values(k), vf = f32_values(v);
  if (use_ref(ctx))
    ref::attention_forward(qf.f32(), kf.f32(), vf.f32(), seg, double(scale), out.f32(),
                           lse.f32(), d);
  else
    opt::attention_forward(qf.f32(), kf.f32(), vf.f32(), seg, scale, out.f32(), lse.f32(), d,
                           nthreads(ctx));
}

void attention_backward(const Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& segments, float scale, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv) {
  check_devices(ctx, "attention_backward",
                {&q, &k, &v, &segments, &out, &lse, &dout, &dq, &dk, &dv});
  const Scope scope_(ctx, "attention_backward", 0,
                     {&q, &k, &v, &segments, &out, &lse, &dout, &dq, &dk, &dv});
  const ref::AttnDims d = check_attention(q, k, v, segments);
  DS_CHECK_SHAPE(out, {d.B, d.T, d.H, d.Dv});
  DS_CHECK_SHAPE(lse, {d.B, d.H, d.T});
  DS_CHECK_SHAPE(dout, {d.B, d.T, d.H, d.Dv});
  DS_CHECK_SHAPE(dq, {d.B, d.T, d.H, d.Dk});
  DS_CHECK_SHAPE(dk, {d.B, d.T, d.H, d.Dk});
  DS_CHECK_SHAPE(dv, {d.B, d.T, d.H, d.Dv});
  DS_CUDA_ROUTE(attention_backward, (ctx, q, k, v, segments, scale, out, lse, dout, dq, dk, dv));
  const int32_t* seg = segments.defined() ? segments.i32() : nullptr;
  const Tensor qf = f32_values(q), kf = f32_values(k), vf = f32_values(v);
  if (use_ref(ctx))
    ref::attention_backward(qf.f32(), kf.f32(), vf.f32(), seg, double(scale), out.f32(),
                            lse.f32(), dout.f32(), dq.f32(), dk.f32(), dv.f32(), d);
  else
    opt::attention_backward(qf.f32(), kf.f32(), vf.f32(), seg, scale, out.f32(), lse.f32(),
                            dout.f32(), dq.f32(), dk.f32(), dv.f32(), d, nthreads(ctx));
}

}  // namespace ds::ops
