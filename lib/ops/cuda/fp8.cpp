// CUDA path of the FP8 ops (include/ds/ops/fp8.hpp): Tensor -> pointers, then the launchers of
// kernels/fp8_quant.cu (bit-identical to the CPU reference) and the FP8 GEMMs
// (kernels/sm90_fp8_gemm.cu on Hopper, kernels/fp8_gemm.cu elsewhere / for the shapes the
// Hopper kernel does not take), plain and grouped (the routed experts: one launch per call).
// The dispatchers (lib/ops/fp8.cpp, fp8_grouped.cpp) have checked shapes, dtypes, scale shapes
// and offsets.
//
// DS_FP8_GEMM selects the GEMM kernel: "auto" (default) or "overlap" (wgmma when the device
// and shape allow it, else the portable one; wgmma with the main loop that promotes one K
// block while the next one's wgmma run: the default since it measured faster on the H200),
// "wgmma" (the same without the overlap), "fallback" (always the portable one). Read once per
// process. DS_FP8_KSPLIT (off or on) likewise, the split-K of an FP8 Linear's weight gradient,
// and DS_FP8_QUANT (plain or tiles), the quantisers that read x in 128x128 tiles (the 1x128
// one here, the transposed ones in fp8_multi.cpp).
#include <cstdlib>
#include <cstring>

#include "ds/core/error.hpp"
#include "kernels/fp8_gemm.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/multi_tensor.cuh"
#include "kernels/runtime.cuh"
#include "kernels/sm90_fp8_gemm.cuh"
#include "ops_cuda.hpp"

