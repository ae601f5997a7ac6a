// SwiGLU (include/ds/ops/ops.hpp): out = silu(gate) * up on two (N, I) tensors, or packed on
// the (N, 2I) output of one GEMM over stacked [gate_proj; up_proj] weights ([gate | up] per
// row). Shape and dtype checks, then the CUDA kernels (lib/ops/cuda/elementwise.cpp) or the
// CPU reference / optimised loops. The packed ops compute each element as the two-tensor ops
// do, row by row.
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "cpu/opt.hpp"
#include "cpu/ref.hpp"
#include "dispatch.hpp"
#include "ds/core/env.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/ops.hpp"

#if defined(DS_HAVE_CUDA)
#include "kernels/runtime.cuh"
#endif

namespace ds::ops {

using detail::check_devices;
using detail::f32_target;
using detail::f32_values;
using detail::nthreads;
using detail::Scope;
using detail::store_codes;
using detail::use_ref;

namespace {
// F32 inputs (packed: all F32, or all BF16 codes: a BF16-output GEMM's); outputs all F32, or
// all BF16 (the results' codes, the next GEMM's operands).
void check_swiglu(const char* op, std::initializer_list<const Tensor*> in,
                  std::initializer_list<const Tensor*> out, bool bf16_in = false) {
  const DType di = (*in.begin())->dtype();
  for (const Tensor* t : in)
    DS_CHECK(t->dtype() == di && (di == DType::f32 || (bf16_in && di == DType::bf16)),
             "{}: inputs must be {}, got {}", op, bf16_in ? "all F32 or all BF16" : "F32",
             dtype_name(t->dtype()));
  const DType d = (*out.begin())->dtype();
  for (const Tensor* t : out)
    DS_CHECK(t->dtype() == d && (d == DType::f32 || d == DType::bf16),
             "{}: outputs must be all F32 or all BF16, got {}", op, dtype_name(t->dtype()));
}

// h (N, 2I): the half width I.
int64_t packed_width(const Tensor& h, const char* op) {
  DS_CHECK(h.ndim() == 2 && h.size(1) % 2 == 0, "{}: h must be (N, 2I), got {}", op,
           shape_str(h.shape()));
  return h.size(1) / 2;
}
}  // namespace

void swiglu_forward(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& out) {
  check_devices(ctx, "swiglu_forward", {&gate, &up, &out});
  const Scope scope_(ctx, "swiglu_forward", 0, {&gate, &up, &out});
  DS_CHECK_SHAPE(up, gate.shape());
  DS_CHECK_SHAPE(out, gate.shape());
  check_swiglu("swiglu_forward", {&gate, &up}, {&out});
  DS_CUDA_ROUTE(swiglu_forward, (ctx, gate, up, out));
  const Tensor o = f32_target(out);
  if (use_ref(ctx)) ref::swiglu_forward(gate.f32(), up.f32(), o.f32(), gate.numel());
  else opt::swiglu_forward(gate.f32(), up.f32(), o.f32(), gate.numel(), nthreads(ctx));
  store_codes(o, out);
}

void swiglu_backward(const Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& dout,
                     Tensor& dgate, Tensor& dup) {
  check_devices(ctx, "swiglu_backward", {&gate, &up, &dout, &dgate, &dup});
  const Scope scope_(ctx, "swiglu_backward", 0, {&gate, &up, &dout, &dgate, &dup});
  for (const Tensor* t : std::initializer_list<const Tensor*>{&up, &dout, &dgate, &dup})
    check_shape(*t, gate.shape(), "swiglu operand");
  check_swiglu("swiglu_backward", {&gate, &up, &dout}, {&dgate, &dup});
  DS_CUDA_ROUTE(swiglu_backward, (ctx, gate, up, dout, dgate, dup));
  const Tensor dg = f32_target(dgate), du = f32_target(dup);
  if (use_ref(ctx))
    ref::swiglu_backward(gate.f32(), up.f32(), dout.f32(), dg.f32(), du.f32(), gate.numel());
  else
    opt::swiglu_backward(gate.f32(), up.f32(), dout.f32(), dg.f32(), du.f32(), gate.numel(),
                         nthreads(ctx));
  store_codes(dg, dgate);
  store_codes(du, dup);
}

// DS_STACKED_GATE_UP=0 turns the auto setting off (before/after comparisons of whole runs);
// unset or 1 leaves it on; anything else is a usage error naming the variable.
bool stacked_env() {
  static const bool on = env_choice("DS_STACKED_GATE_UP", {"1", "0"}) == "1";
  return on;
}
const EnvCheck kStackedEnv([] { (void)stacked_env(); });

bool use_stacked_gate_up(const Context& ctx) {
  if (ctx.stacked_gate_up >= 0) return ctx.stacked_gate_up == 1;
  if (!stacked_env()) return false;
#if defined(DS_HAVE_CUDA)
  if (ctx.device == Device::cuda) return ds::cuda::fused_ops();
#endif
  return true;
}

void swiglu_packed_forward(const Context& ctx, const Tensor& h, Tensor& out) {
  check_devices(ctx, "swiglu_packed_forward", {&h, &out});
  const Scope scope_(ctx, "swiglu_packed_forward", 0, {&h, &out});
  const int64_t I = packed_width(h, "swiglu_packed_forward"), N = h.size(0);
  DS_CHECK_SHAPE(out, {N, I});
  check_swiglu("swiglu_packed_forward", {&h}, {&out}, true);
  DS_CUDA_ROUTE(swiglu_packed_forward, (ctx, h, out));
  const Tensor o = f32_target(out), hf = f32_values(h);
  const float* hp = hf.f32();
  if (use_ref(ctx)) {
    for (int64_t r = 0; r < N; ++r)
      ref::swiglu_forward(hp + r * 2 * I, hp + r * 2 * I + I, o.f32() + r * I, I);
  } else {
    opt::swiglu_packed_forward(hp, o.f32(), N, I, nthreads(ctx));
  }
  store_codes(o, out);
}

void swiglu_packed_backward(const Context& ctx, const Tensor& h, const Tensor& dout,
                            Tensor& dh) {
  check_devices(ctx, "swiglu_packed_backward", {&h, &dout, &dh});
  const Scope scope_(ctx, "swiglu_packed_backward", 0, {&h, &dout, &dh});
  const int64_t I = packed_width(h, "swiglu_packed_backward"), N = h.size(0);
  DS_CHECK_SHAPE(dout, {N, I});
  DS_CHECK_SHAPE(dh, {N, 2 * I});
  check_swiglu("swiglu_packed_backward", {&h, &dout}, {&dh}, true);
  DS_CUDA_ROUTE(swiglu_packed_backward, (ctx, h, dout, dh));
  const Tensor d = f32_target(dh), hf = f32_values(h), df = f32_values(dout);
  const float *hp = hf.f32(), *dp = df.f32();
  float* gp = d.f32();
  if (use_ref(ctx)) {
    for (int64_t r = 0; r < N; ++r)
      ref::swiglu_backward(hp + r * 2 * I, hp + r * 2 * I + I, dp + r * I, gp + r * 2 * I,
                           gp + r * 2 * I + I, I);
  } else {
    opt::swiglu_packed_backward(hp, dp, gp, N, I, nthreads(ctx));
  }
  store_codes(d, dh);
}

}  // namespace ds::ops
