// The training tools' shared flag groups (include/ds/cli/train_flags.hpp).
#include "ds/cli/train_flags.hpp"

#include <CLI/CLI.hpp>

#include "ds/cli/common.hpp"

namespace ds::cli {

void add_adamw_options(CLI::App& app, train::OptimizerOptions& op) {
  app.add_option("--adam-beta1", op.beta1, "AdamW beta1")->capture_default_str();
  app.add_option("--adam-beta2", op.beta2, "AdamW beta2")->capture_default_str();
  app.add_option("--adam-eps", op.eps, "AdamW epsilon")->capture_default_str();
  app.add_option("--weight-decay", op.weight_decay, "AdamW weight decay (matrices only)")
      ->capture_default_str();
  app.add_option("--clip-grad-norm", op.clip_norm, "Global gradient-norm clip (0: off)")
      ->capture_default_str();
  app.add_flag_callback("--fp32-moments", [&op] { op.bf16_moments = false; },
                        "Keep AdamW moments in FP32 (default BF16)");
}

void add_checkpoint_options(CLI::App& app, std::string& out, int64_t& save_every, int& keep_last,
                            bool& save_bf16) {
  app.add_option("-o,--out", out, "Run directory (checkpoints step-XXXXXXXX inside)");
  app.add_option("--save-every", save_every, "Checkpoint period in steps (0: at the end only)")
      ->capture_default_str();
  app.add_option("--keep-last", keep_last, "Checkpoints kept in --out")
      ->check(ds::cli::positive_number())->capture_default_str();
  app.add_flag("--save-bf16", save_bf16,
               "Write model weights in BF16 (FP32 masters go to the training state)");
}

void add_ema_option(CLI::App& app, double& ema_decay, bool evaluated) {
  app.add_option("--ema-decay", ema_decay,
                 std::string("Keep a moving average of the weights with this decay (0: off), ") +
                     (evaluated ? "evaluated beside them and saved" : "saved") +
                     " as each checkpoint's ema/")
      ->capture_default_str();
}

void add_device_options(CLI::App& app, std::string& device, int& threads) {
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads per rank (0: the cores / ranks on this node)")
      ->capture_default_str();
}

void add_profile_flag(CLI::App& app, bool& profile) {
  app.add_flag("--profile", profile,
               "Print a per-op time, GFLOP/s, operand GB/s and peak-memory report at the end");
}

void add_precision_options(CLI::App& app, std::string& precision, std::string& fp8_granularity,
                           std::string& fp8_scale, std::string& moe_gemm) {
  app.add_option("--precision", precision,
                 "Linear GEMM precision: fp32, bf16 or fp8 (DeepSeek-V3 recipe)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp8"}))->capture_default_str();
  app.add_option("--fp8-granularity", fp8_granularity,
                 "FP8 scales per tile/block or per tensor (with --precision fp8)")
      ->check(CLI::IsMember({"tile", "tensor"}))->capture_default_str();
  app.add_option("--fp8-scale", fp8_scale,
                 "FP8 scale format: fp32 or ue8m0 (powers of two; with --precision fp8)")
      ->check(CLI::IsMember({"fp32", "ue8m0"}))->capture_default_str();
  app.add_option("--moe-gemm", moe_gemm,
                 "Routed experts' GEMMs: auto, loop (per expert) or grouped (one per projection)")
      ->check(CLI::IsMember({"auto", "loop", "grouped"}))->capture_default_str();
}

void add_dist_options(CLI::App& app, dist::DistOptions& o) {
  const char* g = "Distributed (docs/distributed.md)";
  app.add_option("--pp", o.layout.pp, "Pipeline-parallel stages (the world size is pp x dp)")
      ->check(ds::cli::positive_number())->capture_default_str()->group(g);
  app.add_option("--ep", o.layout.ep, "Expert-parallel group size (divides dp = world / pp)")
      ->check(ds::cli::positive_number())->capture_default_str()->group(g);
  app.add_option("--pp-schedule", o.pp_schedule, "Pipeline schedule: 1f1b, gpipe or dualpipe")
      ->check(CLI::IsMember({"1f1b", "gpipe", "dualpipe"}))->capture_default_str()->group(g);
  app.add_option("--rank", o.launch.rank, "This process's rank (default: from mpirun/Slurm)")
      ->check(ds::cli::non_negative_number())->group(g);
  app.add_option("--world-size", o.launch.world_size,
                 "Number of ranks (default: from mpirun/Slurm)")
      ->check(ds::cli::positive_number())->group(g);
  app.add_option("--local-rank", o.launch.local_rank, "Rank on this node (selects the GPU)")
      ->check(ds::cli::non_negative_number())->group(g);
  app.add_option("--master-addr", o.launch.master_addr,
                 "Host of rank 0 for the TCP rendezvous of the NCCL id (GPU runs without MPI)")
      ->group(g);
  app.add_option("--master-port", o.launch.master_port, "Port of that rendezvous")
      ->check(CLI::Range(1, 65535))->capture_default_str()->group(g);
}

}  // namespace ds::cli
