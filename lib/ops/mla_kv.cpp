// MLA's keys and values from the latent projection in one pass, forward and backward
// (include/ds/ops/ops.hpp mla_kv_split): dispatch to the CPU reference / optimised loops and
// to the CUDA kernel; with DS_CUDA_FUSED=0 the GPU runs the split, broadcast and
// concatenation it replaces.
#include <algorithm>
#include <initializer_list>

#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"
#include "dispatch.hpp"
#include "cpu/opt.hpp"
#include "cpu/ref.hpp"

namespace ds::ops {

using detail::check_devices;
using detail::f32_target;
using detail::nthreads;
using detail::Scope;
using detail::store_codes;
using detail::use_ref;

namespace {

struct KvDims {
  int64_t N, H, Dn, Dr, Dv;
};

// kv (N, H, Dn+Dv), k_rot (N, Dr), k (N, H, Dn+Dr), v (N, H, Dv); F32 except the outputs
// in codes_ok, which may hold BF16 codes (all of them, or none).
KvDims check_kv(const char* op, const Tensor& kv, const Tensor& k_rot, const Tensor& k,
                const Tensor& v, std::initializer_list<const Tensor*> codes_ok) {
  DS_CHECK(kv.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3 && k_rot.ndim() == 2,
           "{}: want kv (N, H, Dn+Dv), k_rot (N, Dr), k (N, H, Dn+Dr), v (N, H, Dv); got {} {} "
           "{} {}", op, shape_str(kv.shape()), shape_str(k_rot.shape()), shape_str(k.shape()),
           shape_str(v.shape()));
  const KvDims d{kv.size(0), kv.size(1), k.size(2) - k_rot.size(1), k_rot.size(1), v.size(2)};
  DS_CHECK(d.Dn >= 0 && kv.size(2) == d.Dn + d.Dv && k.size(0) == d.N && v.size(0) == d.N &&
               k_rot.size(0) == d.N && k.size(1) == d.H && v.size(1) == d.H,
           "{}: shapes kv {} k_rot {} k {} v {} do not fit", op, shape_str(kv.shape()),
           shape_str(k_rot.shape()), shape_str(k.shape()), shape_str(v.shape()));
  const DType out = (*codes_ok.begin())->dtype();
  for (const Tensor* t : {&kv, &k_rot, &k, &v}) {
    const bool is_out = std::find(codes_ok.begin(), codes_ok.end(), t) != codes_ok.end();
    const bool ok = is_out ? t->dtype() == out && (out == DType::f32 || out == DType::bf16)
                           : t->dtype() == DType::f32;
    DS_CHECK(ok, "{}: {} operand, want F32 (the outputs: all F32 or all BF16)", op,
             dtype_name(t->dtype()));
  }
  return d;
}

}  // namespace

void mla_kv_split(const Context& ctx, const Tensor& kv, const Tensor& k_rot, Tensor& k,
                  Tensor& v) {
  const char* op = "mla_kv_split";
  check_devices(ctx, op, {&kv, &k_rot, &k, &v});
  const KvDims d = check_kv(op, kv, k_rot, k, v, {&k, &v});
  const Scope scope_(ctx, op, 0, {&kv, &k_rot, &k, &v});
  DS_CUDA_ROUTE_FUSED(mla_kv_split, (ctx, kv, k_rot, k, v));
  const Tensor kf = f32_target(k), vf = f32_target(v);
  if (ctx.device != Device::cpu) {   // DS_CUDA_FUSED=0: the three copies it replaces
    Context one = ctx;
    one.prof = nullptr;
    Tensor k_nope = Tensor::empty({d.N, d.H, d.Dn}, DType::f32, ctx.device);
    Tensor k_pe = Tensor::empty({d.N, d.H, d.Dr}, DType::f32, ctx.device);
    Tensor vo = vf;
    split_last(one, kv, k_nope, vo);
    broadcast_heads(one, k_rot, k_pe);
    Tensor ko = kf;
    concat_last(one, k_nope, k_pe, ko);
    if (k.dtype() == DType::bf16) {   // and the rounding
      bf16_round(one, kf, k);
      bf16_round(one, vf, v);
    }
    return;
  }
  if (use_ref(ctx))
    ref::mla_kv_split(kv.f32(), k_rot.f32(), kf.f32(), vf.f32(), d.N, d.H, d.Dn, d.Dr, d.Dv);
  else
    opt::mla_kv_split(kv.f32(), k_rot.f32(), kf.f32(), vf.f32(), d.N, d.H, d.Dn, d.Dr, d.Dv,
                      nthreads(ctx));
  store_codes(kf, k);
  store_codes(vf, v);
}

void mla_kv_split_backward(const Context& ctx, const Tensor& dk, const Tensor& dv, Tensor& dkv,
                           Tensor& dk_rot) {
  const char* op = "mla_kv_split_backward";
  check_devices(ctx, op, {&dk, &dv, &dkv, &dk_rot});
  const KvDims d = check_kv(op, dkv, dk_rot, dk, dv, {&dkv});
  const Scope scope_(ctx, op, 0, {&dk, &dv, &dkv, &dk_rot});
  DS_CUDA_ROUTE_FUSED(mla_kv_split_backward, (ctx, dk, dv, dkv, dk_rot));
  if (ctx.device != Device::cpu) {   // DS_CUDA_FUSED=0: split, head sum, concat (and round)
    Context one = ctx;
    one.prof = nullptr;
    Tensor dk_nope = Tensor::empty({d.N, d.H, d.Dn}, DType::f32, ctx.device);
    Tensor dk_pe = Tensor::empty({d.N, d.H, d.Dr}, DType::f32, ctx.device);
    split_last(one, dk, dk_nope, dk_pe);
    sum_heads(one, dk_pe, dk_rot);
    Tensor f = f32_target(dkv);
    concat_last(one, dk_nope, dv, f);
    if (dkv.dtype() == DType::bf16) bf16_round(one, f, dkv);
    return;
  }
  const Tensor f = f32_target(dkv);
  if (use_ref(ctx))
    ref::mla_kv_split_backward(dk.f32(), dv.f32(), f.f32(), dk_rot.f32(), d.N, d.H, d.Dn, d.Dr,
                               d.Dv);
  else
    opt::mla_kv_split_backward(dk.f32(), dv.f32(), f.f32(), dk_rot.f32(), d.N, d.H, d.Dn, d.Dr,
                               d.Dv, nthreads(ctx));
  store_codes(f, dkv);
}

}  // namespace ds::ops
