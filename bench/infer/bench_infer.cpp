// Inference engine benchmark: for a preset with random weights (or a checkpoint), prefill
// tokens/s of one prompt of --prompt-len tokens and decode tokens/s of --new-tokens single-token
// steps after it, for --batch sequences, medians over --reps; KV-cache bytes per token by
// formula and as measured from the allocated cache. Prints one JSON line. --save DIR writes the
// weights (config.json + model.safetensors) so bench_torch_generate.py can time the same model.
// --bf16-weights rounds the random weights to BF16 first (as a BF16 checkpoint: the engine then
// holds its linear weights as BF16; the saved F32 file carries the same values for PyTorch).
// --kv-cache bf16 holds the latent cache in BF16 (EngineOptions::kv_cache).
// reference: docs/benchmarks.md conventions (figures, not timed tests).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "ds/core/dtype.hpp"
#include "ds/infer/engine.hpp"
#include "ds/model/checkpoint_io.hpp"
#include "ds/model/transformer.hpp"
#include "../bench_util.hpp"

using ds::bench::median;

int main(int argc, char** argv) {
  CLI::App app{"Inference engine prefill/decode benchmark", "ds_bench_infer"};
  std::string preset = "tiny", save;
  int64_t prompt_len = 128, new_tokens = 64;
  int batch = 1, reps = 3, threads = 0;
  double init_std = 0.02;
  bool bf16_weights = false;
  std::string kv_cache = "f32";
  app.add_option("--preset", preset, "tiny or small (random weights)")->capture_default_str();
  app.add_option("--prompt-len", prompt_len, "Prompt tokens")->capture_default_str();
  app.add_option("--new-tokens", new_tokens, "Decode steps")->capture_default_str();
  app.add_option("--batch", batch, "Sequences")->capture_default_str();
  app.add_option("--reps", reps, "Repetitions (median)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0: all)")->capture_default_str();
  app.add_option("--init-std", init_std, "Weight init std")->capture_default_str();
  app.add_option("--save", save, "Write the weights to this directory");
  app.add_flag("--bf16-weights", bf16_weights, "Round the random weights to BF16 values");
  app.add_option("--kv-cache", kv_cache, "Latent cache dtype: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  using namespace ds;
  model::ModelArgs args = model::preset(preset);
  args.init_std = init_std;
  model::ParamStore store;
  model::Transformer tf(args, store);
  store.init(1234);
  if (bf16_weights)
    for (model::Param& p : store.params()) {
      float* v = p.value.f32();
      for (int64_t i = 0; i < p.value.numel(); ++i) v[i] = bf16_to_f32(f32_to_bf16(v[i]));
    }
  if (!save.empty()) {
    std::filesystem::create_directories(save);
    model::save_model(store, args, save, false);
  }
  ops::Context ctx;
  ctx.threads = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
  ops::set_cpu_threads(ctx.threads);
  infer::EngineOptions eo;
  eo.slots = batch;
  eo.capacity = prompt_len + new_tokens + 1;
  eo.kv_cache = kv_cache == "bf16" ? DType::bf16 : DType::f32;
  infer::Engine eng(args, store, ctx, eo);
  std::mt19937_64 rng(5);
  std::vector<std::vector<int32_t>> prompts(size_t(batch),
                                            std::vector<int32_t>(size_t(prompt_len), 0));
  for (auto& p : prompts)
    for (auto& t : p) t = int32_t(rng() % uint64_t(args.vocab_size));
  using Clock = std::chrono::steady_clock;
  std::vector<double> pf, dec;
  for (int r = 0; r < reps; ++r) {
    std::vector<infer::SeqChunk> chunks;
    for (int b = 0; b < batch; ++b) {
      eng.reset(b);
      chunks.push_back({b, prompts[size_t(b)], false});
    }
    auto t0 = Clock::now();
    infer::StepOutput o = eng.forward(chunks);
    pf.push_back(double(batch * prompt_len) /
                 std::chrono::duration<double>(Clock::now() - t0).count());
    std::vector<int32_t> next(size_t(batch), 1);
    t0 = Clock::now();
    for (int64_t s = 0; s < new_tokens; ++s) {
      std::vector<infer::SeqChunk> d;
      for (int b = 0; b < batch; ++b)
        d.push_back({b, std::span<const int32_t>(&next[size_t(b)], 1), false});
      o = eng.forward(d);
      for (int b = 0; b < batch; ++b) {   // greedy next token (host argmax)
        const float* row = o.logits.f32() + int64_t(b) * args.vocab_size;
        next[size_t(b)] = int32_t(std::max_element(row, row + args.vocab_size) - row);
      }
    }
    dec.push_back(double(batch * new_tokens) /
                  std::chrono::duration<double>(Clock::now() - t0).count());
  }
  // measured: the allocated cache tensors' bytes over the positions they hold
  const int64_t measured_total = eng.cache_bytes_allocated();
  fmt::print(
      "{{\"preset\":\"{}\",\"kv_cache\":\"{}\",\"threads\":{},\"batch\":{},\"prompt_len\":{},\"new_"
      "tokens\":{},"
      "\"prefill_tokens_per_s\":{:.1f},\"decode_tokens_per_s\":{:.1f},"
      "\"kv_bytes_per_token\":{},\"kv_bytes_per_token_measured\":{},"
      "\"naive_kv_bytes_per_token\":{},\"bf16_weight_tensors\":{}}}\n",
      preset, kv_cache, ctx.threads, batch, prompt_len, new_tokens, median(pf), median(dec),
      eng.cache_bytes_per_token(), measured_total / (int64_t(batch) * eng.capacity()),
      eng.naive_cache_bytes_per_token(), eng.bf16_weight_count());
  return 0;
}
