// One training step of a preset on the GPU, as ds-pretrain runs it (forward with MTP and the
// balance loss, backward, global-norm clipping, AdamW with BF16 moments, router-bias update),
// on random tokens: median step time, tokens/s and MFU = model FLOPs (model::
// train_flops_per_token: 6 x the activated matmul weights per token, MTP's included, plus the
// causal attention core, half of the T x T pairs) / time / peak. Peak: --peak-tflops (default
// 989.4, the H100/H200 SXM dense BF16 datasheet figure; the measured cuBLAS peak is printed by
// bench_gemm for comparison). The fp8 step's MFU is against that BF16 peak too (the FP8
// dense peak is twice it).
// Usage: bench_train_step [--preset 1b] [--batch 4] [--seq 4096] [--precision bf16[,fp8,..]]
//                         [--steps 5] [--warmup 2] [--peak-tflops 989.4] [--profile 1]
//                         [--device cuda|cpu] [--grouped-experts -1|0|1] [--fp8-codes 0|1]
//                         [--operand-cache -1|0|1] [--share-inputs -1|0|1]
//                         [--attention-inputs -1|0|1] [--stacked-gate-up -1|0|1]
//                         [--gemm-accumulate -1|0|1] [--expert-outputs -1|0|1]
//                         [--operand-refresh -1|0|1] [--variant LABEL:KEY=VALUE,...]...
// --device cpu runs the same step on the CPU (small --batch/--seq): with --profile 1 its table
// counts the op calls of a step (each at least one kernel launch on the GPU) without a GPU;
// --fp8-codes 1 makes the grouped FP8 experts run the GPU's ops there (MoEOptions::fp8_codes).
// --operand-cache: the weights' BF16 operands kept from forward to backward (ops::
// OperandCache); -1 (default) as the tools: on the GPU, off on the CPU. --share-inputs: the
// activations' BF16 operands made once per tensor (ops::LinearPrecision::share_inputs, the
// same default; 1 on the CPU holds them as BF16 codes there too). --attention-inputs: q, k, v
// handed to the attention as BF16 codes by their producers (ops::Context::attention_inputs;
// -1 where the GPU's tensor-core attention reads them so, 0 F32, 1 also on the CPU).
// --stacked-gate-up: every MLP's gate_proj and up_proj (the grouped routed experts' too) as one
// GEMM over their stacked matrices (ops::Context::stacked_gate_up; -1 the default: on unless
// DS_CUDA_FUSED=0 or DS_STACKED_GATE_UP=0). --gemm-accumulate: sums into existing tensors
// (MLA's two input-gradient paths, the router's input gradient into the FFN's, FP8 Linears'
// Wgrad) by the GEMM itself instead of a temporary and an add_ (ops::Context::gemm_accumulate;
// -1 the default: on the GPU unless DS_CUDA_FUSED=0, off on the CPU). --expert-outputs: the
// grouped routed experts' GEMM outputs in bf16 as BF16 codes (ops::Context::
// expert_outputs_bf16; -1 the default: DS_EXPERT_OUTPUTS, F32 unless it says bf16; 1 BF16).
// --operand-refresh: AdamW writes the next step's BF16 weight operands into the operand cache
// with the update instead of the cache being cleared (ops::Context::operand_refresh; -1 the
// default: on unless DS_CUDA_FUSED=0).
// --profile 1: two more steps per precision with the per-op profiler on (on the GPU each op
// timed by CUDA events, no synchronisation; the first step fills the event pool and is not
// reported): the per-op table of train::profile_report on stderr; "outside ops" is then the
// step's time in no op (the GPU waiting for the host).
// Several precisions run one after the other on the same model (initialised once), each
// from the initial weights, router biases and optimizer state (restored from a host copy).
// --variant LABEL:KEY=VALUE[,KEY=VALUE...] (repeatable): instead of one run with the flags,
// one run per variant on the same model, each from the flags' settings with its keys on top:
// precision (bf16, fp8, bf16+fp8), share-inputs, attention-inputs, stacked-gate-up,
// gemm-accumulate, operand-refresh, expert-outputs, grouped-experts (-1|0|1), profile (0|1),
// and the process-wide switches grouped-gemm (cublas|kernel|wgmma: DS_GROUPED_GEMM), attention
// (wgmma|mma: DS_ATTENTION), attention-bwd (onepass|fused|split: DS_ATTENTION_BWD), attention-rows
// (64|128: DS_ATTENTION_ROWS), attention-schedule (staggered|pipelined|lockstep:
// DS_ATTENTION_SCHEDULE),
// attention-qstats (table|inline: DS_ATTENTION_QSTATS), fp8-ksplit (on|off: DS_FP8_KSPLIT),
// fp8-quant (tiles|plain: DS_FP8_QUANT) and streams (1-16: DS_GROUPED_GEMM_STREAMS). Each
// variant's lines end in [variant LABEL] and its JSON carries "variant": one process times
// all the switches (the model built and its weights uploaded once: an estimated 4 s a variant
// less on the 1b preset than a process each, not measured), in the order given, printing each
// as it finishes.
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>
#include <algorithm>

