// Flag groups the training tools (ds-pretrain, ds-sft, ds-rl) share, declared once so that
// their names, help texts and checks cannot drift apart; defaults stay in the options structs.
#pragma once
#include <cstdint>
#include <string>

#include "ds/dist/topology.hpp"
#include "ds/train/optimizer.hpp"

namespace CLI { class App; }

namespace ds::cli {

// --adam-beta1, --adam-beta2, --adam-eps, --weight-decay, --clip-grad-norm, --fp32-moments.
void add_adamw_options(CLI::App& app, train::OptimizerOptions& op);
// --precision fp32|bf16|fp8, --fp8-granularity tile|tensor, --fp8-scale fp32|ue8m0,
// --moe-gemm auto|loop|grouped.
void add_precision_options(CLI::App& app, std::string& precision, std::string& fp8_granularity,
                           std::string& fp8_scale, std::string& moe_gemm);

// The run directory and its checkpoints: -o/--out, --save-every, --keep-last, --save-bf16.
void add_checkpoint_options(CLI::App& app, std::string& out, int64_t& save_every, int& keep_last,
                            bool& save_bf16);
// --ema-decay: the weights' moving average (train::WeightEma), evaluated beside the weights
// when the tool evaluates.
void add_ema_option(CLI::App& app, double& ema_decay, bool evaluated);
// Where it runs: --device cpu|cuda, --threads (per rank).
void add_device_options(CLI::App& app, std::string& device, int& threads);
// --profile: the per-op report at the end of the run.
void add_profile_flag(CLI::App& app, bool& profile);

// Distributed use: --pp, --ep, --pp-schedule, --rank, --world-size, --local-rank,
// --master-addr, --master-port (docs/distributed.md).
void add_dist_options(CLI::App& app, dist::DistOptions& o);

}  // namespace ds::cli
