// Shared prefill benchmark: infer::generate over --samples copies of one prompt (pass@k
// samples of ds-eval, a GRPO group of ds-rl), or with --common-prefix K over --samples prompts
// that share only their first K tokens (a system prompt), sampled decoding, with the prefill
// shared (computed once, the cache copied: GenerationConfig::share_prefill) and without, the
// two alternating --reps times on the same engine after one untimed call. Prints one JSON
// line: medians of the wall time per generate call and of its prefill part for both, the
// median over the pairs of the speed-up, and whether both produced the same tokens. Random
// weights of a preset. --turns T instead times a chat of T turns on one slot, each prompt the
// conversation so far plus --prompt-len new tokens, with GenerationConfig::reuse_cache (the
// earlier turns kept in the cache) and without ("shared" / "unshared" in the output).
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
  int64_t prompt_len = 512, new_tokens = 64, common_prefix = 0, turns = 0;
  int samples = 8, reps = 3, threads = 0;
  app.add_option("--preset", preset, "tiny or small (random weights)")->capture_default_str();
  app.add_option("--prompt-len", prompt_len, "Prompt tokens")->capture_default_str();
  app.add_option("--new-tokens", new_tokens, "Tokens generated per sample")
      ->capture_default_str();
  app.add_option("--samples", samples, "Copies of the prompt in one call")->capture_default_str();
  app.add_option("--common-prefix", common_prefix,
                 "Distinct prompts sharing this many first tokens (0: identical prompts)")
      ->capture_default_str();
  app.add_option("--turns", turns,
                 "A chat of this many turns instead: each turn's prompt is the conversation so "
                 "far and --prompt-len new tokens; cache reuse on and off (0: batch mode)")
      ->capture_default_str();
  app.add_option("--reps", reps, "Pairs of runs (median)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0: all)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (samples < 1 || prompt_len < 1 || new_tokens < 1 || reps < 1 || common_prefix < 0 ||
      common_prefix >= prompt_len || turns < 0 || (turns > 0 && (samples != 1 || common_prefix))) {
    fmt::print(stderr, "bad sizes: every size >= 1, --common-prefix < --prompt-len; --turns "
                       "with one sample and no --common-prefix\n");
    return 2;
  }

  using namespace ds;
  bench::RandomModel m(preset);
  const model::ModelArgs& args = m.args;
  const ops::Context ctx = bench::cpu_context(threads);
  const int64_t capacity = std::max<int64_t>(1, turns) * (prompt_len + new_tokens) + 1;
  infer::Engine eng(args, m.store, ctx, infer::EngineOptions{samples, capacity});
  std::mt19937_64 rng(5);
  const auto random_prompt = [&] {
    std::vector<int32_t> p(static_cast<size_t>(prompt_len));
    for (auto& t : p) t = int32_t(rng() % uint64_t(args.vocab_size));
    return p;
  };
  std::vector<std::vector<int32_t>> batch(size_t(samples), random_prompt());
  if (common_prefix > 0)   // each its own tail after the common tokens
    for (auto& p : batch)
      for (size_t i = size_t(common_prefix); i < p.size(); ++i)
        p[i] = int32_t(rng() % uint64_t(args.vocab_size));
  std::vector<std::vector<int32_t>> messages;   // chat mode: each turn's new tokens
  for (int64_t t = 1; t < turns; ++t) messages.push_back(random_prompt());

  infer::GenerationConfig cfg;
  cfg.sampling.temperature = 1.0f;   // every sample its own stream
  cfg.stop.max_new_tokens = size_t(new_tokens);   // no stop ids: every sample runs to the end
  // One run with sharing (batch mode) or cache reuse (chat mode) on or off: its generated
  // tokens and, in `st`, its timings.
  const auto run = [&](bool on, infer::GenerationStats& st) {
    std::vector<std::vector<int32_t>> out;
    if (turns == 0) {
      cfg.share_prefill = on;
      for (auto& c : infer::generate(eng, batch, cfg, nullptr, &st)) out.push_back(c.tokens);
      return out;
    }
    cfg.reuse_cache = on;
    std::vector<int32_t> conversation = batch[0];
    for (int64_t t = 0; t < turns; ++t) {
      cfg.first_seq = uint64_t(t);
      out.push_back(infer::generate(eng, {conversation}, cfg, nullptr, &st)[0].tokens);
      if (t + 1 == turns) break;
      conversation.insert(conversation.end(), out.back().begin(), out.back().end());
      conversation.insert(conversation.end(), messages[size_t(t)].begin(),
                          messages[size_t(t)].end());
    }
    return out;
  };
  using Clock = std::chrono::steady_clock;
  std::vector<double> wall[2], prefill[2], speedup;
  bool same = true;
  {
    infer::GenerationStats warm;
    (void)run(true, warm);   // warm-up: first-touch of the buffers
  }
  for (int r = 0; r < reps; ++r) {
    std::vector<std::vector<int32_t>> out[2];
    double t[2];
    for (int on : {1, 0}) {   // the shared run first in one pair, second in the next
      const int s = (r % 2) ? 1 - on : on;
      infer::GenerationStats st;
      const auto t0 = Clock::now();
      out[s] = run(s == 1, st);
      t[s] = std::chrono::duration<double>(Clock::now() - t0).count();
      wall[s].push_back(t[s]);
      prefill[s].push_back(st.prefill_s);
    }
    speedup.push_back(t[0] / t[1]);
    same = same && out[0] == out[1];
  }
  fmt::print(
      "{{\"preset\":\"{}\",\"threads\":{},\"samples\":{},\"prompt_len\":{},\"common_prefix\":{},"
      "\"turns\":{},\"new_tokens\":{},"
      "\"reps\":{},\"unshared_s\":{:.3f},\"shared_s\":{:.3f},\"unshared_prefill_s\":{:.3f},"
      "\"shared_prefill_s\":{:.3f},\"speedup\":{:.2f},\"same_tokens\":{}}}\n",
      preset, ctx.threads, samples, prompt_len, common_prefix, turns, new_tokens, reps,
      median(wall[0]), median(wall[1]), median(prefill[0]), median(prefill[1]),
      median(speedup), same);
  return same ? 0 : 1;
}
