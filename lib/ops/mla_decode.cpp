// Dispatch of the inference-side MLA ops (include/ds/ops/ops.hpp, section "inference: absorbed
// MLA"): shape / dtype / index checks at the boundary, then the CUDA path (lib/ops/cuda/
// attention.cpp, elementwise.cpp) for CUDA tensors, else cpu/ref_mla_decode.cpp or
// cpu/opt_mla_decode.cpp by Context::impl. The latent cache is F32 or BF16 (both tensors alike);
// set_rows also rounds F32 rows into a BF16 cache.
// reference: spec §2.1-2.2 (absorbed attention over the normalised latent + rope-key cache).
#include <algorithm>
#include <initializer_list>

#include "cpu/mla_kernels.hpp"
#include "ds/core/error.hpp"
#include "dispatch.hpp"
#include "ds/ops/ops.hpp"

namespace ds::ops {

namespace {

using detail::check_devices;

struct Named {
  const char* name;
  const Tensor* t;
};
void check_f32(const char* op, std::initializer_list<Named> ts) {
  for (const Named& n : ts)
    DS_CHECK(n.t->dtype() == DType::f32, "{}: {} must be F32 (got {})", op, n.name,
             dtype_name(n.t->dtype()));
}

void check_range(const Tensor& t, int64_t lo, int64_t hi, const char* what) {
  if (t.device() != Device::cpu) return;   // host check; the CUDA kernels skip bad entries
  const int32_t* p = t.i32();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (p[i] < lo || p[i] >= hi)
      DS_THROW(InternalError, "{}: value {} at position {} outside [{}, {})", what, p[i], i, lo,
               hi);
}

}  // namespace

void head_matmul(const Context& ctx, const Tensor& x, const Tensor& w, bool trans_w, Tensor& y) {
  check_devices(ctx, "head_matmul", {&x, &w, &y});
  DS_CHECK_SHAPE(x, {-1, -1, -1});
  DS_CHECK_SHAPE(w, {x.size(1), -1, -1});
  const int64_t N = x.size(0), H = x.size(1), I = x.size(2);
  const int64_t O = trans_w ? w.size(1) : w.size(2);
  DS_CHECK(trans_w ? w.size(2) == I : w.size(1) == I,
           "head_matmul: w {} does not match x {} (trans_w {})", shape_str(w.shape()),
           shape_str(x.shape()), trans_w);
  DS_CHECK_SHAPE(y, {N, H, O});
  DS_CUDA_ROUTE(head_matmul, (ctx, x, w, trans_w, y));
  if (ctx.impl == Impl::reference)
    ref::head_matmul(x.f32(), w.f32(), trans_w, y.f32(), N, H, I, O);
  else
    opt::head_matmul(x.f32(), w.f32(), trans_w, y.f32(), N, H, I, O, std::max(1, ctx.threads));
}

void mla_latent_attention(const Context& ctx, const Tensor& q_lat, const Tensor& q_pe,
                          const Tensor& ckv, const Tensor& kpe, const Tensor& slot,
                          const Tensor& len, float scale, Tensor& out) {
  check_devices(ctx, "mla_latent_attention", {&q_lat, &q_pe, &ckv, &kpe, &slot, &len, &out});
  DS_CHECK_SHAPE(q_lat, {-1, -1, -1});
  DS_CHECK_SHAPE(ckv, {-1, -1, q_lat.size(2)});
  MlaDims d{q_lat.size(0), q_lat.size(1), q_lat.size(2), 0, ckv.size(0), ckv.size(1)};
  DS_CHECK_SHAPE(q_pe, {d.N, d.H, -1});
  d.Dr = q_pe.size(2);
  DS_CHECK_SHAPE(kpe, {d.S, d.L, d.Dr});
  DS_CHECK_SHAPE(slot, {d.N});
  DS_CHECK_SHAPE(len, {d.N});
  DS_CHECK_SHAPE(out, {d.N, d.H, d.R});
  DS_CHECK(slot.dtype() == DType::i32 && len.dtype() == DType::i32,
           "mla_latent_attention: slot and len must be i32");
  check_f32("mla_latent_attention", {{"q_lat", &q_lat}, {"q_pe", &q_pe}, {"out", &out}});
  DS_CHECK(ckv.dtype() == kpe.dtype(),
           "mla_latent_attention: ckv ({}) and kpe ({}) must have the same dtype",
           dtype_name(ckv.dtype()), dtype_name(kpe.dtype()));
  DS_CHECK(ckv.dtype() == DType::f32 || ckv.dtype() == DType::bf16,
           "mla_latent_attention: the cache (ckv, kpe) must be F32 or BF16 (got {})",
           dtype_name(ckv.dtype()));
  check_range(slot, 0, d.S, "mla_latent_attention slot");
  check_range(len, 1, d.L + 1, "mla_latent_attention len");
  DS_CUDA_ROUTE(mla_latent_attention, (ctx, q_lat, q_pe, ckv, kpe, slot, len, scale, out));
  const int nt = std::max(1, ctx.threads);
  if (ckv.dtype() == DType::bf16) {
    const uint16_t *c = ckv.data<uint16_t>(), *k = kpe.data<uint16_t>();
    if (ctx.impl == Impl::reference)
      ref::mla_latent_attention(q_lat.f32(), q_pe.f32(), c, k, slot.i32(), len.i32(),
                                double(scale), out.f32(), d);
    else
      opt::mla_latent_attention(q_lat.f32(), q_pe.f32(), c, k, slot.i32(), len.i32(), scale,
                                out.f32(), d, nt);
  } else if (ctx.impl == Impl::reference) {
    ref::mla_latent_attention(q_lat.f32(), q_pe.f32(), ckv.f32(), kpe.f32(), slot.i32(),
                              len.i32(), double(scale), out.f32(), d);
  } else {
    opt::mla_latent_attention(q_lat.f32(), q_pe.f32(), ckv.f32(), kpe.f32(), slot.i32(),
                              len.i32(), scale, out.f32(), d, nt);
  }
}

void set_rows(const Context& ctx, const Tensor& src, const Tensor& rows, Tensor& dst) {
  check_devices(ctx, "set_rows", {&src, &rows, &dst});
  DS_CHECK_SHAPE(src, {-1, -1});
  DS_CHECK_SHAPE(rows, {src.size(0)});
  DS_CHECK_SHAPE(dst, {-1, src.size(1)});
  DS_CHECK(rows.dtype() == DType::i32, "set_rows: rows must be i32");
  const DType sd = src.dtype(), dd = dst.dtype();
  DS_CHECK((sd == DType::f32 && (dd == DType::f32 || dd == DType::bf16)) ||
               (sd == DType::bf16 && dd == DType::bf16),
           "set_rows: src {} -> dst {} not supported (F32->F32, BF16->BF16, F32->BF16)",
           dtype_name(sd), dtype_name(dd));
  check_range(rows, 0, dst.size(0), "set_rows rows");
  DS_CUDA_ROUTE(set_rows, (ctx, src, rows, dst));
  const int64_t M = src.size(0), C = src.size(1);
  const int nt = std::max(1, ctx.threads);
  if (dd == DType::f32)
    opt::set_rows(src.f32(), rows.i32(), dst.f32(), M, C, nt);
  else if (sd == DType::bf16)
    opt::set_rows(src.data<uint16_t>(), rows.i32(), dst.data<uint16_t>(), M, C, nt);
  else
    opt::set_rows(src.f32(), rows.i32(), dst.data<uint16_t>(), M, C, nt);
}

}  // namespace ds::ops
