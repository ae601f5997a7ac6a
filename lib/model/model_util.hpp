// Internal helpers of lib/model: activation allocation on the context's device, index tensors
// built on the host (routing bookkeeping, shifted targets), a row-wise scale expressed with
// the ops layer, and the FP8 GEMM operands. Not part of the public API.
// reference: llm.c train_gpt2.c (activations as plain buffers sized from B, T, C).
#pragma once
#include <cstdint>
#include <vector>

#include "ds/core/tensor.hpp"
#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"

namespace ds::model::detail {

Tensor empty_f32(const ops::Context& ctx, const Shape& shape);   // uninitialised, ctx.device
Tensor zeros_f32(const ops::Context& ctx, const Shape& shape);
// Index tensor on ctx.device from host values (shape must match vals.size()).
Tensor upload_i32(const ops::Context& ctx, const std::vector<int32_t>& vals, const Shape& shape);
Tensor upload_f32(const ops::Context& ctx, const std::vector<float>& vals, const Shape& shape);
// Host copies of a (possibly device) tensor.
std::vector<int32_t> download_i32(const Tensor& t);
std::vector<float> download_f32(const Tensor& t);

// out (M, C) = w[m] * x[m] for every row (via ops::scatter_add_rows with identity rows).
void scale_rows(const ops::Context& ctx, const Tensor& x /*(M,C)*/, const Tensor& w /*(M)*/,
                Tensor& out /*(M,C)*/);
// sum_m a[m] * b[m] of two (M) vectors, in double (via ops::gather_rows_dot).
double dot(const ops::Context& ctx, const Tensor& a /*(M)*/, const Tensor& b /*(M)*/);

// FP8 GEMM operands (ctx.linear.scale_format; act: the activation amax clamp, see fp8.hpp),
// shared by model::Linear and the grouped experts (moe_fp8.cpp):
// x fake-quantised in groups g: the values an FP8 GEMM sees, F32, same shape (CPU emulation).
Tensor fp8_values(const ops::Context& ctx, const Tensor& x, ops::Fp8Group g, bool act);
// E4M3 codes q (M, K) and scales s of x grouped by g (the GPU's operands).
struct Fp8Codes {
  Tensor q, s;
};
Fp8Codes fp8_codes(const ops::Context& ctx, const Tensor& x, ops::Fp8Group g, bool act);
// The 1x128 codes of x^T (K, M) from x (M, K), x's 128x1 groups (the Wgrad operands along the
// tokens), without an F32 transpose.
Fp8Codes fp8_codes_t(const ops::Context& ctx, const Tensor& x, bool act);
// x (M, K) -> (K, M), same dtype, on ctx.device.
Tensor transposed(const ops::Context& ctx, const Tensor& x);

}  // namespace ds::model::detail
