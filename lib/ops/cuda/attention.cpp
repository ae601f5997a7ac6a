// CUDA path of the attention ops (lib/ops/cuda/ops_cuda.hpp): causal / segment-masked
// attention forward and backward (kernels/flash_attention_{simt,tc}.cu), the per-head matmul
// and the absorbed-MLA latent attention of inference (kernels/mla_decode.cu over an F32 cache,
// kernels/mla_decode_tc.cu on BF16 tensor cores over a BF16 cache). The dispatchers in ops.cpp /
// mla_decode.cpp have checked shapes; here: dtypes, then raw pointers.
// Precision: ctx.linear.mode == fp32 runs the exact FP32 kernels; bf16 / fp8 run the BF16
// tensor-core kernels (FP32 softmax and accumulation) when the head dims allow (multiples of
// 16, Dk <= 192, Dv <= 128), else the exact ones. q, k, v F32, or BF16 codes (the tensor-core
// kernels' operands, ops::attention_bf16_inputs), widened to F32 first where the kernels cannot
// read them as they are (misaligned; the exact kernels).
#include <cstdint>

#include "ds/core/error.hpp"
#include "kernels/flash_attention.cuh"
#include "kernels/gemm.cuh"
#include "kernels/mla_decode.cuh"
#include "ops_cuda.hpp"

namespace ds::ops::cuda {

namespace {

void check_f32(const char* op, std::initializer_list<const Tensor*> ts) {
  int i = 0;
  for (const Tensor* t : ts) {
    DS_CHECK(t->dtype() == DType::f32, "{}: operand {} must be F32 on the GPU (got {})", op, i,
             dtype_name(t->dtype()));
    ++i;
  }
}

ds::cuda::AttnShape attn_shape(const char* op, const Tensor& q, const Tensor& v,
                               const Tensor& segments) {
  if (segments.defined())
    DS_CHECK(segments.dtype() == DType::i32, "{}: segments must be I32", op);
  const ds::cuda::AttnShape s{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3)};
  DS_CHECK(s.T < (int64_t(1) << 30) && s.B * s.H <= 65535,   // grid.y = B*H
           "{}: T {} / B*H {} too large for the CUDA kernels", op, s.T, s.B * s.H);
  return s;
}

// The tensor-core kernels when the Linear precision is reduced (and Context::exact_attention
// is off) and the dims allow; the exact kernels must then fit, whichever is chosen (they are
// the fallback).
bool use_tensor_cores(const Context& ctx, const char* op, const ds::cuda::AttnShape& s) {
  const bool tc = ctx.linear.mode != Precision::fp32 && !ctx.exact_attention &&
                  ds::cuda::attention_tc_supported(s.Dk, s.Dv);
  if (!tc)
    DS_CHECK(ds::cuda::attention_simt_supported(s.Dk, s.Dv),
             "{}: head dims Dk {} Dv {} too large for the CUDA kernels", op, s.Dk, s.Dv);
  return tc;
}

// q, k, v for the kernels: BF16 codes as they are where the tensor-core kernels can read them,
// else F32 (BF16 codes widened exactly into temporaries: misaligned codes, the exact kernels).
struct QKV {
  Tensor q, k, v;
  ds::cuda::AttnQKV in;
};

QKV qkv_for(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
            const ds::cuda::AttnShape& s, bool tc) {
  const bool bf16 = q.dtype() == DType::bf16;
  for (const Tensor* t : {&q, &k, &v})
    DS_CHECK(t->dtype() == (bf16 ? DType::bf16 : DType::f32),
             "{}: q, k, v must be all F32 or all BF16 on the GPU", op);
  QKV r{q, k, v, {q.raw(), k.raw(), v.raw(), bf16}};
  if (bf16 && !ds::cuda::attention_tc_runs(r.in, s, tc)) {
    for (Tensor* t : {&r.q, &r.k, &r.v}) {
      Tensor w = Tensor::empty(t->shape(), DType::f32, Device::cuda);
      ds::cuda::bf16_codes_to_f32(t->data<uint16_t>(), w.f32(), t->numel());
      *t = w;
    }
    r.in = {r.q.raw(), r.k.raw(), r.v.raw(), false};
  }
  return r;
}

}  // namespace

