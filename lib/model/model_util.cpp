// Internal helpers of lib/model (see model_util.hpp): device-aware allocation, host index
// tensors, two small compositions of ops (row scaling, dot product), FP8 GEMM operands.
#include "model_util.hpp"

#include <numeric>

#include "ds/core/error.hpp"

namespace ds::model::detail {

Tensor empty_f32(const ops::Context& ctx, const Shape& shape) {
  return Tensor::empty(shape, DType::f32, ctx.device);
}

Tensor zeros_f32(const ops::Context& ctx, const Shape& shape) {
  return Tensor::zeros(shape, DType::f32, ctx.device);
}

template <class V>
static Tensor upload(const ops::Context& ctx, const std::vector<V>& vals, const Shape& shape,
                     DType dt) {
  DS_CHECK(shape_numel(shape) == int64_t(vals.size()), "upload: {} values for shape {}",
           vals.size(), shape_str(shape));
  Tensor host = Tensor::borrow(const_cast<V*>(vals.data()), shape, dt);
  Tensor t = Tensor::empty(shape, dt, ctx.device);
  t.copy_from(host);
  return t;
}

Tensor upload_i32(const ops::Context& ctx, const std::vector<int32_t>& vals, const Shape& shape) {
  return upload(ctx, vals, shape, DType::i32);
}

Tensor upload_f32(const ops::Context& ctx, const std::vector<float>& vals, const Shape& shape) {
  return upload(ctx, vals, shape, DType::f32);
}

template <class V>
static std::vector<V> download(const Tensor& t, DType dt) {
  DS_CHECK(t.dtype() == dt, "download: unexpected dtype");
  std::vector<V> out(size_t(t.numel()));
  if (out.empty()) return out;
  Tensor host = Tensor::borrow(out.data(), t.shape(), dt);
  host.copy_from(t);
  return out;
}

std::vector<int32_t> download_i32(const Tensor& t) { return download<int32_t>(t, DType::i32); }
std::vector<float> download_f32(const Tensor& t) { return download<float>(t, DType::f32); }

void scale_rows(const ops::Context& ctx, const Tensor& x, const Tensor& w, Tensor& out) {
  const int64_t M = x.size(0);
  std::vector<int32_t> iota(static_cast<size_t>(M));
  std::iota(iota.begin(), iota.end(), 0);
  out.zero_();
  ops::scatter_add_rows(ctx, x, upload_i32(ctx, iota, {M}), w, out);
}

double dot(const ops::Context& ctx, const Tensor& a, const Tensor& b) {
  const int64_t M = a.numel();
  DS_CHECK(b.numel() == M, "dot: sizes {} and {}", M, b.numel());
  if (M == 0) return 0.0;
  Tensor out = empty_f32(ctx, {1});
  ops::gather_rows_dot(ctx, a.view({1, M}), upload_i32(ctx, {0}, {1}), b.view({1, M}), out);
  return double(download_f32(out)[0]);
}

Tensor fp8_values(const ops::Context& ctx, const Tensor& x, ops::Fp8Group g, bool act) {
  Tensor out = empty_f32(ctx, x.shape());
  ops::fp8_fake_quant(ctx, x, g, ctx.linear.scale_format, act, out);
  return out;
}

Fp8Codes fp8_codes(const ops::Context& ctx, const Tensor& x, ops::Fp8Group g, bool act) {
  Fp8Codes c;
  ops::fp8_quantize(ctx, x, g, ctx.linear.scale_format, act, c.q, c.s);
  return c;
}

Fp8Codes fp8_codes_t(const ops::Context& ctx, const Tensor& x, bool act) {
  Fp8Codes c;
  ops::fp8_quantize_transposed(ctx, x, ctx.linear.scale_format, act, c.q, c.s);
  return c;
}

Tensor transposed(const ops::Context& ctx, const Tensor& x) {
  Tensor t = Tensor::empty({x.size(1), x.size(0)}, x.dtype(), ctx.device);
  ops::transpose(ctx, x, t);
  return t;
}

}  // namespace ds::model::detail
