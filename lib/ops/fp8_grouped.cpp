// Dispatch of the routed experts' FP8 ops (include/ds/ops/fp8.hpp): the transposed 128x1
// quantisation of Wgrad operands (and the Linears' two backward quantisations that include it:
// fp8_quantize_dual, fp8_requantize_transposed), the many-matrix 128x128 weight quantisation,
// and the grouped FP8 GEMMs over the padded expert-sorted layout, Fprop / Dgrad (m-grouped)
// and Wgrad (k-grouped). Checks at the boundary, then the CUDA path
// (cuda/fp8_multi.cpp, cuda/fp8.cpp: one launch per call); on the CPU each matrix or group
// goes through the one-matrix op (fp8_quantize and transpose; fp8_gemm_nt on the group's
// slice), which makes the CPU result the definition the GPU kernels are tested against.
#include <algorithm>
#include <cstring>
#include <utility>

#include "dispatch.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"

namespace ds::ops {

namespace {

using detail::check_devices;
using detail::Scope;

bool is_codes(const Tensor& t) { return t.dtype() == DType::u8 || t.dtype() == DType::f8_e4m3; }

// offsets: G + 1 host values, 0 = o_0 <= ... <= o_G = extent, each a multiple of 128.
// partial_end: an offset equal to the extent may end inside a 128 block (the k-grouped GEMM's
// last K block, partial as a plain GEMM's).
void check_offsets(const char* op, const std::vector<int64_t>& offsets, size_t G,
                   int64_t extent, const char* what, bool partial_end = false) {
  DS_CHECK(offsets.size() == G + 1 && offsets.front() == 0 && offsets.back() == extent,
           "{}: {} offsets for {} groups over {} {}", op, offsets.size(), G, extent, what);
  for (size_t g = 0; g < G; ++g) {
    DS_CHECK(offsets[g] <= offsets[g + 1], "{}: offsets decrease at group {}", op, g);
    DS_CHECK(offsets[g + 1] % kFp8Block == 0 || (partial_end && offsets[g + 1] == extent),
             "{}: offset {} of group {} is not a multiple of {} (pad each group)", op,
             offsets[g + 1], g, kFp8Block);
  }
}

void check_operand(const char* op, const Tensor& q, const Tensor& s, Fp8Group g, int64_t rows,
                   int64_t K, const char* what) {
  DS_CHECK(is_codes(q), "{}: {} must be E4M3 codes, got {}", op, what, dtype_name(q.dtype()));
  const Shape want = {rows, K};
  DS_CHECK(q.shape() == want, "{}: {} expected ({}, {}), got {}", op, what, rows, K,
           shape_str(q.shape()));
  DS_CHECK(s.dtype() == DType::f32 && s.shape() == fp8_scale_shape(rows, K, g),
           "{}: {} scales expected F32 {}, got {} {}", op, what,
           shape_str(fp8_scale_shape(rows, K, g)), dtype_name(s.dtype()), shape_str(s.shape()));
}

// x must be a 2-D F32 matrix: its (M, K).
std::pair<int64_t, int64_t> matrix_of(const char* op, const Tensor& x) {
  DS_CHECK(x.dtype() == DType::f32 && x.ndim() == 2, "{}: x must be a 2-D F32 matrix, got {} {}",
           op, dtype_name(x.dtype()), shape_str(x.shape()));
  return {x.size(0), x.size(1)};
}

// Codes (rows, K) and their 1x128 scales, allocated when undefined.
void allocate(Tensor& q, Tensor& s, int64_t rows, int64_t K, Device dev) {
  if (!q.defined()) q = Tensor::empty({rows, K}, DType::u8, dev);
  if (!s.defined()) s = Tensor::empty(fp8_scale_shape(rows, K, Fp8Group::row_1x128), DType::f32,
                                      dev);
}

// Columns [k0, k0 + kn) of a row-major (rows, ld) matrix of T into a new contiguous tensor.
template <typename T>
Tensor columns(const Tensor& x, int64_t k0, int64_t kn) {
  const int64_t rows = x.size(0), ld = x.size(1);
  Tensor out = Tensor::empty({rows, kn}, x.dtype(), Device::cpu);
  const T* src = x.data<T>();
  T* dst = out.data<T>();
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + r * kn, src + r * ld + k0, size_t(kn) * sizeof(T));
  return out;
}

}  // namespace

