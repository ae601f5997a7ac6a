// libFuzzer target for config.json: arbitrary bytes through from_hf_json. Parsing must either
// throw a ds::Error or give a config that passed validate(); for such a config the parameter
// counts, the FLOPs and the memory plan must be computable (no overflow: the build runs with
// UBSan too) and writing it back gives the same config (to_hf_json -> from_hf_json). The same
// file also goes through read_quant_config (quantization_config of an FP8 checkpoint).
// Format under test: docs/model.md (config.json keys), include/ds/model/config.hpp.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "ds/core/error.hpp"
#include "ds/model/config.hpp"
#include "ds/model/pretrained.hpp"
#include "fuzz_scratch.hpp"

namespace {

void check_quant_config(const uint8_t* data, size_t size) {
  static const std::filesystem::path p = ds_fuzz::scratch_path("config", ".json");
  ds_fuzz::write_file(p, data, size);
  try {
    const ds::model::QuantConfig q = ds::model::read_quant_config(p);
    if (q.block_rows <= 0 || q.block_cols <= 0) __builtin_trap();
  } catch (const ds::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check_quant_config(data, size);
  const std::string text(reinterpret_cast<const char*>(data), size);
  ds::model::ModelArgs a;
  try {
    a = ds::model::from_hf_json(text, "fuzz/config.json");
  } catch (const ds::Error&) {
    return 0;   // rejected input: the expected outcome for almost every mutation
  }
  const ds::model::ParamCounts c = ds::model::count_params(a);
  if (c.total <= 0 || c.activated <= 0 || c.activated > c.total) __builtin_trap();
  const double flops = ds::model::train_flops_per_token(a, 4096);
  if (!(flops > 0) || !std::isfinite(flops)) __builtin_trap();
  const ds::model::MemoryPlan m = ds::model::plan_memory(a, 8, 4096, false);
  if (!(m.total > 0)) __builtin_trap();
  const ds::model::ModelArgs b = ds::model::from_hf_json(ds::model::to_hf_json(a), "round trip");
  if (!(a == b)) __builtin_trap();
  return 0;
}
