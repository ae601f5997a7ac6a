// The training tools' shared flag groups (include/ds/cli/train_flags.hpp).
#include "ds/cli/train_flags.hpp"

#include <CLI/CLI.hpp>

namespace ds::cli {

void add_adamw_options(CLI::App& app, train::OptimizerOptions& op) {
  app.add_option("--adam-beta1", op.beta1, "AdamW beta1")->capture_default_str();
  app.add_option("--adam-beta2", op.beta2, "AdamW beta2")->capture_default_str();
  app.add_option("--adam-eps", op.eps, "AdamW epsilon")->capture_default_str();
  app.add_option("--weight-decay", op.weight_decay, "AdamW weight decay (matrices only)")
      ->capture_default_str();
  app.add_option("--clip-grad-norm", op.clip_norm, "Global gradient-norm clip (0: off)")
      ->capture_default_str();
  app.add_flag("--fp32-moments{false}", op.bf16_moments, "Keep AdamW moments in FP32 (default BF16)");
}

void add_precision_options(CLI::App& app, std::string& precision, std::string& fp8_granularity,
                           std::string& fp8_scale) {
  app.add_option("--precision", precision, "Linear GEMM precision: fp32, bf16 or fp8 (DeepSeek-V3 recipe)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp8"}))->capture_default_str();
  app.add_option("--fp8-granularity", fp8_granularity, "FP8 scales per tile/block or per tensor")
      ->check(CLI::IsMember({"tile", "tensor"}))->capture_default_str();
  app.add_option("--fp8-scale", fp8_scale, "FP8 scale format: fp32 or ue8m0 (powers of two)")
      ->check(CLI::IsMember({"fp32", "ue8m0"}))->capture_default_str();
}

}  // namespace ds::cli