void fp8_quantize_transposed(const Context& ctx, const Tensor& x, ScaleFormat fmt, bool act,
                             Tensor& qt, Tensor& st) {
  const char* op = "fp8_quantize_transposed";
  check_devices(ctx, op, {&x, &qt, &st});
  const auto [M, K] = matrix_of(op, x);
  allocate(qt, st, K, M, x.device());
  check_operand(op, qt, st, Fp8Group::row_1x128, K, M, "qt");
  const Scope scope_(ctx, op, 0, {&x, &qt, &st});
  DS_CUDA_ROUTE_FUSED(fp8_quantize_transposed, (ctx, x, fmt, act, qt, st));
  Context one = ctx;   // the definition: transpose, then the 1x128 quantisation
  one.prof = nullptr;
  Tensor xt = Tensor::empty({K, M}, DType::f32, x.device());
  transpose(one, x, xt);
  fp8_quantize(one, xt, Fp8Group::row_1x128, fmt, act, qt, st);
}

void fp8_quantize_dual(const Context& ctx, const Tensor& x, ScaleFormat fmt, bool act, Tensor& q,
                       Tensor& s, Tensor& qt, Tensor& st) {
  const char* op = "fp8_quantize_dual";
  check_devices(ctx, op, {&x, &q, &s, &qt, &st});
  const auto [M, K] = matrix_of(op, x);
  allocate(q, s, M, K, x.device());
  allocate(qt, st, K, M, x.device());
  check_operand(op, q, s, Fp8Group::row_1x128, M, K, "q");
  check_operand(op, qt, st, Fp8Group::row_1x128, K, M, "qt");
  const Scope scope_(ctx, op, 0, {&x, &q, &s, &qt, &st});
  DS_CUDA_ROUTE_FUSED(fp8_quantize_dual, (ctx, x, fmt, act, q, s, qt, st));
  Context one = ctx;   // the definition
  one.prof = nullptr;
  fp8_quantize(one, x, Fp8Group::row_1x128, fmt, act, q, s);
  fp8_quantize_transposed(one, x, fmt, act, qt, st);
}

void fp8_requantize_transposed(const Context& ctx, const Tensor& x, ScaleFormat fmt, bool act,
                               Tensor& qt, Tensor& st) {
  const char* op = "fp8_requantize_transposed";
  check_devices(ctx, op, {&x, &qt, &st});
  const auto [M, K] = matrix_of(op, x);
  allocate(qt, st, K, M, x.device());
  check_operand(op, qt, st, Fp8Group::row_1x128, K, M, "qt");
  const Scope scope_(ctx, op, 0, {&x, &qt, &st});
  DS_CUDA_ROUTE_FUSED(fp8_requantize_transposed, (ctx, x, fmt, act, qt, st));
  Context one = ctx;   // the definition
  one.prof = nullptr;
  Tensor xc = Tensor::empty(x.shape(), DType::f32, x.device());
  fp8_fake_quant(one, x, Fp8Group::row_1x128, fmt, act, xc);
  fp8_quantize_transposed(one, xc, fmt, act, qt, st);
}