#include "ds/core/rng.hpp"
#include "ds/model/config.hpp"
#include "ds/model/transformer.hpp"
#include "ds/ops/ops.hpp"
#include "ds/train/optimizer.hpp"
#include "ds/train/trainer.hpp"
#include "gpu_timer.hpp"
#include "kernels/flash_attention.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/gemm_grouped.cuh"
#include "kernels/sm90_fp8_gemm.cuh"

using namespace ds;

namespace {

// What one run sets; -1 (0 for streams): the process's default.
struct Switches {
  std::string precision = "bf16";
  int grouped = -1;   // routed experts: -1 the device's default, 0 per-expert loop, 1 grouped
  int share_inputs = -1, attention_inputs = -1, stacked_gate_up = -1, gemm_accumulate = -1;
  int expert_outputs = -1, operand_refresh = -1;
  int grouped_gemm = -1, attention_wgmma = -1, attention_bwd = -1, streams = 0;   // (cuda)
  int attention_rows64 = -1, attention_qstats = -1;
  int attention_staggered = -1;   // the schedule: 0 lockstep, 1 staggered, 2 pipelined
  int fp8_ksplit = -1, fp8_tiles = -1;
  bool profile = false;
};

struct Variant {
  std::string label;   // empty: the flags' own run
  Switches sw;
};

[[noreturn]] void usage(const std::string& what) {
  std::fprintf(stderr, "bench_train_step: %s\n", what.c_str());
  std::exit(2);
}

int int_value(const std::string& key, const std::string& v, int lo, int hi) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n < lo || n > hi)
    usage(key + "=" + v + ": expected an integer from " + std::to_string(lo) + " to " +
          std::to_string(hi));
  return int(n);
}

