// Multiple-choice scoring benchmark: --items items of one --context-len context and --choices
// continuations of --choice-len tokens each (random tokens, random weights of a preset),
// scored as ds-eval mc scored them before (score_requests: a full forward of every choice,
// --batch sequences per forward) and as it does now (score_shared_prefix: the engine, the
// context once per item, its cache copied to the choices, --batch slots), the two alternating
// --reps times after one untimed run of each. Prints one JSON line: median seconds of each,
// the median over the pairs of the speed-up, and the largest difference of a log-likelihood
// between the two.
// reference: docs/benchmarks.md conventions (figures, not timed tests).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "ds/eval/lm_scorer.hpp"
#include "../bench_util.hpp"

using ds::bench::median;

int main(int argc, char** argv) {
  CLI::App app{"Multiple-choice scoring: full forwards against a shared context",
               "ds_bench_mc_scoring"};
  std::string preset = "tiny";
  int64_t items = 16, context_len = 256, choices = 4, choice_len = 8, batch = 8;
  int reps = 3, threads = 0;
  app.add_option("--preset", preset, "tiny or small (random weights)")->capture_default_str();
  app.add_option("--items", items, "Items")->capture_default_str();
  app.add_option("--context-len", context_len, "Context tokens per item")->capture_default_str();
  app.add_option("--choices", choices, "Choices per item")->capture_default_str();
  app.add_option("--choice-len", choice_len, "Tokens per choice")->capture_default_str();
  app.add_option("--batch", batch, "Sequences per forward / engine slots")
      ->capture_default_str();
  app.add_option("--reps", reps, "Pairs of runs (median)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0: all)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (items < 1 || context_len < 1 || choices < 1 || choice_len < 1 || batch < choices ||
      reps < 1) {
    fmt::print(stderr, "bad sizes: every size >= 1, --batch >= --choices\n");
    return 2;
  }

  using namespace ds;
  bench::RandomModel m(preset);
  const model::ModelArgs& args = m.args;
  const ops::Context ctx = bench::cpu_context(threads);
  std::mt19937_64 rng(9);
  const auto id = [&] { return tok::TokenId(rng() % uint64_t(args.vocab_size)); };
  std::vector<std::vector<tok::TokenId>> seqs;
  for (int64_t i = 0; i < items; ++i) {
    std::vector<tok::TokenId> context(static_cast<size_t>(context_len));
    for (auto& t : context) t = id();
    for (int64_t c = 0; c < choices; ++c) {
      seqs.push_back(context);
      for (int64_t k = 0; k < choice_len; ++k) seqs.back().push_back(id());
    }
  }
  std::vector<eval::ScoreRequest> reqs;
  for (const auto& s : seqs) reqs.push_back({s, size_t(context_len), s.size()});
  const std::vector<size_t> groups(static_cast<size_t>(items), static_cast<size_t>(choices));
  infer::Engine eng(args, m.store, ctx,
                    infer::EngineOptions{int(batch), context_len + choice_len});

  using Clock = std::chrono::steady_clock;
  std::vector<double> secs[2], speedup;
  double max_diff = 0;
  (void)eval::score_requests(*m.tf, ctx, reqs, size_t(batch));   // warm-up: first-touch
  (void)eval::score_shared_prefix(eng, reqs, groups);
  for (int r = 0; r < reps; ++r) {
    std::vector<eval::ScoreResult> out[2];
    double t[2];
    for (int k : {0, 1}) {   // the full forwards first in one pair, second in the next
      const int which = (r % 2) ? 1 - k : k;
      const auto t0 = Clock::now();
      out[which] = which == 0 ? eval::score_requests(*m.tf, ctx, reqs, size_t(batch))
                              : eval::score_shared_prefix(eng, reqs, groups);
      t[which] = std::chrono::duration<double>(Clock::now() - t0).count();
      secs[which].push_back(t[which]);
    }
    speedup.push_back(t[0] / t[1]);
    for (size_t i = 0; i < reqs.size(); ++i)
      max_diff = std::max(max_diff, std::fabs(out[0][i].logprob - out[1][i].logprob));
  }
  fmt::print(
      "{{\"preset\":\"{}\",\"threads\":{},\"items\":{},\"context_len\":{},\"choices\":{},"
      "\"choice_len\":{},\"batch\":{},\"reps\":{},\"full_forwards_s\":{:.3f},"
      "\"shared_context_s\":{:.3f},\"speedup\":{:.2f},\"max_logprob_diff\":{:.3g}}}\n",
      preset, ctx.threads, items, context_len, choices, choice_len, batch, reps,
      median(secs[0]), median(secs[1]), median(speedup), max_diff);
  return 0;
}
