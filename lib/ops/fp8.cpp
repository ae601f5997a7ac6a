// Dispatch of the FP8 ops (include/ds/ops/fp8.hpp): device check, shape and dtype checks at
// the boundary, then the CUDA path (cuda/fp8.cpp) for GPU tensors, or the reference kernels
// (cpu/ref_fp8.cpp) or the optimised ones (cpu/opt_fp8.cpp) according to Context::impl.
// With Context::prof set, each call's wall time goes to the profiler under the op's name.
#include "ds/ops/fp8.hpp"

#include <algorithm>
#include <chrono>

#include "cpu/fp8_kernels.hpp"
#include "dispatch.hpp"
#include "ds/core/error.hpp"

namespace ds::ops {

namespace {

using detail::check_devices;
using detail::nthreads;
using detail::Scope;
using detail::use_ref;

// (M, K) view of a tensor of >= 1 dims: K the last dim, M the product of the others.
fp8::Layout layout_of(const Tensor& t, Fp8Group g, const char* what) {
  DS_CHECK(t.ndim() >= 1, "{}: expected a tensor of at least one dim, got a scalar", what);
  const int64_t K = t.size(-1);
  int64_t M = 1;
  for (int d = 0; d + 1 < t.ndim(); ++d) M *= t.size(d);
  return fp8::layout(M, K, g);
}

bool is_codes(const Tensor& t) { return t.dtype() == DType::u8 || t.dtype() == DType::f8_e4m3; }

void check_f32(const Tensor& t, const char* what) {
  DS_CHECK(t.dtype() == DType::f32, "{}: expected F32, got {}", what, dtype_name(t.dtype()));
}

void check_scales(const Tensor& s, const fp8::Layout& L, Fp8Group g, const char* what) {
  check_f32(s, what);
  const Shape want = fp8_scale_shape(L.M, L.K, g);
  DS_CHECK(s.shape() == want, "{}: expected scales {} for a ({}, {}) matrix, got {}", what,
           shape_str(want), L.M, L.K, shape_str(s.shape()));
}

}  // namespace

Shape fp8_scale_shape(int64_t M, int64_t K, Fp8Group g) {
  DS_CHECK(M >= 0 && K >= 0, "fp8_scale_shape: negative dims ({}, {})", M, K);
  if (g == Fp8Group::tensor) return {1};
  const fp8::Layout L = fp8::layout(M, K, g);
  return {L.SR, L.SC};
}

void fp8_quantize(const Context& ctx, const Tensor& x, Fp8Group g, ScaleFormat fmt, bool act,
                  Tensor& q, Tensor& scales) {
  check_devices(ctx, "fp8_quantize", {&x, &q, &scales});
  check_f32(x, "fp8_quantize x");
  const fp8::Layout L = layout_of(x, g, "fp8_quantize x");
  if (!q.defined()) q = Tensor::empty(x.shape(), DType::u8, x.device());
  if (!scales.defined())
    scales = Tensor::empty(fp8_scale_shape(L.M, L.K, g), DType::f32, x.device());
  DS_CHECK(is_codes(q) && q.shape() == x.shape(),
           "fp8_quantize: q must be U8/F8_E4M3 {}, got {} {}", shape_str(x.shape()),
           dtype_name(q.dtype()), shape_str(q.shape()));
  check_scales(scales, L, g, "fp8_quantize scales");
  const Scope scope_(ctx, "fp8_quantize", 0, {&x, &q, &scales});
  DS_CUDA_ROUTE(fp8_quantize, (ctx, x, g, fmt, act, q, scales));
  auto* qp = q.data<uint8_t>();
  if (use_ref(ctx)) ref::fp8_quantize(x.f32(), L, fmt, act, qp, scales.f32());
  else opt::fp8_quantize(x.f32(), L, fmt, act, qp, scales.f32(), nthreads(ctx));
}

void fp8_dequantize(const Context& ctx, const Tensor& q, const Tensor& scales, Fp8Group g,
                    Tensor& out) {
  check_devices(ctx, "fp8_dequantize", {&q, &scales, &out});
  DS_CHECK(is_codes(q), "fp8_dequantize: q must be U8 or F8_E4M3, got {}", dtype_name(q.dtype()));
  const fp8::Layout L = layout_of(q, g, "fp8_dequantize q");
  check_scales(scales, L, g, "fp8_dequantize scales");
  if (!out.defined()) out = Tensor::empty(q.shape(), DType::f32, q.device());
  check_f32(out, "fp8_dequantize out");
  DS_CHECK(out.shape() == q.shape(), "fp8_dequantize: out {} differs from q {}",
           shape_str(out.shape()), shape_str(q.shape()));
  const Scope scope_(ctx, "fp8_dequantize", 0, {&q, &scales, &out});
  DS_CUDA_ROUTE(fp8_dequantize, (ctx, q, scales, g, out));
  const auto* qp = q.data<uint8_t>();
  if (use_ref(ctx)) ref::fp8_dequantize(qp, scales.f32(), L, out.f32());
  else opt::fp8_dequantize(qp, scales.f32(), L, out.f32(), nthreads(ctx));
}

void fp8_fake_quant(const Context& ctx, const Tensor& x, Fp8Group g, ScaleFormat fmt, bool act,
                    Tensor& out) {
  check_devices(ctx, "fp8_fake_quant", {&x, &out});
  check_f32(x, "fp8_fake_quant x");
  const fp8::Layout L = layout_of(x, g, "fp8_fake_quant x");
  if (!out.defined()) out = Tensor::empty(x.shape(), DType::f32, x.device());
  check_f32(out, "fp8_fake_quant out");
  DS_CHECK(out.numel() == x.numel(), "fp8_fake_quant: out {} differs from x {}",
           shape_str(out.shape()), shape_str(x.shape()));
  const Scope scope_(ctx, "fp8_fake_quant", 0, {&x, &out});
  DS_CUDA_ROUTE(fp8_fake_quant, (ctx, x, g, fmt, act, out));
  if (use_ref(ctx)) ref::fp8_fake_quant(x.f32(), L, fmt, act, out.f32());
  else opt::fp8_fake_quant(x.f32(), L, fmt, act, out.f32(), nthreads(ctx));
}

void detail::check_bf16_round(const Tensor& x, const Tensor& out) {
  check_f32(x, "bf16_round x");
  DS_CHECK(out.dtype() == DType::f32 || out.dtype() == DType::bf16,
           "bf16_round out: expected F32 or BF16, got {}", dtype_name(out.dtype()));
  DS_CHECK(out.numel() == x.numel(), "bf16_round: out {} differs from x {}",
           shape_str(out.shape()), shape_str(x.shape()));
}

void bf16_round(const Context& ctx, const Tensor& x, Tensor& out) {
  check_devices(ctx, "bf16_round", {&x, &out});
  if (!out.defined()) out = Tensor::empty(x.shape(), DType::f32, x.device());
  detail::check_bf16_round(x, out);
  const Scope scope_(ctx, "bf16_round", 0, {&x, &out});
  DS_CUDA_ROUTE(bf16_round, (ctx, x, out));
  if (out.dtype() == DType::bf16) {   // the codes themselves (BF16 GEMM operands)
    const float* xp = x.f32();
    auto* op = out.data<uint16_t>();
    for (int64_t i = 0; i < x.numel(); ++i) op[i] = f32_to_bf16(xp[i]);
    return;
  }
  if (use_ref(ctx)) ref::bf16_round(x.f32(), out.f32(), x.numel());
  else opt::bf16_round(x.f32(), out.f32(), x.numel(), nthreads(ctx));
}

void fp8_gemm_nt(const Context& ctx, const Tensor& a, const Tensor& a_scales, const Tensor& b,
                 const Tensor& b_scales, Tensor& c, Fp8Group a_group, Fp8Group b_group) {
  check_devices(ctx, "fp8_gemm_nt", {&a, &a_scales, &b, &b_scales, &c});
  DS_CHECK(a_group == Fp8Group::row_1x128 || a_group == Fp8Group::tensor,
           "fp8_gemm_nt: a must be grouped 1x128 or per tensor");
  DS_CHECK(b_group != Fp8Group::col_128x1,
           "fp8_gemm_nt: b must be grouped 128x128, 1x128 or per tensor (NT layout)");
  DS_CHECK(is_codes(a) && is_codes(b), "fp8_gemm_nt: a and b must be E4M3 codes, got {} and {}",
           dtype_name(a.dtype()), dtype_name(b.dtype()));
  DS_CHECK_SHAPE(a, {-1, -1});
  DS_CHECK_SHAPE(b, {-1, a.size(1)});
  const int64_t M = a.size(0), N = b.size(0), K = a.size(1);
  const fp8::Layout la = fp8::layout(M, K, a_group), lb = fp8::layout(N, K, b_group);
  check_scales(a_scales, la, a_group, "fp8_gemm_nt a_scales");
  check_scales(b_scales, lb, b_group, "fp8_gemm_nt b_scales");
  if (!c.defined()) c = Tensor::empty({M, N}, DType::f32, a.device());
  check_f32(c, "fp8_gemm_nt c");
  DS_CHECK_SHAPE(c, {M, N});
  const Scope scope_(ctx, "fp8_gemm_nt", 2.0 * double(M) * double(N) * double(K),
                     {&a, &a_scales, &b, &b_scales, &c});
  DS_CUDA_ROUTE(fp8_gemm_nt, (ctx, a, a_scales, b, b_scales, c, a_group, b_group));
  const auto *ap = a.data<uint8_t>(), *bp = b.data<uint8_t>();
  if (use_ref(ctx)) ref::fp8_gemm_nt(ap, a_scales.f32(), la, bp, b_scales.f32(), lb, c.f32());
  else opt::fp8_gemm_nt(ap, a_scales.f32(), la, bp, b_scales.f32(), lb, c.f32(), nthreads(ctx));
}

}  // namespace ds::ops