void fp8_quantize_blocks_multi(const Context& ctx, const std::vector<const Tensor*>& xs,
                               ScaleFormat fmt, const std::vector<Tensor*>& qs,
                               const std::vector<Tensor*>& ss, const std::vector<Tensor*>& qts,
                               const std::vector<Tensor*>& sts) {
  const char* op = "fp8_quantize_blocks_multi";
  const size_t n = xs.size();
  if (n == 0 && qs.empty() && qts.empty()) return;
  DS_CHECK(qs.size() == ss.size() && qts.size() == sts.size() && (qs.empty() || qs.size() == n) &&
               (qts.empty() || qts.size() == n) && !(qs.empty() && qts.empty()),
           "{}: {} inputs with {} / {} codes and {} / {} transposed codes / scales", op, n,
           qs.size(), ss.size(), qts.size(), sts.size());
  for (size_t i = 0; i < n; ++i) {
    const Tensor& x = *xs[i];
    check_devices(ctx, op, {&x});
    DS_CHECK(x.dtype() == DType::f32 && x.ndim() == 2, "{}: input {} must be a 2-D F32 matrix, "
             "got {} {}", op, i, dtype_name(x.dtype()), shape_str(x.shape()));
    const int64_t M = x.size(0), K = x.size(1);
    if (!qs.empty()) {
      check_devices(ctx, op, {qs[i], ss[i]});
      check_operand(op, *qs[i], *ss[i], Fp8Group::block_128x128, M, K, "codes");
    }
    if (!qts.empty()) {
      check_devices(ctx, op, {qts[i], sts[i]});
      check_operand(op, *qts[i], *sts[i], Fp8Group::block_128x128, K, M, "transposed codes");
    }
    const Tensor& first = qs.empty() ? *qts[0] : *qs[0];
    for (const std::vector<Tensor*>* v : {&qs, &qts})
      if (!v->empty())
        DS_CHECK((*v)[i]->dtype() == first.dtype(), "{}: codes of one call must share a dtype, "
                 "got {} and {}", op, dtype_name(first.dtype()), dtype_name((*v)[i]->dtype()));
  }
  const Scope scope_(ctx, op);
  if (scope_.on()) {
    for (const std::vector<Tensor*>* v : {&qs, &ss, &qts, &sts})
      for (const Tensor* t : *v) scope_.add_bytes(double(t->nbytes()));
    for (const Tensor* x : xs) scope_.add_bytes(double(x->nbytes()));
  }
  DS_CUDA_ROUTE_FUSED(fp8_quantize_blocks_multi, (ctx, xs, fmt, qs, ss, qts, sts));
  Context one = ctx;   // the calls below are timed as this one
  one.prof = nullptr;
  for (size_t i = 0; i < n; ++i) {
    Tensor q = qs.empty() ? Tensor::empty(xs[i]->shape(), qts[i]->dtype(), xs[i]->device())
                          : *qs[i];
    Tensor s = qs.empty() ? Tensor() : *ss[i];
    fp8_quantize(one, *xs[i], Fp8Group::block_128x128, fmt, false, q, s);
    if (qts.empty()) continue;
    transpose(one, q, *qts[i]);
    transpose(one, s, *sts[i]);
  }
}

void fp8_gemm_nt_grouped(const Context& ctx, const Tensor& a, const Tensor& a_scales,
                         const std::vector<Tensor>& b, const std::vector<Tensor>& b_scales,
                         const std::vector<int64_t>& offsets, Tensor& c, Fp8Group b_group) {
  const char* op = "fp8_gemm_nt_grouped";
  check_devices(ctx, op, {&a, &a_scales});
  DS_CHECK(b_group == Fp8Group::block_128x128 || b_group == Fp8Group::row_1x128,
           "{}: b must be grouped 128x128 or 1x128", op);
  DS_CHECK(a.ndim() == 2, "{}: a must be 2-D, got {}", op, shape_str(a.shape()));
  DS_CHECK(b.size() == b_scales.size() && !b.empty(), "{}: {} weights with {} scale tensors",
           op, b.size(), b_scales.size());
  const int64_t M = a.size(0), K = a.size(1), N = b[0].ndim() == 2 ? b[0].size(0) : -1;
  check_operand(op, a, a_scales, Fp8Group::row_1x128, M, K, "a");
  check_offsets(op, offsets, b.size(), M, "rows");
  for (size_t g = 0; g < b.size(); ++g) {
    check_devices(ctx, op, {&b[g], &b_scales[g]});
    check_operand(op, b[g], b_scales[g], b_group, N, K, "b");
  }
  if (!c.defined()) c = Tensor::empty({M, N}, DType::f32, a.device());
  check_devices(ctx, op, {&c});
  DS_CHECK(c.dtype() == DType::f32, "{}: c must be F32, got {}", op, dtype_name(c.dtype()));
  DS_CHECK_SHAPE(c, {M, N});
  const Scope scope_(ctx, op, 2.0 * double(M) * double(N) * double(K), {&a, &a_scales, &c});
  for (size_t g = 0; g < b.size(); ++g)
    scope_.add_bytes(double(b[g].nbytes() + b_scales[g].nbytes()));
  DS_CUDA_ROUTE(fp8_gemm_nt_grouped, (ctx, a, a_scales, b, b_scales, offsets, c, b_group));
  Context one = ctx;   // timed as this one call (one launch on the GPU)
  one.prof = nullptr;
  for (size_t g = 0; g < b.size(); ++g) {
    const int64_t r0 = offsets[g], r1 = offsets[g + 1];
    if (r0 == r1) continue;
    Tensor cg = c.slice0(r0, r1);
    fp8_gemm_nt(one, a.slice0(r0, r1), a_scales.slice0(r0, r1), b[g], b_scales[g], cg,
                Fp8Group::row_1x128, b_group);
  }
}

