// The MoE layer's (token, k) pairs (include/ds/ops/ops.hpp): moe_sort_pairs groups them by
// expert (a stable counting sort), combine_pairs adds the experts' rows back into their
// tokens. Dispatch to the CPU reference / optimised loops and to the CUDA path.
#include <algorithm>
#include <initializer_list>
#include <vector>

#include "ds/ops/ops.hpp"
#include "dispatch.hpp"
#include "cpu/opt.hpp"
#include "cpu/ref.hpp"

namespace ds::ops {

using detail::check_devices;
using detail::check_indices;
using detail::nthreads;
using detail::Scope;
using detail::use_ref;

namespace {

void check_i32(const Tensor& t, const char* op, const char* what) {
  DS_CHECK(t.dtype() == DType::i32, "{}: {} must be I32, got {}", op, what, dtype_name(t.dtype()));
}

}  // namespace

void moe_sort_pairs(const Context& ctx, const Tensor& idx, Tensor& counts, Tensor& pair_src,
                    Tensor& pair_tok, Tensor& pair_slot, std::vector<int32_t>* host_counts) {
  const char* op = "moe_sort_pairs";
  check_devices(ctx, op, {&idx, &counts, &pair_src, &pair_tok, &pair_slot});
  const Scope scope_(ctx, op, 0, {&idx, &counts, &pair_src, &pair_tok, &pair_slot});
  DS_CHECK_SHAPE(idx, {-1, -1});
  DS_CHECK_SHAPE(counts, {-1});
  const int64_t NK = idx.numel(), K = idx.size(1), E = counts.size(0);
  DS_CHECK_SHAPE(pair_src, {NK});
  DS_CHECK_SHAPE(pair_tok, {NK});
  if (pair_slot.defined()) DS_CHECK_SHAPE(pair_slot, {NK});
  check_i32(idx, op, "idx");
  check_i32(counts, op, "counts");
  check_i32(pair_src, op, "pair_src");
  check_i32(pair_tok, op, "pair_tok");
  if (pair_slot.defined()) check_i32(pair_slot, op, "pair_slot");
  DS_CHECK(NK < (int64_t(1) << 31) && E >= 1, "{}: {} pairs, {} experts", op, NK, E);
  check_indices(idx, 0, E, "moe_sort_pairs idx");
  if (host_counts) host_counts->assign(size_t(E), 0);
  DS_CUDA_ROUTE_FUSED(moe_sort_pairs,
                      (ctx, idx, counts, pair_src, pair_tok, pair_slot, host_counts));
  if (ctx.device != Device::cpu) {   // DS_CUDA_FUSED=0: on the host, as before the kernel
    Tensor hi = Tensor::empty(idx.shape(), DType::i32), hc = Tensor::empty({E}, DType::i32);
    Tensor hs = Tensor::empty({NK}, DType::i32), ht = Tensor::empty({NK}, DType::i32);
    Tensor hp = Tensor::empty({NK}, DType::i32);
    hi.copy_from(idx);
    check_indices(hi, 0, E, "moe_sort_pairs idx");
    ref::moe_sort_pairs(hi.i32(), NK, K, E, hc.i32(), hs.i32(), ht.i32(), hp.i32());
    counts.copy_from(hc);
    pair_src.copy_from(hs);
    pair_tok.copy_from(ht);
    if (pair_slot.defined()) pair_slot.copy_from(hp);
    if (host_counts) std::copy(hc.i32(), hc.i32() + E, host_counts->begin());
    return;
  }
  ref::moe_sort_pairs(idx.i32(), NK, K, E, counts.i32(), pair_src.i32(), pair_tok.i32(),
                      pair_slot.defined() ? pair_slot.i32() : nullptr);
  if (host_counts) std::copy(counts.i32(), counts.i32() + E, host_counts->begin());
}

void moe_pad_pairs(const Context& ctx, const Tensor& pair_src, const Tensor& pair_w, int64_t K,
                   const std::vector<int64_t>& offsets, const std::vector<int64_t>& p_offsets,
                   Tensor& p_tok, Tensor& p_w, Tensor& p_row, Tensor& p_pair) {
  const char* op = "moe_pad_pairs";
  check_devices(ctx, op, {&pair_src, &pair_w, &p_tok, &p_w, &p_row, &p_pair});
  const Scope scope_(ctx, op, 0, {&pair_src, &pair_w, &p_tok, &p_w, &p_row, &p_pair});
  DS_CHECK(offsets.size() >= 2 && offsets.size() == p_offsets.size(),
           "{}: {} offsets and {} padded offsets", op, offsets.size(), p_offsets.size());
  const int64_t E = int64_t(offsets.size()) - 1, NK = offsets.back(), NKp = p_offsets.back();
  DS_CHECK(offsets[0] == 0 && p_offsets[0] == 0, "{}: offsets must start at 0", op);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = offsets[size_t(e + 1)] - offsets[size_t(e)];
    DS_CHECK(n >= 0 && p_offsets[size_t(e + 1)] - p_offsets[size_t(e)] >= n,
             "{}: expert {} has {} pairs and {} padded rows", op, e, n,
             p_offsets[size_t(e + 1)] - p_offsets[size_t(e)]);
  }
  DS_CHECK(K >= 1 && NK % K == 0, "{}: {} pairs are not whole tokens of {}", op, NK, K);
  DS_CHECK(NKp < (int64_t(1) << 31), "{}: {} padded rows", op, NKp);
  DS_CHECK_SHAPE(pair_src, {NK});
  DS_CHECK_SHAPE(pair_w, {NK});
  DS_CHECK_SHAPE(p_tok, {NKp});
  DS_CHECK_SHAPE(p_w, {NKp});
  DS_CHECK_SHAPE(p_row, {NK});
  DS_CHECK_SHAPE(p_pair, {NK});
  for (const Tensor* t : std::initializer_list<const Tensor*>{&pair_src, &p_tok, &p_row, &p_pair})
    check_i32(*t, op, "an index");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&pair_w, &p_w})
    DS_CHECK(t->dtype() == DType::f32, "{}: weights must be F32, got {}", op,
             dtype_name(t->dtype()));
  if (pair_src.device() == Device::cpu) {   // a permutation: every p_row / p_pair written once
    std::vector<char> seen(size_t(NK), 0);
    for (int64_t i = 0; i < NK; ++i) {
      const int32_t p = pair_src.i32()[i];
      DS_CHECK(p >= 0 && p < NK && !seen[size_t(p)],
               "{}: pair_src[{}] = {} is not a permutation of [0, {})", op, i, p, NK);
      seen[size_t(p)] = 1;
    }
  }
  DS_CUDA_ROUTE_FUSED(moe_pad_pairs,
                      (ctx, pair_src, pair_w, K, offsets, p_offsets, p_tok, p_w, p_row, p_pair));
  if (ctx.device != Device::cpu) {   // DS_CUDA_FUSED=0: on the host, as before the kernel
    Tensor hs = Tensor::empty({NK}, DType::i32), hw = Tensor::empty({NK}, DType::f32);
    Tensor ht = Tensor::empty({NKp}, DType::i32), hpw = Tensor::empty({NKp}, DType::f32);
    Tensor hr = Tensor::empty({NK}, DType::i32), hp = Tensor::empty({NK}, DType::i32);
    hs.copy_from(pair_src);
    hw.copy_from(pair_w);
    Context host = ctx;
    host.device = Device::cpu;
    host.prof = nullptr;
    moe_pad_pairs(host, hs, hw, K, offsets, p_offsets, ht, hpw, hr, hp);
    p_tok.copy_from(ht);
    p_w.copy_from(hpw);
    p_row.copy_from(hr);
    p_pair.copy_from(hp);
    return;
  }
  ref::moe_pad_pairs(pair_src.i32(), pair_w.f32(), offsets.data(), p_offsets.data(), E, K,
                     p_tok.i32(), p_w.f32(), p_row.i32(), p_pair.i32());
}

