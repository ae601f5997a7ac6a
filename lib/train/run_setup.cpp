// Run setup and --dry-run (see include/ds/train/run_setup.hpp, pretrain.hpp).
#include "ds/train/run_setup.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <tuple>

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "ds/core/error.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/dist/topology.hpp"
#include "ds/io/file.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "ds/train/data_mix.hpp"
#include "ds/train/dist_step.hpp"
#include "ds/train/flag_checks.hpp"
#include "ds/train/trainer.hpp"

namespace ds::train {

ops::Context make_context(const std::string& device, int threads, int gpu) {
  ops::Context ctx;
  if (device != "cpu" && device != "cuda")
    DS_THROW(UsageError, "--device: unknown device '{}' (cpu, cuda)", device);
  ctx.device = device == "cuda" ? Device::cuda : Device::cpu;
  ops::init_device(ctx.device, gpu);   // CudaError naming the reason when there is no usable GPU
  if (ctx.device == Device::cuda)
    spdlog::info("device: {}", ops::device_description(ctx.device));
  ctx.threads = check_threads(threads) > 0 ? threads : default_threads_per_rank();   // ranks share
  ops::set_cpu_threads(ctx.threads);
  return ctx;
}

void check_precision_flags(const std::string& precision, const std::string& fp8_granularity,
                           const std::string& fp8_scale, const std::string& moe_gemm) {
  const ops::Precision mode = ops::parse_precision(precision, "--precision");
  const auto granularity = ops::parse_fp8_granularity(fp8_granularity, "--fp8-granularity");
  const auto scale = ops::parse_scale_format(fp8_scale, "--fp8-scale");
  // the FP8 settings mean nothing in another precision: a value other than the default would
  // be ignored without a word
  if (mode != ops::Precision::fp8) {
    if (granularity != ops::Fp8Granularity::tile)
      DS_THROW(UsageError, "--fp8-granularity {} needs --precision fp8 (got {})", fp8_granularity,
               precision);
    if (scale != ops::ScaleFormat::fp32)
      DS_THROW(UsageError, "--fp8-scale {} needs --precision fp8 (got {})", fp8_scale, precision);
  }
  if (moe_gemm == "grouped" && mode == ops::Precision::fp8 &&
      granularity != ops::Fp8Granularity::tile)
    DS_THROW(UsageError, "--moe-gemm grouped with --precision fp8 needs --fp8-granularity tile");
}

ops::Context make_context(const std::string& device, int threads, const std::string& precision,
                          const std::string& fp8_granularity, const std::string& fp8_scale,
                          const std::string& moe_gemm, int gpu) {
  const int moe = moe_gemm == "auto" ? -1 : moe_gemm == "loop" ? 0 : moe_gemm == "grouped" ? 1 : -2;
  if (moe == -2)
    DS_THROW(UsageError, "--moe-gemm: expected auto, loop or grouped, got '{}'", moe_gemm);
  check_precision_flags(precision, fp8_granularity, fp8_scale, moe_gemm);
  ops::Context ctx = make_context(device, threads, gpu);
  ctx.linear.mode = ops::parse_precision(precision, "--precision");
  ctx.linear.granularity = ops::parse_fp8_granularity(fp8_granularity, "--fp8-granularity");
  ctx.linear.scale_format = ops::parse_scale_format(fp8_scale, "--fp8-scale");
  ctx.moe_gemm = moe;
  // On the GPU the weights' GEMM operands are kept from the forward to the backward pass
  // (ops::OperandCache; AdamW::step rewrites its BF16 entries in place, drops the others):
  // BF16 codes, or for FP8 Linears the E4M3 codes of W and W^T with their 128x128-block
  // scales; about 2 bytes per parameter either way.
  // The CPU, whose operands are F32, rounds on every use instead of holding a 4-byte copy.
  if (ctx.device == Device::cuda && ctx.linear.mode != ops::Precision::fp32)
    ctx.operands = std::make_shared<ops::OperandCache>();
  // DS_EXPERT_OUTPUTS checked here, before anything is written, and said when it changes the
  // numerics
  if (ops::expert_outputs_bf16(ctx)) {
    const bool grouped = ctx.moe_gemm == 1 || (ctx.moe_gemm < 0 && ctx.device != Device::cpu);
    spdlog::info("DS_EXPERT_OUTPUTS=bf16: {}",
                 ctx.linear.mode != ops::Precision::bf16
                     ? "no effect (only with --precision bf16)"
                 : grouped ? "the routed experts' GEMM outputs are rounded to BF16"
                           : "no effect (only with the grouped experts, --moe-gemm grouped)");
  }
  return ctx;
}

ops::Context make_context(const PretrainOptions& o) {
  return make_context(o.device, o.threads, o.precision, o.fp8_granularity, o.fp8_scale,
                      o.moe_gemm, dist::process_gpu(o.device, o.dist.launch));
}

model::ModelArgs resolve_model_args(const PretrainOptions& o) {
  if (!o.preset.empty() && !o.model_config.empty())
    DS_THROW(UsageError, "--preset and --model-config are mutually exclusive");
  if (o.preset.empty() && o.model_config.empty())
    DS_THROW(UsageError, "give a model: --preset NAME or --model-config config.json");
  model::ModelArgs a =
      o.preset.empty() ? model::load_config(o.model_config) : model::preset(o.preset);
  if (!o.tokenizer.empty()) {
    auto tok = tok::Tokenizer::from_file(o.tokenizer);
    if (!o.preset.empty()) a.vocab_size = (int64_t(tok.vocab_size()) + 127) / 128 * 128;
    // config.json's BOS/EOS ids describe the tokenizer the model is trained with (the loaders
    // check them against tokenizer.json)
    for (auto [key, id, own] : {std::tuple{"bos_token_id", &a.bos_token_id, tok.bos_id()},
                                std::tuple{"eos_token_id", &a.eos_token_id, tok.eos_id()}}) {
      if (!own || int64_t(*own) == *id) continue;
      if (o.preset.empty())
        spdlog::info("{}: {} {} -> {}, the id of {}'s '{}'", o.model_config, key, *id, *own,
                     o.tokenizer, tok.id_to_token(*own));
      *id = int64_t(*own);
    }
  }
  model::validate(a, o.preset.empty() ? o.model_config : "preset " + o.preset);
  return a;
}

model::ModelArgs check_pretrain_flags(const PretrainOptions& o) {
  if (o.batch_size <= 0) DS_THROW(UsageError, "--batch-size must be positive");
  check_precision_flags(o.precision, o.fp8_granularity, o.fp8_scale, o.moe_gemm);
  if (o.seq_len < 2) DS_THROW(UsageError, "--seq-len must be at least 2");
  validate(o.schedule);
  validate(o.optimizer);
  check_flag_value(o.balance_alpha, "--balance-alpha");
  check_flag_count(o.micro_batch_size, "--micro-batch-size", 0);
  check_flag_count(o.save_every, "--save-every", 0);
  check_flag_count(o.eval_every, "--eval-every", 0);
  check_flag_count(o.eval_batches, "--eval-batches", 1);
  check_flag_count(o.log_every, "--log-every", 0);
  check_flag_count(o.stop_after, "--stop-after", 0);
  check_flag_count(o.val_sequences, "--val-sequences", -1);
  if (o.ema_decay != 0 && !(o.ema_decay > 0 && o.ema_decay < 1))
    DS_THROW(UsageError, "--ema-decay {}: expected 0 (off) or a number in (0, 1)", o.ema_decay);
  check_metrics_path(o.metrics, o.out);
  if (o.eval_every > 0 && o.val_sequences == 0)
    DS_THROW(UsageError, "--eval-every {} needs held-out data: --val-sequences 0 holds none",
             o.eval_every);
  model::ModelArgs a = resolve_model_args(o);
  if (o.seq_len > a.max_seq_len)
    DS_THROW(UsageError, "--seq-len {} exceeds the model's max_position_embeddings {}", o.seq_len,
             a.max_seq_len);
  if (o.batch_size > INT64_MAX / o.seq_len)
    DS_THROW(UsageError, "--batch-size {} x --seq-len {} overflows", o.batch_size, o.seq_len);
  return a;
}

namespace {

// A micro-batch whose activations are far beyond this machine's memory allocated for minutes
// and was then ended by the kernel's OOM killer without a message. model::plan_memory
// overestimates (about 1.7x the measured peak for the tiny preset at batch 16..512), hence
// the error only past 4x the physical memory, a warning past 1x.
void check_host_memory(const PretrainOptions& o, const model::ModelArgs& a) {
  const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (!(ram > 0)) return;
  // a data-parallel rank's micro-batches hold at most its share of the batch
  const dist::LaunchInfo li = dist::detect_launch(o.dist.launch);
  const int dp = std::max(1, li.world_size / std::max(1, o.dist.layout.pp));
  int64_t micro = 0;
  (void)step_micro_batches(o.batch_size, dist::Layout{o.dist.layout.pp, dp, 1},
                           o.micro_batch_size, "1f1b", &micro);
  const model::MemoryPlan m = model::plan_memory(a, micro, o.seq_len, o.optimizer.bf16_moments);
  const double gib = double(1ull << 30);
  if (m.activations > 4 * ram)
    DS_THROW(UsageError, "--batch-size {} (micro-batch {}) x --seq-len {}: about {:.0f} GiB of "
             "activations (the --dry-run estimate), beyond this machine's {:.0f} GiB of memory; "
             "set a smaller --micro-batch-size", o.batch_size, micro, o.seq_len,
             m.activations / gib, ram / gib);
  const double total = m.total + (o.ema_decay > 0 ? m.weights : 0.0);   // + the weight average
  if (li.world_size == 1 && total > ram)   // (ranks shard the optimiser and the experts)
    spdlog::warn("the run may not fit in memory: about {:.1f} GiB estimated (--dry-run), {:.1f} "
                 "GiB on this machine", total / gib, ram / gib);
}

}  // namespace

RunSetup resolve_setup(const PretrainOptions& o) {
  RunSetup s;
  if (o.data.empty()) DS_THROW(UsageError, "--data is required");
  for (const std::string& d : o.data)
    if (d.empty()) DS_THROW(UsageError, "--data: an empty path");
  (void)parse_data_weights(o.data_weights, o.data.size());   // checked before any data is read
  if (o.out.empty()) DS_THROW(UsageError, "--out is required");
  io::check_output_dir(o.out, "--out");
  if (o.steps < 0) DS_THROW(UsageError, "--steps must be positive (got {})", o.steps);
  if (o.tokens < 0) DS_THROW(UsageError, "--tokens must be positive (got {})", o.tokens);
  if ((o.steps > 0) == (o.tokens > 0))
    DS_THROW(UsageError, "give exactly one of --steps and --tokens, a positive count{}",
             o.steps > 0 ? " (both given)" : "");
  s.args = check_pretrain_flags(o);
  int64_t per_step = o.batch_size * o.seq_len;
  if (o.steps > INT64_MAX / per_step || o.tokens > INT64_MAX - per_step)
    DS_THROW(UsageError, "--steps {} / --tokens {}: the run's token count overflows", o.steps,
             o.tokens);
  if (o.schedule.batch_start > o.batch_size)
    DS_THROW(UsageError, "--batch-start {}: more than --batch-size {} (the ramp's end)",
             o.schedule.batch_start, o.batch_size);
  const RunLength len = plan_run(o.schedule, o.batch_size, o.seq_len, o.steps, o.tokens);
  s.total_steps = len.steps;
  s.total_tokens = len.tokens;
  if (o.schedule.warmup_steps > s.total_steps)   // (a short trial of a long run's flags)
    spdlog::warn("--warmup-steps {} is longer than the run ({} steps): the learning rate stays "
                 "below --lr", o.schedule.warmup_steps, s.total_steps);
  if (!o.tokenizer.empty())
    s.expected_fingerprint = tok::Tokenizer::from_file(o.tokenizer).fingerprint();
  s.ctx = make_context(o);   // (the device first: --device cuda without a GPU is the one error)
  if (s.ctx.device == Device::cpu) check_host_memory(o, s.args);
  if (o.resume_new_data && o.resume == "never")
    DS_THROW(UsageError, "--resume-new-data continues a checkpoint: not with --resume never");
  if (dist::detect_launch(o.dist.launch).rank == 0)   // before anything in --out is read
    s.lock = std::make_shared<io::RunDirLock>(o.out, "--out");
  s.resume_from = resolve_resume(o.resume, o.out);
  return s;
}

}  // namespace ds::train