void attention_forward(const Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& segments, float scale, Tensor& out, Tensor& lse) {
  check_f32("attention_forward", {&out, &lse});
  const auto s = attn_shape("attention_forward", q, v, segments);
  const bool tc = use_tensor_cores(ctx, "attention_forward", s);
  const QKV in = qkv_for("attention_forward", q, k, v, s, tc);
  ds::cuda::attention_forward(in.in, segments.defined() ? segments.i32() : nullptr, scale,
                              out.f32(), lse.f32(), s, tc);
}

void attention_backward(const Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& segments, float scale, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv) {
  check_f32("attention_backward", {&out, &lse, &dout, &dq, &dk, &dv});
  const auto s = attn_shape("attention_backward", q, v, segments);
  const bool tc = use_tensor_cores(ctx, "attention_backward", s);
  QKV in = qkv_for("attention_backward", q, k, v, s, tc);
  if (in.in.bf16 && (reinterpret_cast<uintptr_t>(dout.raw()) & 15u) != 0) {
    // the tensor-core backward also needs dout aligned: widen, as for the exact kernels
    in = qkv_for("attention_backward", q, k, v, s, false);
  }
  ds::cuda::attention_backward(in.in, segments.defined() ? segments.i32() : nullptr, scale,
                               out.f32(), lse.f32(), dout.f32(), dq.f32(), dk.f32(), dv.f32(), s,
                               tc);
}

void head_matmul(const Context& ctx, const Tensor& x, const Tensor& w, bool trans_w, Tensor& y) {
  (void)ctx;
  check_f32("head_matmul", {&x, &w, &y});
  const int64_t N = x.size(0), H = x.size(1), I = x.size(2), O = y.size(2);
  DS_CHECK(N < (int64_t(1) << 31) && H * I < (int64_t(1) << 31) && H * O < (int64_t(1) << 31),
           "head_matmul: {} too large for cuBLAS int sizes", shape_str(x.shape()));
  ds::cuda::head_matmul(x.f32(), w.f32(), trans_w, y.f32(), N, H, I, O);
}

// F32 cache: the exact FP32 kernel; BF16 cache: the tensor-core kernel (mla_decode_tc.cu),
// whatever the context's precision (the cache dtype is the choice).
void mla_latent_attention(const Context& ctx, const Tensor& q_lat, const Tensor& q_pe,
                          const Tensor& ckv, const Tensor& kpe, const Tensor& slot,
                          const Tensor& len, float scale, Tensor& out) {
  (void)ctx;
  const ds::cuda::MlaShape s{q_lat.size(0), q_lat.size(1), q_lat.size(2), q_pe.size(2),
                             ckv.size(0),   ckv.size(1)};
  DS_CHECK(s.N < (int64_t(1) << 31) && s.H < 65536 * 16 && s.L < (int64_t(1) << 31),
           "mla_latent_attention: sizes too large for the CUDA kernel");
  if (ckv.dtype() != DType::bf16 || kpe.dtype() != DType::bf16) {
    check_f32("mla_latent_attention", {&q_lat, &q_pe, &ckv, &kpe, &out});
    ds::cuda::mla_latent_attention(q_lat.f32(), q_pe.f32(), ckv.f32(), kpe.f32(), slot.i32(),
                                   len.i32(), scale, out.f32(), s);
    return;
  }
  check_f32("mla_latent_attention", {&q_lat, &q_pe, &out});
  DS_CHECK(ds::cuda::mla_bf16_supported(s.R, s.Dr),
           "mla_latent_attention: a BF16 cache on the GPU needs R and Dr multiples of 16 "
           "(R + Dr up to ~1300; got R {}, Dr {})", s.R, s.Dr);
  const auto aligned16 = [](const Tensor& t) {
    return (reinterpret_cast<uintptr_t>(t.data<uint16_t>()) & 15) == 0;
  };
  DS_CHECK(aligned16(ckv) && aligned16(kpe),
           "mla_latent_attention: BF16 cache ckv / kpe must be 16-byte aligned on the GPU");
  DS_CHECK(s.N * ((s.H + 15) / 16) * ((s.R + 511) / 512) < (int64_t(1) << 31) &&
               s.L < (int64_t(1) << 30),
           "mla_latent_attention: N {} x H {} or L {} too large for the BF16 CUDA kernel", s.N,
           s.H, s.L);
  ds::cuda::mla_latent_attention_bf16(q_lat.f32(), q_pe.f32(), ckv.data<uint16_t>(),
                                      kpe.data<uint16_t>(), slot.i32(), len.i32(), scale,
                                      out.f32(), s);
}

}  // namespace ds::ops::cuda