void fp8_gemm_nt_kgrouped(const Context& ctx, const Tensor& a, const Tensor& a_scales,
                          const Tensor& b, const Tensor& b_scales,
                          const std::vector<int64_t>& offsets, std::vector<Tensor>& c) {
  const char* op = "fp8_gemm_nt_kgrouped";
  check_devices(ctx, op, {&a, &a_scales, &b, &b_scales});
  DS_CHECK(a.ndim() == 2 && b.ndim() == 2, "{}: a and b must be 2-D, got {} and {}", op,
           shape_str(a.shape()), shape_str(b.shape()));
  const int64_t M = a.size(0), N = b.size(0), K = a.size(1);
  check_operand(op, a, a_scales, Fp8Group::row_1x128, M, K, "a");
  check_operand(op, b, b_scales, Fp8Group::row_1x128, N, K, "b");
  check_offsets(op, offsets, c.size(), K, "columns", true);
  std::vector<const float*> starts;   // the groups' blocks add into their c concurrently
  for (const Tensor& cg : c) {
    check_devices(ctx, op, {&cg});
    DS_CHECK(cg.dtype() == DType::f32, "{}: c must be F32, got {}", op, dtype_name(cg.dtype()));
    DS_CHECK_SHAPE(cg, {M, N});
    starts.push_back(cg.data<float>());
  }
  std::sort(starts.begin(), starts.end());
  for (size_t g = 0; g + 1 < starts.size(); ++g)
    DS_CHECK(M * N == 0 || starts[g] + M * N <= starts[g + 1], "{}: two outputs overlap", op);
  const Scope scope_(ctx, op, 2.0 * double(M) * double(N) * double(K),
                     {&a, &a_scales, &b, &b_scales});
  for (const Tensor& cg : c) scope_.add_bytes(2.0 * double(cg.nbytes()));   // c +=
  DS_CUDA_ROUTE(fp8_gemm_nt_kgrouped, (ctx, a, a_scales, b, b_scales, offsets, c));
  Context one = ctx;
  one.prof = nullptr;
  for (size_t g = 0; g < c.size(); ++g) {
    const int64_t k0 = offsets[g], kn = offsets[g + 1] - k0;
    if (kn == 0) continue;
    const int64_t s0 = k0 / kFp8Block, sn = (kn + kFp8Block - 1) / kFp8Block;   // last: partial
    Tensor part;   // (M, N): the group's sum from zero, then added once
    fp8_gemm_nt(one, columns<uint8_t>(a, k0, kn), columns<float>(a_scales, s0, sn),
                columns<uint8_t>(b, k0, kn), columns<float>(b_scales, s0, sn), part,
                Fp8Group::row_1x128, Fp8Group::row_1x128);
    add_(one, c[g], part);
  }
}

}  // namespace ds::ops
