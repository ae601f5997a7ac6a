// Linear layer without bias and the parameter-registration helpers (see linear.hpp), with the
// GEMM precisions of training (ops::Context::linear): fp32; bf16 (every GEMM input rounded to
// BF16); fp8, DeepSeek-V3's recipe, emulated on the CPU by fake-quantising each operand to
// exact E4M3 values times FP32 scales and running the FP32 GEMM (docs/model.md "Precision").
// On the GPU the same numbers go through real low-precision GEMMs: BF16 codes into cuBLAS
// (FP32 accumulation), and E4M3 codes + scales into ops::fp8_gemm_nt (FP32 promotion every
// 128 of K): a weight's codes of both orientations from one fp8_quantize_blocks_multi (kept
// for the step in the operand cache), the Wgrad operands from fp8_quantize_transposed.
// reference: DeepSeek-V3 inference/model.py Linear (y = x W^T), HF nn.Linear layout;
// DeepSeek-V3 paper §3.3 (Fprop / Dgrad / Wgrad quantisation) and App. B.
#include "ds/model/linear.hpp"

#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "model_util.hpp"

namespace ds::model {

namespace {

enum class Path : uint8_t { fp32, bf16, fp8 };

// fp8 applies to the Linears flagged FP8 (ParamInfo::fp8); the others run as bf16.
Path path_of(const ops::Context& ctx, const Param& w) {
  switch (ctx.linear.mode) {
    case ops::Precision::fp32: return Path::fp32;
    case ops::Precision::bf16: return Path::bf16;
    case ops::Precision::fp8: return w.info.fp8 ? Path::fp8 : Path::bf16;
  }
  return Path::fp32;
}

bool tiles(const ops::Context& ctx) { return ctx.linear.granularity == ops::Fp8Granularity::tile; }
// Activations and activation gradients along the GEMM's K: 1x128 tiles.
ops::Fp8Group act_group(const ops::Context& ctx) {
  return tiles(ctx) ? ops::Fp8Group::row_1x128 : ops::Fp8Group::tensor;
}
// Weights: 128x128 blocks (the same blocks serve W in Fprop and W^T in Dgrad).
ops::Fp8Group weight_group(const ops::Context& ctx) {
  return tiles(ctx) ? ops::Fp8Group::block_128x128 : ops::Fp8Group::tensor;
}
// Wgrad operands, K = tokens: 128x1 tiles of dy (N, out) and of the cached input (N, in).
ops::Fp8Group wgrad_group(const ops::Context& ctx) {
  return tiles(ctx) ? ops::Fp8Group::col_128x1 : ops::Fp8Group::tensor;
}

// FP8 operands (model_util.hpp): act = the activation amax clamp (>= 1e-4) of act_quant;
// weights and gradients use the plain amax (gradients are small: with the loss averaged over a
// batch a clamp would cost them precision), a zero group getting scale 1.
using detail::fp8_codes;
using detail::fp8_values;
using detail::transposed;
using Fp8Operand = detail::Fp8Codes;

// On the CPU the BF16-rounded values in F32 (its GEMM is FP32); on the GPU the BF16 codes
// themselves, which the cuBLAS BF16 GEMM reads (the same values, half the bytes).
// A gemm_input (BF16 codes) is such an operand already; the CPU widens it (exactly) to the F32
// values its GEMM reads.
Tensor bf16_values(const ops::Context& ctx, const Tensor& x) {
  if (x.dtype() == DType::bf16) {
    if (ctx.device != Device::cpu) return x;
    Tensor out = detail::empty_f32(ctx, x.shape());
    const uint16_t* xp = x.data<uint16_t>();
    float* op = out.f32();
    for (int64_t i = 0; i < x.numel(); ++i) op[i] = bf16_to_f32(xp[i]);
    return out;
  }
  Tensor out = ctx.device == Device::cpu ? detail::empty_f32(ctx, x.shape())
                                         : Tensor::empty(x.shape(), DType::bf16, ctx.device);
  ops::bf16_round(ctx, x, out);
  return out;
}

// The BF16 operand of a weight: from the step's operand cache when the context has one (the
// weights do not change between the forward and backward passes; see ops::OperandCache).
Tensor bf16_weight(const ops::Context& ctx, const Tensor& w) {
  if (!ctx.operands) return bf16_values(ctx, w);
  // bound to w: an optimizer step rewrites it in place (OperandCache::refresh_plan)
  return ctx.operands->get(
      w, 0, [&] { return std::vector<Tensor>{bf16_values(ctx, w)}; },
      [&](const std::vector<Tensor>& e) {
        return std::vector<ops::OperandCache::Binding>{{w.raw(), w.numel(), e[0]}};
      })[0];
}

// The FP8 operand of a weight on the GPU: its 128x128-block codes for Fprop (transposed
// false) or those of W^T for Dgrad (true). With tile scaling both come from one
// fp8_quantize_blocks_multi (W^T's blocks are W's, transposed: the same scales, so no F32
// transpose), kept for the step in the operand cache when the context has one (the weights do
// not change between the passes); bit for bit fp8_quantize of W, or of transpose(W).
Fp8Operand fp8_weight(const ops::Context& ctx, const Tensor& w, bool transposed_w) {
  if (!tiles(ctx))
    return fp8_codes(ctx, transposed_w ? transposed(ctx, w) : w, weight_group(ctx), false);
  const int64_t R = w.size(0), K = w.size(1);
  const Shape ss = ops::fp8_scale_shape(R, K, ops::Fp8Group::block_128x128);
  auto make = [&](bool plain, bool trans) {
    std::vector<Tensor> v(4);   // q, s, qt, st
    std::vector<Tensor*> q, s, qt, st;
    if (plain) {
      v[0] = Tensor::empty({R, K}, DType::u8, ctx.device);
      v[1] = Tensor::empty(ss, DType::f32, ctx.device);
      q = {&v[0]};
      s = {&v[1]};
    }
    if (trans) {
      v[2] = Tensor::empty({K, R}, DType::u8, ctx.device);
      v[3] = Tensor::empty({ss[1], ss[0]}, DType::f32, ctx.device);
      qt = {&v[2]};
      st = {&v[3]};
    }
    ops::fp8_quantize_blocks_multi(ctx, {&w}, ctx.linear.scale_format, q, s, qt, st);
    return v;
  };
  const std::vector<Tensor> v =
      ctx.operands ? ctx.operands->get(w, 1, [&] { return make(true, true); })
                   : make(!transposed_w, transposed_w);
  return transposed_w ? Fp8Operand{v[2], v[3]} : Fp8Operand{v[0], v[1]};
}

// c (M, N) = A B^T through the FP8 GEMM; a grouped 1x128 (or per tensor), b by b_group.
void fp8_nt(const ops::Context& ctx, const Fp8Operand& a, const Fp8Operand& b,
            ops::Fp8Group b_group, Tensor& c) {
  const ops::Fp8Group ag = tiles(ctx) ? ops::Fp8Group::row_1x128 : ops::Fp8Group::tensor;
  ops::fp8_gemm_nt(ctx, a.q, a.s, b.q, b.s, c, ag, tiles(ctx) ? b_group : ops::Fp8Group::tensor);
}

// The GPU FP8 Linear backward: the numbers of the CPU emulation below, with the 128x1 tiles
// realised as 1x128 tiles of the transposed operands (the same groups of elements). With tile
// scaling dy's two quantisations come from one fp8_quantize_dual, and the input's Wgrad
// operand from fp8_requantize_transposed (the forward's 1x128 values, quantised 128x1), so
// that on the GPU each reads its input once (DS_FP8_QUANT=tiles).
void fp8_backward_gpu(const ops::Context& ctx, const Param& w, const Tensor& x, const Tensor& dy,
                      Tensor& dx, bool want_dx) {
  const bool t = tiles(ctx);
  const ops::Fp8Group row = t ? ops::Fp8Group::row_1x128 : ops::Fp8Group::tensor;
  const ops::ScaleFormat fmt = ctx.linear.scale_format;
  Fp8Operand a;   // Wgrad's dy^T
  if (want_dx) {   // Dgrad: dx (N, in) = Q(dy) (N, out) . Q(W^T) (in, out)^T
    Fp8Operand ad;
    if (t) ops::fp8_quantize_dual(ctx, dy, fmt, false, ad.q, ad.s, a.q, a.s);
    else ad = fp8_codes(ctx, dy, row, false);
    const Fp8Operand b = fp8_weight(ctx, w.value, true);
    fp8_nt(ctx, ad, b, ops::Fp8Group::block_128x128, dx);
  } else if (t) {
    a = detail::fp8_codes_t(ctx, dy, false);
  }
  // Wgrad: dW (out, in) += Q(dy^T) (out, N) . Q(Xc^T) (in, N)^T, K = tokens, where Xc holds
  // the values the forward's quantisation gave x.
  Fp8Operand b;
  if (t) {
    ops::fp8_requantize_transposed(ctx, x, fmt, true, b.q, b.s);
  } else {
    Tensor xc = detail::empty_f32(ctx, x.shape());
    ops::fp8_fake_quant(ctx, x, row, fmt, true, xc);
    a = fp8_codes(ctx, transposed(ctx, dy), row, false);
    b = fp8_codes(ctx, transposed(ctx, xc), row, true);
  }
  if (t && ops::gemm_accumulates(ctx)) {   // both 1x128 along the tokens: added into the
    // gradient by the k-grouped GEMM with one group (the plain GEMM's sum, then one add; no
    // temporary)
    std::vector<Tensor> g{w.grad};
    ops::fp8_gemm_nt_kgrouped(ctx, a.q, a.s, b.q, b.s, {0, x.size(0)}, g);
    return;
  }
  Tensor dw = detail::empty_f32(ctx, w.grad.shape());
  fp8_nt(ctx, a, b, ops::Fp8Group::row_1x128, dw);
  Tensor g = w.grad;
  ops::add_(ctx, g, dw);
}

void check_master(const Param& w, Path p) {
  DS_CHECK_AS(UsageError, p == Path::fp32 || w.value.dtype() == DType::f32,
              "{}: {} GEMMs need F32 master weights, got {} (train from F32 weights, or use "
              "--precision fp32)", w.info.name,
              p == Path::fp8 ? "FP8" : "BF16", dtype_name(w.value.dtype()));
}

// Only the bf16 path reads BF16 inputs (gemm_input makes them under bf16 GEMMs only).
void check_input(const Param& w, Path p, const Tensor& x) {
  DS_CHECK(p == Path::bf16 || x.dtype() == DType::f32, "{}: {} input to a {} GEMM", w.info.name,
           dtype_name(x.dtype()), p == Path::fp8 ? "FP8" : "FP32");
}

bool shares_inputs(const ops::Context& ctx) {
  if (ctx.linear.mode != ops::Precision::bf16) return false;
  return ctx.linear.share_inputs > 0 || (ctx.linear.share_inputs < 0 && ctx.device != Device::cpu);
}

}  // namespace

bool gemm_inputs_shared(const ops::Context& ctx) { return shares_inputs(ctx); }

Tensor gemm_input(const ops::Context& ctx, const Tensor& x) {
  if (!shares_inputs(ctx) || x.dtype() == DType::bf16) return x;
  Tensor out = Tensor::empty(x.shape(), DType::bf16, ctx.device);   // codes, also on the CPU
  ops::bf16_round(ctx, x, out);
  return out;
}

Tensor gemm_input_empty(const ops::Context& ctx, const Shape& shape) {
  return shares_inputs(ctx) ? Tensor::empty(shape, DType::bf16, ctx.device)
                            : detail::empty_f32(ctx, shape);
}

Param& add_matrix(ParamStore& store, const std::string& name, int64_t out, int64_t in,
                  double init_std, bool fp8, int layer, int expert) {
  ParamInfo info;
  info.name = name;
  info.shape = {out, in};
  info.decay = true;
  info.fp8 = fp8;
  info.layer = layer;
  info.expert = expert;
  info.init_std = init_std;
  return store.add(std::move(info));
}

Param& add_norm_gain(ParamStore& store, const std::string& name, int64_t C, int layer) {
  ParamInfo info;
  info.name = name;
  info.shape = {C};
  info.decay = false;
  info.layer = layer;
  info.init_one = true;
  return store.add(std::move(info));
}

Linear::Linear(ParamStore& store, const std::string& name, int64_t out_features,
               int64_t in_features, double init_std, bool fp8, int layer, int expert)
    : w(&add_matrix(store, name, out_features, in_features, init_std, fp8, layer, expert)),
      in(in_features), out(out_features) {}

void Linear::forward(const ops::Context& ctx, const Tensor& x, Tensor& y) const {
  DS_CHECK_SHAPE(x, {-1, in});
  if (!y.defined()) y = detail::empty_f32(ctx, {x.size(0), out});
  const Path p = path_of(ctx, *w);
  check_input(*w, p, x);
  if (p == Path::fp32) {
    ops::linear_forward(ctx, x, w->value, y);
    return;
  }
  check_master(*w, p);
  if (p == Path::bf16) {
    ops::linear_forward(ctx, bf16_values(ctx, x), bf16_weight(ctx, w->value), y);
    return;
  }
  // Fprop: y = Q_1x128(x) Q_128x128(W)^T
  if (ctx.device != Device::cpu) {
    fp8_nt(ctx, fp8_codes(ctx, x, act_group(ctx), true), fp8_weight(ctx, w->value, false),
           ops::Fp8Group::block_128x128, y);
    return;
  }
  ops::linear_forward(ctx, fp8_values(ctx, x, act_group(ctx), true),
                      fp8_values(ctx, w->value, weight_group(ctx), false), y);
}

void Linear::backward(const ops::Context& ctx, const Tensor& x, const Tensor& dy, Tensor& dx,
                      bool want_dx, bool accumulate_dx) const {
  DS_CHECK(w->grad.defined(), "{}: gradient not allocated", w->info.name);
  Tensor none;
  const Path p = path_of(ctx, *w);
  accumulate_dx = accumulate_dx && want_dx;
  if (accumulate_dx) {
    DS_CHECK(dx.defined(), "{}: no input gradient to add into", w->info.name);
    DS_CHECK_SHAPE(dx, {x.size(0), in});
    if (p == Path::fp8 || !ops::gemm_accumulates(ctx)) {   // into a temporary, then dx +=
      Tensor t;
      backward(ctx, x, dy, t, true, false);
      ops::add_(ctx, dx, t);
      return;
    }
  }
  const float beta = accumulate_dx ? 1.0f : 0.0f;   // dx += by the GEMM (cuBLAS beta)
  if (want_dx && !dx.defined()) dx = detail::empty_f32(ctx, {x.size(0), in});
  check_input(*w, p, x);
  if (p == Path::fp32) {
    ops::linear_backward(ctx, x, w->value, dy, want_dx ? dx : none, w->grad, beta);
    return;
  }
  check_master(*w, p);
  if (p == Path::bf16) {
    ops::linear_backward(ctx, bf16_values(ctx, x), bf16_weight(ctx, w->value),
                         bf16_values(ctx, dy), want_dx ? dx : none, w->grad, beta);
    return;
  }
  DS_CHECK_SHAPE(dy, {x.size(0), out});
  if (ctx.device != Device::cpu) {
    fp8_backward_gpu(ctx, *w, x, dy, dx, want_dx);
    return;
  }
  // Dgrad: dx (N, in) = Q_1x128(dy) Q_128x128(W), 1x128 along the GEMM's K = out.
  const Tensor dyq = fp8_values(ctx, dy, act_group(ctx), false);   // (N, out)
  if (want_dx) {
    DS_CHECK_SHAPE(dx, {x.size(0), in});
    ops::matmul(ctx, dyq, fp8_values(ctx, w->value, weight_group(ctx), false), dx, false, false);
  }
  // Wgrad: dW (out, in) += Q_128x1(dy)^T Q_128x1(Xc), Xc the Fprop input as the FP8 GEMM saw
  // it (recomputed here: the same deterministic quantisation), re-quantised in 128x1 tiles.
  const Tensor xc = fp8_values(ctx, x, act_group(ctx), true);     // (N, in)
  const bool same = wgrad_group(ctx) == act_group(ctx);           // per-tensor scaling
  const Tensor dyw = same ? dyq : fp8_values(ctx, dy, wgrad_group(ctx), false);
  ops::matmul(ctx, dyw, fp8_values(ctx, xc, wgrad_group(ctx), true), w->grad, true, false, 1.0f,
              1.0f);
}

}  // namespace ds::model