namespace ds::ops::cuda {

namespace {

// (M, K) view: K the last dim, M the product of the others.
void matrix_dims(const Tensor& t, int64_t* M, int64_t* K) {
  *K = t.size(-1);
  *M = 1;
  for (int d = 0; d + 1 < t.ndim(); ++d) *M *= t.size(d);
}

ds::cuda::Fp8Grouping grouping(Fp8Group g) { return ds::cuda::Fp8Grouping(int(g)); }

// A two-valued switch: unset, empty or `off` false, `on` true, anything else a UsageError
// naming the variable.
bool env_switch(const char* var, const char* off, const char* on) {
  const char* v = std::getenv(var);
  if (!v || !*v || std::strcmp(v, off) == 0) return false;
  DS_CHECK_AS(UsageError, std::strcmp(v, on) == 0, "{}={}: expected {} or {}", var, v, off, on);
  return true;
}

// DS_FP8_KSPLIT: off (the default until it has run on a GPU) or on, the k-grouped GEMM's
// split-K for one group (sm90_fp8_gemm.cuh set_fp8_ksplit). Read once.
void read_ksplit_env() {
  static const bool once = [] {
    if (env_switch("DS_FP8_KSPLIT", "off", "on")) ds::cuda::set_fp8_ksplit(true);
    return true;
  }();
  (void)once;
}

// DS_FP8_QUANT: plain or tiles (ops_cuda.hpp fp8_tiles_on). Read once.
void read_quant_env() {
  static const bool once = [] {
    if (env_switch("DS_FP8_QUANT", "plain", "tiles")) ds::cuda::set_fp8_quant_tiles(true);
    return true;
  }();
  (void)once;
}

bool use_fallback_only() {
  static const bool only = [] {
    const char* v = std::getenv("DS_FP8_GEMM");
    // auto: the overlapped main loop (the kernels' default); wgmma: without the overlap
    if (!v || !*v || std::strcmp(v, "auto") == 0 || std::strcmp(v, "overlap") == 0) return false;
    if (std::strcmp(v, "wgmma") == 0) {
      ds::cuda::set_fp8_gemm_overlap(false);
      return false;
    }
    DS_CHECK_AS(UsageError, std::strcmp(v, "fallback") == 0,
                "DS_FP8_GEMM={}: expected auto, overlap, wgmma or fallback", v);
    return true;
  }();
  return only;
}

ds::cuda::Fp8Operand operand(const Tensor& codes, const Tensor& scales, Fp8Group g) {
  ds::cuda::Fp8Operand o;
  o.codes = codes.data<uint8_t>();
  o.scales = scales.data<float>();
  o.rows_per_scale = g == Fp8Group::tensor ? 0 : g == Fp8Group::block_128x128 ? 128 : 1;
  return o;
}

}  // namespace

void check_fp8_gemm_env() {
  (void)use_fallback_only();
  read_ksplit_env();
  read_quant_env();
}

bool fp8_tiles_on() {
  read_quant_env();
  return ds::cuda::fp8_quant_tiles() && ds::cuda::fused_ops();   // DS_CUDA_FUSED=0: all plain
}

static_assert(int(Fp8Group::row_1x128) == int(ds::cuda::Fp8Grouping::row_1x128) &&
              int(Fp8Group::col_128x1) == int(ds::cuda::Fp8Grouping::col_128x1) &&
              int(Fp8Group::block_128x128) == int(ds::cuda::Fp8Grouping::block_128x128) &&
              int(Fp8Group::tensor) == int(ds::cuda::Fp8Grouping::tensor));

void fp8_quantize(const Context&, const Tensor& x, Fp8Group g, ScaleFormat fmt, bool act,
                  Tensor& q, Tensor& scales) {
  int64_t M, K;
  matrix_dims(x, &M, &K);
  const bool ue8m0 = fmt == ScaleFormat::ue8m0;
  if (g == Fp8Group::row_1x128 && fp8_tiles_on() &&
      ds::cuda::fp8_quantize_tiles(x.data<float>(), M, K, ue8m0, act, false, q.data<uint8_t>(),
                                   scales.data<float>(), nullptr, nullptr))
    return;
  ds::cuda::fp8_quantize(x.data<float>(), M, K, grouping(g), ue8m0, act, q.data<uint8_t>(),
                         scales.data<float>(), nullptr);
}

void fp8_dequantize(const Context&, const Tensor& q, const Tensor& scales, Fp8Group g,
                    Tensor& out) {
  int64_t M, K;
  matrix_dims(q, &M, &K);
  ds::cuda::fp8_dequantize(q.data<uint8_t>(), scales.data<float>(), M, K, grouping(g),
                           out.data<float>());
}

void fp8_fake_quant(const Context&, const Tensor& x, Fp8Group g, ScaleFormat fmt, bool act,
                    Tensor& out) {
  int64_t M, K;
  matrix_dims(x, &M, &K);
  // No codes or scales kept: every kernel holds a group's scale while it writes the group.
  ds::cuda::fp8_quantize(x.data<float>(), M, K, grouping(g), fmt == ScaleFormat::ue8m0, act,
                         nullptr, nullptr, out.data<float>());
}

void bf16_round(const Context&, const Tensor& x, Tensor& out) {
  if (out.dtype() == DType::bf16)
    ds::cuda::bf16_round(x.data<float>(), nullptr, out.data<uint16_t>(), x.numel());
  else
    ds::cuda::bf16_round(x.data<float>(), out.data<float>(), nullptr, x.numel());
}

void bf16_round_multi(const Context&, const std::vector<const Tensor*>& xs,
                      const std::vector<Tensor*>& outs) {
  std::vector<const float*> src;
  std::vector<void*> dst;
  std::vector<int64_t> n;
  for (size_t i = 0; i < xs.size(); ++i) {
    src.push_back(xs[i]->data<float>());
    dst.push_back(outs[i]->raw());
    n.push_back(xs[i]->numel());
  }
  const bool codes = !outs.empty() && outs[0]->dtype() == DType::bf16;
  ds::cuda::bf16_round_multi(src.data(), dst.data(), codes, n.data(), int(xs.size()));
}

void fp8_gemm_nt(const Context&, const Tensor& a, const Tensor& a_scales, const Tensor& b,
                 const Tensor& b_scales, Tensor& c, Fp8Group a_group, Fp8Group b_group) {
  const int64_t M = a.size(0), N = b.size(0), K = a.size(1);
  const ds::cuda::Fp8Operand oa = operand(a, a_scales, a_group), ob = operand(b, b_scales, b_group);
  float* cp = c.data<float>();
  if (!use_fallback_only() && ds::cuda::fp8_gemm_nt_sm90_supported(oa, ob, M, N, K))
    ds::cuda::fp8_gemm_nt_sm90(oa, ob, cp, M, N, K);
  else
    ds::cuda::fp8_gemm_nt_fallback(oa, ob, cp, M, N, K);
}

void fp8_gemm_nt_grouped(const Context&, const Tensor& a, const Tensor& a_scales,
                         const std::vector<Tensor>& b, const std::vector<Tensor>& b_scales,
                         const std::vector<int64_t>& offsets, Tensor& c, Fp8Group b_group) {
  const int64_t N = b[0].size(0), K = a.size(1);
  const int groups = int(b.size());
  const ds::cuda::Fp8Operand oa = operand(a, a_scales, Fp8Group::row_1x128);
  std::vector<ds::cuda::Fp8Operand> ob;   // (groups)
  for (size_t g = 0; g < b.size(); ++g) ob.push_back(operand(b[g], b_scales[g], b_group));
  float* cp = c.data<float>();
  if (!use_fallback_only() &&
      ds::cuda::fp8_gemm_nt_grouped_sm90_supported(oa, ob.data(), groups, N, K))
    ds::cuda::fp8_gemm_nt_grouped_sm90(oa, ob.data(), offsets.data(), groups, cp, N, K);
  else
    ds::cuda::fp8_gemm_nt_grouped_fallback(oa, ob.data(), offsets.data(), groups, cp, N, K);
}

void fp8_gemm_nt_kgrouped(const Context&, const Tensor& a, const Tensor& a_scales,
                          const Tensor& b, const Tensor& b_scales,
                          const std::vector<int64_t>& offsets, std::vector<Tensor>& c) {
  const int64_t M = a.size(0), N = b.size(0);
  const int groups = int(c.size());
  const ds::cuda::Fp8Operand oa = operand(a, a_scales, Fp8Group::row_1x128),
                             ob = operand(b, b_scales, Fp8Group::row_1x128);
  std::vector<float*> cp;   // (groups), each (M, N)
  for (Tensor& cg : c) cp.push_back(cg.data<float>());
  const int64_t* off = offsets.data();
  read_ksplit_env();
  if (!use_fallback_only() &&
      ds::cuda::fp8_gemm_nt_kgrouped_sm90_supported(oa, ob, off, groups, M, N))
    ds::cuda::fp8_gemm_nt_kgrouped_sm90(oa, ob, off, groups, cp.data(), M, N);
  else
    ds::cuda::fp8_gemm_nt_kgrouped_fallback(oa, ob, off, groups, cp.data(), M, N);
}

}  // namespace ds::ops::cuda
