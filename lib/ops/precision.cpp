// Names of the Linear GEMM precisions and FP8 scaling options, and the Context switches of
// how GEMMs write their results resolved (include/ds/ops/ops.hpp).
#include <cstdlib>
#include <cstring>
#include <string>

#include "ds/core/env.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/ops.hpp"

#if defined(DS_HAVE_CUDA)
#include "kernels/runtime.cuh"
#endif

namespace ds::ops {

Precision parse_precision(std::string_view s, std::string_view flag) {
  if (s == "fp32") return Precision::fp32;
  if (s == "bf16") return Precision::bf16;
  if (s == "fp8") return Precision::fp8;
  DS_THROW(UsageError, "{}: unknown precision '{}' (fp32, bf16, fp8)", flag, s);
}

Fp8Granularity parse_fp8_granularity(std::string_view s, std::string_view flag) {
  if (s == "tile") return Fp8Granularity::tile;
  if (s == "tensor") return Fp8Granularity::tensor;
  DS_THROW(UsageError, "{}: unknown FP8 granularity '{}' (tile, tensor)", flag, s);
}

ScaleFormat parse_scale_format(std::string_view s, std::string_view flag) {
  if (s == "fp32") return ScaleFormat::fp32;
  if (s == "ue8m0") return ScaleFormat::ue8m0;
  DS_THROW(UsageError, "{}: unknown scale format '{}' (fp32, ue8m0)", flag, s);
}

std::string_view precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::bf16: return "bf16";
    case Precision::fp8: return "fp8";
  }
  return "?";
}

bool gemm_accumulates(const Context& ctx) {
  if (ctx.gemm_accumulate >= 0) return ctx.gemm_accumulate == 1;
#if defined(DS_HAVE_CUDA)
  if (ctx.device == Device::cuda) return ds::cuda::fused_ops();
#endif
  (void)ctx;
  return false;
}

namespace {
const EnvCheck kExpertOutputsEnv([] { (void)expert_outputs_bf16(Context{}); });
}  // namespace

bool expert_outputs_bf16(const Context& ctx) {
  static const bool env_bf16 = env_choice("DS_EXPERT_OUTPUTS", {"f32", "bf16"}) == "bf16";
#if defined(DS_HAVE_CUDA)
  // the ops reading BF16 outputs have no DS_CUDA_FUSED=0 (measured-path) form
  if (ctx.device == Device::cuda && !ds::cuda::fused_ops()) return false;
#endif
  if (ctx.expert_outputs_bf16 >= 0) return ctx.expert_outputs_bf16 == 1;
  return env_bf16;
}

}  // namespace ds::ops