// LABEL:KEY=VALUE,... on top of the flags' switches.
Variant parse_variant(const std::string& spec, const Switches& base) {
  const size_t colon = spec.find(':');
  Variant v{spec.substr(0, colon), base};
  if (v.label.empty()) usage("--variant " + spec + ": no label before ':'");
  for (char c : v.label)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || std::strchr(" _-+=/.", c)))
      usage("--variant " + spec + ": the label takes letters, digits and ' _-+=/.'");
  if (colon == std::string::npos) return v;
  const std::string keys = spec.substr(colon + 1);
  for (size_t i = 0; i < keys.size();) {
    const size_t j = std::min(keys.find(',', i), keys.size());
    const std::string kv = keys.substr(i, j - i);
    i = j + 1;
    if (kv.empty()) continue;
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) usage("--variant " + spec + ": " + kv + " is not KEY=VALUE");
    const std::string k = kv.substr(0, eq), val = kv.substr(eq + 1);
    Switches& s = v.sw;
    if (k == "precision") {
      s.precision = val;
      std::replace(s.precision.begin(), s.precision.end(), '+', ',');
    } else if (k == "share-inputs") s.share_inputs = int_value(k, val, -1, 1);
    else if (k == "attention-inputs") s.attention_inputs = int_value(k, val, -1, 1);
    else if (k == "stacked-gate-up") s.stacked_gate_up = int_value(k, val, -1, 1);
    else if (k == "gemm-accumulate") s.gemm_accumulate = int_value(k, val, -1, 1);
    else if (k == "operand-refresh") s.operand_refresh = int_value(k, val, -1, 1);
    else if (k == "expert-outputs") s.expert_outputs = int_value(k, val, -1, 1);
    else if (k == "grouped-experts") s.grouped = int_value(k, val, -1, 1);
    else if (k == "profile") s.profile = int_value(k, val, 0, 1) != 0;
    else if (k == "streams") s.streams = int_value(k, val, 1, 16);
    else if (k == "grouped-gemm" && (val == "cublas" || val == "kernel" || val == "wgmma"))
      s.grouped_gemm = val == "wgmma" ? 2 : val == "kernel" ? 1 : 0;
    else if (k == "attention" && (val == "wgmma" || val == "mma"))
      s.attention_wgmma = val == "wgmma";
    else if (k == "attention-bwd" && (val == "onepass" || val == "fused" || val == "split"))
      s.attention_bwd = val == "onepass" ? 2 : val == "fused" ? 1 : 0;
    else if (k == "attention-rows" && (val == "64" || val == "128"))
      s.attention_rows64 = val == "64";
    else if (k == "attention-schedule" &&
             (val == "staggered" || val == "pipelined" || val == "lockstep"))
      s.attention_staggered = val == "pipelined" ? 2 : val == "staggered" ? 1 : 0;
    else if (k == "attention-qstats" && (val == "table" || val == "inline"))
      s.attention_qstats = val == "table";
    else if (k == "fp8-ksplit" && (val == "on" || val == "off")) s.fp8_ksplit = val == "on";
    else if (k == "fp8-quant" && (val == "tiles" || val == "plain")) s.fp8_tiles = val == "tiles";
    else usage("--variant " + spec + ": unknown key or value " + kv);
  }
  return v;
}

