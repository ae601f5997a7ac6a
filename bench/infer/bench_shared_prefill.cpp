// Shared prefill benchmark: infer::generate over --samples copies of one prompt (pass@k
// samples of ds-eval, a GRPO group of ds-rl), or with --common-prefix K over --samples prompts
// that share only their first K tokens (a system prompt), sampled decoding, with the prefill
// shared (computed once, the cache copied: GenerationConfig::share_prefill) and without, the
// two alternating --reps times on the same engine after one untimed call. Prints one JSON
// line: medians of the wall time per generate call and of its prefill part for both, the
// median over the pairs of the speed-up, and whether both produced the same tokens. Random
// weights of a preset.
// reference: docs/benchmarks.md conventions (figures, not timed tests).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "ds/infer/generator.hpp"
#include "ds/model/transformer.hpp"
#include "../bench_util.hpp"

using ds::bench::median;

int main(int argc, char** argv) {
  CLI::App app{"Generation with and without the shared prefill of repeated prompts",
               "ds_bench_shared_prefill"};
  std::string preset = "tiny";
  int64_t prompt_len = 512, new_tokens = 64, common_prefix = 0;
  int samples = 8, reps = 3, threads = 0;
  app.add_option("--preset", preset, "tiny or small (random weights)")->capture_default_str();
  app.add_option("--prompt-len", prompt_len, "Prompt tokens")->capture_default_str();
  app.add_option("--new-tokens", new_tokens, "Tokens generated per sample")
      ->capture_default_str();
  app.add_option("--samples", samples, "Copies of the prompt in one call")->capture_default_str();
  app.add_option("--common-prefix", common_prefix,
                 "Distinct prompts sharing this many first tokens (0: identical prompts)")
      ->capture_default_str();
  app.add_option("--reps", reps, "Pairs of calls (median)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0: all)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (samples < 1 || prompt_len < 1 || new_tokens < 1 || reps < 1 || common_prefix < 0 ||
      common_prefix >= prompt_len) {
    fmt::print(stderr, "bad sizes: every size >= 1, --common-prefix < --prompt-len\n");
    return 2;
  }

  using namespace ds;
  bench::RandomModel m(preset);
  const model::ModelArgs& args = m.args;
  const ops::Context ctx = bench::cpu_context(threads);
  infer::Engine eng(args, m.store, ctx,
                    infer::EngineOptions{samples, prompt_len + new_tokens + 1});
  std::mt19937_64 rng(5);
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
  for (auto& t : prompt) t = int32_t(rng() % uint64_t(args.vocab_size));
  std::vector<std::vector<int32_t>> batch(size_t(samples), prompt);
  if (common_prefix > 0)   // each its own tail after the common tokens
    for (auto& p : batch)
      for (size_t i = size_t(common_prefix); i < p.size(); ++i)
        p[i] = int32_t(rng() % uint64_t(args.vocab_size));

  infer::GenerationConfig cfg;
  cfg.sampling.temperature = 1.0f;   // every sample its own stream
  cfg.stop.max_new_tokens = size_t(new_tokens);   // no stop ids: every sample runs to the end
  using Clock = std::chrono::steady_clock;
  std::vector<double> wall[2], prefill[2], speedup;
  bool same = true;
  (void)infer::generate(eng, batch, cfg, nullptr);   // warm-up: first-touch of the buffers
  for (int r = 0; r < reps; ++r) {
    std::vector<infer::Completion> out[2];
    double t[2];
    for (int shared : {1, 0}) {   // the shared call first in one pair, second in the next
      const int s = (r % 2) ? 1 - shared : shared;
      cfg.share_prefill = s == 1;
      infer::GenerationStats st;
      const auto t0 = Clock::now();
      out[s] = infer::generate(eng, batch, cfg, nullptr, &st);
      t[s] = std::chrono::duration<double>(Clock::now() - t0).count();
      wall[s].push_back(t[s]);
      prefill[s].push_back(st.prefill_s);
    }
    speedup.push_back(t[0] / t[1]);
    for (int i = 0; i < samples; ++i)
      same = same && out[0][size_t(i)].tokens == out[1][size_t(i)].tokens;
  }
  fmt::print(
      "{{\"preset\":\"{}\",\"threads\":{},\"samples\":{},\"prompt_len\":{},\"common_prefix\":{},"
      "\"new_tokens\":{},"
      "\"reps\":{},\"unshared_s\":{:.3f},\"shared_s\":{:.3f},\"unshared_prefill_s\":{:.3f},"
      "\"shared_prefill_s\":{:.3f},\"speedup\":{:.2f},\"same_tokens\":{}}}\n",
      preset, ctx.threads, samples, prompt_len, common_prefix, new_tokens, reps, median(wall[0]),
      median(wall[1]), median(prefill[0]), median(prefill[1]), median(speedup), same);
  return same ? 0 : 1;
}