void combine_pairs(const Context& ctx, const Tensor& src, const Tensor& slot, const Tensor& w,
                   Tensor& dst) {
  const char* op = "combine_pairs";
  check_devices(ctx, op, {&src, &slot, &w, &dst});
  // src rows read once each, dst read and written: the least a combine moves
  const Scope scope_(ctx, op, 0, {&src, &slot, &w, &dst, &dst});
  DS_CHECK_SHAPE(src, {-1, -1});
  DS_CHECK_SHAPE(slot, {-1, -1});
  const int64_t N = slot.size(0), K = slot.size(1), C = src.size(1), R = src.size(0);
  DS_CHECK(R >= N * K, "combine_pairs: src has {} rows for {} pairs", R, N * K);
  DS_CHECK_SHAPE(dst, {N, C});
  if (w.defined()) DS_CHECK_SHAPE(w, {N, K});
  check_i32(slot, op, "slot");
  for (const Tensor* t : {&w, static_cast<const Tensor*>(&dst)})
    DS_CHECK(!t->defined() || t->dtype() == DType::f32, "{}: w and dst must be F32, got {}",
             op, dtype_name(t->dtype()));
  DS_CHECK(src.dtype() == DType::f32 || src.dtype() == DType::bf16,
           "{}: src must be F32 or BF16, got {}", op, dtype_name(src.dtype()));
  check_indices(slot, 0, R, "combine_pairs slot");
  DS_CUDA_ROUTE_FUSED(combine_pairs, (ctx, src, slot, w, dst));
  if (ctx.device != Device::cpu) {   // DS_CUDA_FUSED=0: the scatter that ran on the H200
    DS_CHECK(src.dtype() == DType::f32,
             "{}: a BF16 src needs the fused kernels (DS_CUDA_FUSED=0 is set)", op);
    Tensor hs = Tensor::empty(slot.shape(), DType::i32), hw;
    hs.copy_from(slot);
    check_indices(hs, 0, R, "combine_pairs slot");
    if (w.defined()) {
      hw = Tensor::empty(w.shape(), DType::f32);
      hw.copy_from(w);
    }
    // rows that no slot names (pads, finite) go to token r mod N with weight 0: spread out,
    // so that their atomic additions of zeros do not all land on one row
    Tensor tok = Tensor::empty({R}, DType::i32), pw = Tensor::zeros({R});
    for (int64_t r = 0; r < R; ++r) tok.i32()[r] = int32_t(N > 0 ? r % N : 0);
    for (int64_t p = 0; p < N * K; ++p) {   // row slot[p] goes to token p / K with w[p]
      tok.i32()[hs.i32()[p]] = int32_t(p / K);
      pw.f32()[hs.i32()[p]] = w.defined() ? hw.f32()[p] : 1.0f;
    }
    Tensor dtok = Tensor::empty({R}, DType::i32, ctx.device);
    Tensor dpw = Tensor::empty({R}, DType::f32, ctx.device);
    dtok.copy_from(tok);
    dpw.copy_from(pw);
    Context one = ctx;   // timed as this op
    one.prof = nullptr;
    scatter_add_rows(one, src, dtok, w.defined() || R > N * K ? dpw : Tensor(), dst);
    return;
  }
  const float* wp = w.defined() ? w.f32() : nullptr;
  const Tensor sf = detail::f32_values(src);
  if (use_ref(ctx)) ref::combine_pairs(sf.f32(), slot.i32(), wp, dst.f32(), N, K, C);
  else opt::combine_pairs(sf.f32(), slot.i32(), wp, dst.f32(), N, K, C, nthreads(ctx));
}

}  // namespace ds::ops