int8_t tri(int v) { return int8_t(v < 0 ? -1 : v > 0); }

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "1b";
  int64_t B = 4, T = 4096;
  int steps = 5, warmup = 2;
  double peak = 989.4;
  Device dev = Device::cuda;
  bool fp8_codes = false;   // --device cpu: the grouped FP8 experts on E4M3 codes, as the GPU
  int operand_cache = -1;
  Switches base;
  std::vector<std::string> variant_specs;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--preset") preset = v;
    else if (f == "--batch") B = std::atoll(v.c_str());
    else if (f == "--seq") T = std::atoll(v.c_str());
    else if (f == "--precision") base.precision = v;
    else if (f == "--steps") steps = std::atoi(v.c_str());
    else if (f == "--warmup") warmup = std::atoi(v.c_str());
    else if (f == "--peak-tflops") peak = std::atof(v.c_str());
    else if (f == "--profile") base.profile = v != "0";
    else if (f == "--grouped-experts") base.grouped = std::atoi(v.c_str());
    else if (f == "--fp8-codes") fp8_codes = v != "0";
    else if (f == "--operand-cache") operand_cache = std::atoi(v.c_str());
    else if (f == "--share-inputs") base.share_inputs = std::atoi(v.c_str());
    else if (f == "--attention-inputs") base.attention_inputs = std::atoi(v.c_str());
    else if (f == "--stacked-gate-up") base.stacked_gate_up = std::atoi(v.c_str());
    else if (f == "--gemm-accumulate") base.gemm_accumulate = std::atoi(v.c_str());
    else if (f == "--expert-outputs") base.expert_outputs = std::atoi(v.c_str());
    else if (f == "--operand-refresh") base.operand_refresh = std::atoi(v.c_str());
    else if (f == "--variant") variant_specs.push_back(v);
    else if (f == "--device") dev = v == "cpu" ? Device::cpu : Device::cuda;
    else usage("unknown flag " + f);
  }
  if (argc % 2 == 0) usage(std::string("flag ") + argv[argc - 1] + " without a value");
  std::vector<Variant> variants;
  for (const std::string& spec : variant_specs) variants.push_back(parse_variant(spec, base));
  if (variants.empty()) variants.push_back(Variant{"", base});
  if (dev == Device::cuda && !bench::gpu_ready("bench_train_step")) return 77;
  try {
    const model::ModelArgs a = model::preset(preset);
    ops::Context ctx;
    ctx.device = dev;
    if (operand_cache > 0 || (operand_cache < 0 && dev == Device::cuda))
      ctx.operands = std::make_shared<ops::OperandCache>();   // fp32 runs leave it empty
    model::ParamStore store;
    store.set_device(dev);
    model::Transformer m(a, store);
    m.set_fp8_codes(fp8_codes);
    store.init(1);
    store.alloc_grads();
    train::OptimizerOptions oo;
    train::AdamW opt(store, oo);
    Tensor tokens = Tensor::empty({B, T + 1}, DType::i32);
    Rng rng(3, 1);
    for (int64_t i = 0; i < tokens.numel(); ++i)
      tokens.i32()[i] = int32_t(rng.below(uint64_t(a.vocab_size)));
    model::Batch batch;
    batch.tokens = tokens;
    double last_loss = 0;
    auto step = [&] {
      store.zero_grads();
      const model::StepResult r = m.forward_backward(ctx, batch, model::LossWeights{}, 1.0f);
      opt.step(ctx, 1e-4f, opt.grad_stats(ctx));   // refreshes or clears ctx.operands
      m.update_router_bias(r.expert_counts, 1e-3f);
      last_loss = r.loss;
    };
    // Every run (variant, precision) starts from the same model: the weights, the routers'
    // biases and AdamW's moments and step count as initialised, restored from a host copy.
    // Otherwise the model trains on from run to run and the routing's balance (which sets
    // the experts' GEMM sizes) drifts: on the H200 (commit c135dd4) the same default step
    // took 444 ms first and 318 ms last, 13 runs later.
    std::vector<std::pair<Tensor*, Tensor>> snapshot;   // (live tensor, host copy)
    auto keep = [&](Tensor& t) {
      Tensor h = Tensor::empty(t.shape(), t.dtype(), Device::cpu);
      h.copy_from(t);
      snapshot.emplace_back(&t, std::move(h));
    };
    for (model::Param& p : store.params()) keep(p.value);
    for (auto& b : store.buffers()) keep(b.second);
    for (auto& s : opt.state_tensors()) keep(*s.second);
    auto restore = [&] {
      for (auto& [live, host] : snapshot) live->copy_from(host);
      opt.set_steps_done(0);
    };
    // the process's own settings of the process-wide switches (the environment's)
    const ds::cuda::GroupedGemmImpl impl0 = dev == Device::cuda
                                                ? ds::cuda::grouped_gemm_impl()
                                                : ds::cuda::GroupedGemmImpl::cublas;
    const bool wgmma0 = dev == Device::cuda && ds::cuda::attention_wgmma();
    const int bwd0 = dev == Device::cuda ? ds::cuda::attention_bwd_mode() : 0;
    const bool rows640 = dev == Device::cuda && ds::cuda::attention_rows64();
    const int sched0 = dev == Device::cuda ? ds::cuda::attention_schedule() : 0;
    const bool qstats0 = dev == Device::cuda && ds::cuda::attention_bwd_qstats();
    const int streams0 = dev == Device::cuda ? ds::cuda::grouped_gemm_streams() : 0;
    const bool ksplit0 = dev == Device::cuda && ds::cuda::fp8_ksplit();
    const bool tiles0 = dev == Device::cuda && ds::cuda::fp8_quant_tiles();
    for (const Variant& var : variants) {
    const Switches& sw = var.sw;
    const std::string tag = var.label.empty() ? "" : " [variant " + var.label + "]";
    const std::string jtag = var.label.empty() ? "" : ",\"variant\":\"" + var.label + "\"";
    ctx.attention_inputs = tri(sw.attention_inputs);
    ctx.stacked_gate_up = tri(sw.stacked_gate_up);
    ctx.gemm_accumulate = tri(sw.gemm_accumulate);
    ctx.expert_outputs_bf16 = tri(sw.expert_outputs);
    ctx.operand_refresh = tri(sw.operand_refresh);
    m.set_grouped_experts(sw.grouped < 0 ? -1 : int(sw.grouped != 0));
    const int64_t launches0 = dev == Device::cuda ? ds::cuda::grouped_gemm_kernel_launches() : 0;
    const int64_t wgmma_l0 = dev == Device::cuda ? ds::cuda::grouped_gemm_wgmma_launches() : 0;
    const int64_t fused_l0 = dev == Device::cuda ? ds::cuda::attention_bwd_fused_launches() : 0;
    const int64_t one_l0 = dev == Device::cuda ? ds::cuda::attention_bwd_onepass_launches() : 0;
    const int64_t rows64_l0 = dev == Device::cuda ? ds::cuda::attention_rows64_launches() : 0;
    const int64_t stag_l0 = dev == Device::cuda ? ds::cuda::attention_staggered_launches() : 0;
    const int64_t pipe_l0 = dev == Device::cuda ? ds::cuda::attention_pipelined_launches() : 0;
    const int64_t qs_l0 = dev == Device::cuda ? ds::cuda::attention_bwd_qstats_launches() : 0;
    const int64_t ks_l0 = dev == Device::cuda ? ds::cuda::fp8_ksplit_launches() : 0;
    const int64_t qt_l0 = dev == Device::cuda ? ds::cuda::fp8_quant_tiles_launches() : 0;
    if (dev == Device::cuda) {
      using GI = ds::cuda::GroupedGemmImpl;
      ds::cuda::set_grouped_gemm_impl(sw.grouped_gemm < 0    ? impl0
                                      : sw.grouped_gemm == 2 ? GI::wgmma
                                      : sw.grouped_gemm == 1 ? GI::kernel
                                                             : GI::cublas);
      ds::cuda::set_attention_wgmma(sw.attention_wgmma < 0 ? wgmma0 : sw.attention_wgmma != 0);
      ds::cuda::set_attention_bwd_mode(sw.attention_bwd < 0 ? bwd0 : sw.attention_bwd);
      ds::cuda::set_attention_rows64(sw.attention_rows64 < 0 ? rows640
                                                             : sw.attention_rows64 != 0);
      const int sched = sw.attention_staggered < 0 ? sched0 : sw.attention_staggered;
      ds::cuda::set_attention_schedule(sched);
      ds::cuda::set_attention_bwd_qstats(sw.attention_qstats < 0 ? qstats0
                                                                 : sw.attention_qstats != 0);
      ds::cuda::set_grouped_gemm_streams(sw.streams > 0 ? sw.streams : streams0);
      ds::cuda::set_fp8_ksplit(sw.fp8_ksplit < 0 ? ksplit0 : sw.fp8_ksplit != 0);
      ds::cuda::set_fp8_quant_tiles(sw.fp8_tiles < 0 ? tiles0 : sw.fp8_tiles != 0);
    }
    std::vector<std::string> precisions;
    for (size_t i = 0; i <= sw.precision.size();) {
      const size_t j = std::min(sw.precision.find(',', i), sw.precision.size());
      precisions.push_back(sw.precision.substr(i, j - i));
      i = j + 1;
    }
    for (const std::string& pr : precisions) {
    // each precision from an empty operand cache (the previous one's operands would be kept
    // and rewritten by every later step)
    if (ctx.operands) ctx.operands->clear();
    restore();
    ctx.linear.mode = ops::parse_precision(pr, "--precision");
    ctx.linear.share_inputs = tri(sw.share_inputs);
    if (dev == Device::cuda) ops::reset_device_peak(dev);
    const double t = bench::median_seconds(step, warmup, steps, dev);
    const model::ParamCounts c = model::count_params(a);
    const double fpt = model::train_flops_per_token(a, T);
    const double tps = double(B * T) / t;
    const double tflops = fpt * tps / 1e12;
    const ops::DeviceMemory mem =
        dev == Device::cuda ? ops::device_memory(dev) : ops::DeviceMemory{};
    std::printf(
        "train step %s %s B=%ld T=%ld: %.1f ms, %.0f tokens/s, %.1f TFLOP/s, MFU %.1f%% "
        "(of the BF16 dense peak %.1f), loss %.4f, params %.3fB total (+%.3fB MTP) %.3fB active, "
        "GPU peak "
        "%.1f GiB%s\n",
        preset.c_str(), pr.c_str(), long(B), long(T), t * 1e3, tps, tflops, 100.0 * tflops / peak,
        peak, last_loss, double(c.total) / 1e9, double(c.mtp) / 1e9, double(c.activated) / 1e9,
        double(mem.peak_used) / double(1ull << 30), tag.c_str());
    std::printf("{\"bench\":\"train_step\",\"impl\":\"ds\",\"preset\":\"%s\",\"precision\":\"%s\","
                "\"batch\":%ld,\"seq\":%ld,\"step_ms\":%.2f,\"tokens_per_s\":%.1f,\"tflops\":%.2f,"
                "\"mfu\":%.4f,\"peak_tflops\":%.1f,\"flops_per_token\":%.6g,\"loss\":%.9g,"
                "\"gpu_peak_gib\":%.2f%s}\n", preset.c_str(), pr.c_str(), long(B), long(T),
                t * 1e3, tps, tflops, tflops / peak, peak, fpt, last_loss,
                double(mem.peak_used) / double(1ull << 30), jtag.c_str());
    std::fflush(stdout);
    if (sw.profile) {
      ops::Profiler prof;
      ctx.prof = &prof;
      step();         // fills the pool of timing events (on the GPU), then the measured step
      prof.clear();
      const double tp = bench::median_seconds(step, 0, 1, dev);
      ctx.prof = nullptr;
      std::fprintf(stderr, "profiled step (%s%s; ops timed by %s):", pr.c_str(), tag.c_str(),
                   dev == Device::cuda ? "CUDA events" : "the wall clock");
      const std::string j = train::profile_report(prof, tp, 1, B * T);
      std::printf("{\"bench\":\"train_step_profile\",\"precision\":\"%s\"%s,\"profile\":%s}\n",
                  pr.c_str(), jtag.c_str(), j.c_str());
      std::fflush(stdout);
    }
    }
    if (dev == Device::cuda)   // what the attention switches did (a count of launches)
      std::printf("attention: fused dK/dV passes %ld, one-pass backwards %ld, 64-row kernels "
                  "%ld, staggered kernels %ld, pipelined kernels %ld, split passes on the "
                  "query-stats table %ld%s\n",
                  long(ds::cuda::attention_bwd_fused_launches() - fused_l0),
                  long(ds::cuda::attention_bwd_onepass_launches() - one_l0),
                  long(ds::cuda::attention_rows64_launches() - rows64_l0),
                  long(ds::cuda::attention_staggered_launches() - stag_l0),
                  long(ds::cuda::attention_pipelined_launches() - pipe_l0),
                  long(ds::cuda::attention_bwd_qstats_launches() - qs_l0), tag.c_str());
    if (dev == Device::cuda)   // FP8 Wgrads split along K, tile quantisers (DS_FP8_KSPLIT, _QUANT)
      std::printf("fp8: split-K weight gradients %ld, tile quantisers %ld%s\n",
                  long(ds::cuda::fp8_ksplit_launches() - ks_l0),
                  long(ds::cuda::fp8_quant_tiles_launches() - qt_l0), tag.c_str());
    if (dev == Device::cuda)
      std::printf("routed experts: grouped GEMMs (DS_GROUPED_GEMM=%s; our kernel %s; wgmma "
                  "kernel launches %ld; cuBLAS grouped entry point %s)%s\n",
                  ds::cuda::grouped_gemm_impl() == ds::cuda::GroupedGemmImpl::kernel  ? "kernel"
                  : ds::cuda::grouped_gemm_impl() == ds::cuda::GroupedGemmImpl::wgmma ? "wgmma"
                                                                                      : "cublas",
                  ds::cuda::grouped_gemm_kernel_launches() > launches0 ? "ran" : "not run",
                  long(ds::cuda::grouped_gemm_wgmma_launches() - wgmma_l0),
                  ds::cuda::grouped_gemm_native() ? "used" : "not used or rejected",
                  tag.c_str());
    std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
