// The pre-training run (see include/ds/train/pretrain.hpp): setup, the step loop, evaluation,
// checkpoints and resume. One step = batch(tokens_seen) sequences in micro-batches, gradients
// accumulated with weight 1/n_micro, global-norm clipping, AdamW, then the router-bias update
// from the step's summed expert counts (spec §4.8 steps 1-7).
#include "ds/train/pretrain.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>

#include "ds/core/error.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/data/shard.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/model/transformer.hpp"
#include "ds/train/data_loader.hpp"
#include "ds/train/metrics.hpp"
#include "ds/train/run_setup.hpp"
#include "ds/train/state.hpp"

namespace ds::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// Expert-load MaxVio of one layer: (max load - mean load) / mean load.
double max_violation(const std::vector<int32_t>& counts) {
  if (counts.empty()) return 0;
  double sum = 0, mx = 0;
  for (int32_t c : counts) { sum += c; mx = std::max(mx, double(c)); }
  double mean = sum / double(counts.size());
  return mean > 0 ? (mx - mean) / mean : 0;
}

void add_counts(std::vector<std::vector<int32_t>>& acc, const std::vector<std::vector<int32_t>>& c) {
  if (acc.empty()) { acc = c; return; }
  for (size_t l = 0; l < c.size(); ++l)
    for (size_t e = 0; e < c[l].size(); ++e) acc[l][e] += c[l][e];
}

// Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB).
double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

// --profile: the per-op table on stderr; returns the JSON summary. step_s: wall seconds of
// the timed training steps (evaluation and checkpoints excluded).
json profile_report(const ops::Profiler& prof, double step_s, int64_t steps, int64_t tokens) {
  const double ops_s = prof.seconds(), gemm_s = prof.seconds("gemm");
  const double gemm_gflops = gemm_s > 0 ? prof.flops("gemm") / gemm_s * 1e-9 : 0.0;
  std::vector<ops::Profiler::Entry> es = prof.entries();
  std::sort(es.begin(), es.end(), [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
  std::fprintf(stderr, "\nprofile: %lld steps, %.3f s in steps, %.0f tokens/s\n",
               (long long)steps, step_s, step_s > 0 ? double(tokens) / step_s : 0.0);
  std::fprintf(stderr, "%-32s %-14s %9s %10s %7s %9s\n", "op", "family", "calls", "ms/step",
               "share", "GFLOP/s");
  json ops_j = json::array();
  for (const auto& e : es) {
    const double share = step_s > 0 ? e.seconds / step_s : 0.0;
    const double gf = e.flops > 0 && e.seconds > 0 ? e.flops / e.seconds * 1e-9 : 0.0;
    std::fprintf(stderr, "%-32s %-14s %9lld %10.2f %6.1f%% %9.1f\n", e.op,
                 std::string(e.family).c_str(), (long long)e.calls,
                 1e3 * e.seconds / double(std::max<int64_t>(1, steps)), 100 * share, gf);
    ops_j.push_back({{"op", e.op}, {"family", e.family}, {"calls", e.calls},
                     {"seconds", e.seconds}, {"gflops", gf}});
  }
  json fam = json::object();
  for (const char* f : {"gemm", "attention", "cross_entropy", "norm", "rope_permute", "moe",
                        "embedding", "elementwise", "optimizer"})
    fam[f] = step_s > 0 ? prof.seconds(f) / step_s : 0.0;
  fam["outside_ops"] = step_s > 0 ? std::max(0.0, step_s - ops_s) / step_s : 0.0;
  const double rss = peak_rss_mb();
  std::fprintf(stderr, "GEMM share %.1f%%, GEMM %.1f GFLOP/s, outside ops %.1f%%, peak RSS %.0f MiB\n",
               100 * (step_s > 0 ? gemm_s / step_s : 0.0), gemm_gflops,
               100 * fam["outside_ops"].get<double>(), rss);
  return json{{"steps", steps}, {"step_seconds", step_s},
              {"tokens_per_s", step_s > 0 ? double(tokens) / step_s : 0.0},
              {"gemm_share", step_s > 0 ? gemm_s / step_s : 0.0}, {"gemm_gflops", gemm_gflops},
              {"gemm_gflop_per_step", prof.flops("gemm") * 1e-9 / double(std::max<int64_t>(1, steps))},
              {"op_share", fam}, {"peak_rss_mb", rss}, {"ops", ops_j}};
}

struct Run {
  const PretrainOptions& o;
  RunSetup setup;
  std::unique_ptr<data::Dataset> dataset;
  std::unique_ptr<PackedLoader> loader;
  model::ParamStore params;
  std::unique_ptr<model::Transformer> model;
  std::unique_ptr<AdamW> opt;
  std::unique_ptr<Schedule> sched;
  TrainerState st;
  MetricsWriter metrics;
  ops::Context ctx;
  ops::Profiler prof;                  // used with --profile
  double prof_step_s = 0;              // wall seconds of the profiled steps
  int64_t prof_steps = 0, prof_tokens = 0;

  explicit Run(const PretrainOptions& opts) : o(opts) {}
  void init();
  double evaluate();
  void save();
  bool step_once(Progress& progress);
};

void Run::init() {
  setup = resolve_setup(o);
  ctx = setup.ctx;
  if (o.profile) ctx.prof = &prof;
  dataset = std::make_unique<data::Dataset>(o.data, setup.expected_fingerprint);
  if (dataset->manifest().vocab_size > uint64_t(setup.args.vocab_size))
    DS_THROW(UsageError, "{}: dataset vocabulary ({}) is larger than the model's vocab_size ({})",
             o.data, dataset->manifest().vocab_size, setup.args.vocab_size);
  int64_t n_seq = (int64_t(dataset->n_tokens()) - 1) / o.seq_len;
  int64_t val = o.val_sequences >= 0 ? o.val_sequences
                                     : std::min<int64_t>(256, std::max<int64_t>(1, n_seq / 100));
  if (o.eval_every <= 0 && o.val_sequences < 0) val = 0;
  loader = std::make_unique<PackedLoader>(*dataset, o.seq_len, o.seed, val);
  model = std::make_unique<model::Transformer>(setup.args, params);
  params.alloc_grads();
  params.init(o.seed);
  opt = std::make_unique<AdamW>(params, o.optimizer);
  sched = std::make_unique<Schedule>(o.schedule, setup.total_tokens, setup.total_steps,
                                     o.batch_size);
  st.seed = o.seed;
  st.seq_len = o.seq_len;
  st.total_steps = setup.total_steps;
  st.total_tokens = setup.total_tokens;
  if (!setup.resume_from.empty()) {
    TrainerState saved = load_checkpoint(setup.resume_from, params, *opt);
    if (saved.seed != st.seed || saved.seq_len != st.seq_len)
      DS_THROW(UsageError, "{}: saved with --seed {} --seq-len {}; resume needs the same values",
               setup.resume_from.string(), saved.seed, saved.seq_len);
    if (saved.total_steps != st.total_steps || saved.total_tokens != st.total_tokens)
      spdlog::info("resume: run length changed ({} -> {} steps); schedules follow the new length",
                   saved.total_steps, st.total_steps);
    saved.total_steps = st.total_steps;
    saved.total_tokens = st.total_tokens;
    st = saved;
    loader->set_state(st.data);
    spdlog::info("resumed from {} at step {} ({} tokens)", setup.resume_from.string(), st.step,
                 st.tokens_seen);
  }
  metrics.open(o.metrics, setup.resume_from.empty() ? -1 : st.step);
}

double Run::evaluate() {
  int64_t n_val = loader->n_val();
  if (n_val == 0) return NAN;
  int64_t B = std::max<int64_t>(1, o.micro_batch_size > 0 ? o.micro_batch_size : o.batch_size);
  int64_t batches = std::min<int64_t>(o.eval_batches, (n_val + B - 1) / B);
  double sum = 0;
  int64_t n = 0;
  model::LossWeights w{0.0f, 0.0f};
  for (int64_t i = 0; i < batches; ++i) {
    int64_t first = i * B, b = std::min(B, n_val - first);
    model::Batch batch;
    batch.tokens = Tensor::empty({b, o.seq_len + 1}, DType::i32);
    loader->val_batch(first, b, batch.tokens);
    auto r = model->forward_loss(ctx, batch, w);
    sum += r.loss_main * double(b);
    n += b;
  }
  return sum / double(n);
}

void Run::save() {
  SaveSpec spec;
  spec.dir = fs::path(o.out) / io::checkpoint_dir_name(uint64_t(st.step));
  spec.tokenizer = o.tokenizer;
  spec.bf16 = o.save_bf16;
  st.data = loader->state();
  save_checkpoint(spec, setup.args, params, *opt, st);
  auto removed = io::prune_checkpoints(o.out, o.keep_last);
  spdlog::info("saved {}{}", spec.dir.string(),
               removed.empty() ? "" : fmt::format(" (pruned {} older)", removed.size()));
}

// One optimiser step; returns false when the run must stop (signal).
bool Run::step_once(Progress& progress) {
  auto t0 = std::chrono::steady_clock::now();
  int64_t B = sched->batch(st.tokens_seen);
  int64_t micro = o.micro_batch_size > 0 ? std::min(o.micro_batch_size, B) : B;
  int64_t n_micro = (B + micro - 1) / micro;
  double lambda = sched->mtp_lambda(st.tokens_seen), gamma = sched->gamma(st.tokens_seen);
  double lr = sched->lr(st.step, st.tokens_seen);
  model::LossWeights w{float(lambda), float(o.balance_alpha)};
  params.zero_grads();
  double loss = 0, lmain = 0, lmtp = 0, lbal = 0;
  std::vector<std::vector<int32_t>> counts;
  for (int64_t m = 0; m < n_micro; ++m) {
    int64_t b = std::min(micro, B - m * micro);
    model::Batch batch;
    batch.tokens = Tensor::empty({b, o.seq_len + 1}, DType::i32);
    loader->next(b, batch.tokens);
    // each micro-batch's mean loss weighs b/B of the step's loss
    auto r = model->forward_backward(ctx, batch, w, float(double(b) / double(B)));
    double f = double(b) / double(B);
    loss += f * r.loss; lmain += f * r.loss_main; lmtp += f * r.loss_mtp; lbal += f * r.loss_balance;
    add_counts(counts, r.expert_counts);
  }
  GradStats gs = opt->grad_stats(ctx);
  bool finite = std::isfinite(loss) && gs.nonfinite == 0;
  st.step++;
  st.tokens_seen += B * o.seq_len;
  if (!finite) {
    if (!o.skip_nonfinite)
      DS_THROW(NumericsError,
               "step {}: non-finite {} (loss {}); stopped without saving: the last checkpoint in "
               "{} is intact (use --skip-nonfinite to skip such steps)",
               st.step, std::isfinite(loss) ? "gradient" : "loss", loss, o.out);
    st.nonfinite_skipped++;
    spdlog::warn("step {}: non-finite loss or gradient, step skipped ({} so far)", st.step,
                 st.nonfinite_skipped);
  } else {
    opt->step(ctx, float(lr), gs);
    st.optimizer_steps++;
    model->update_router_bias(counts, float(gamma));
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double tps = double(B * o.seq_len) / std::max(1e-9, secs);
  prof_step_s += secs;
  prof_steps += 1;
  prof_tokens += B * o.seq_len;
  json j{{"step", st.step}, {"tokens", st.tokens_seen}, {"loss", loss}, {"loss_main", lmain},
         {"loss_mtp", lmtp}, {"loss_balance", lbal}, {"lr", lr}, {"grad_norm", gs.norm},
         {"batch", B}, {"mtp_lambda", lambda}, {"gamma", gamma}, {"tokens_per_s", tps},
         {"skipped", !finite}};
  json mv = json::array();
  for (auto& c : counts) mv.push_back(max_violation(c));
  j["maxvio"] = mv;
  bool eval_now = o.eval_every > 0 && (st.step % o.eval_every == 0 || st.step == st.total_steps);
  if (eval_now) {
    ctx.prof = nullptr;                  // the profile covers training steps only
    double v = evaluate();
    if (o.profile) ctx.prof = &prof;
    if (std::isfinite(v)) j["val_loss"] = v;
    spdlog::info("step {}: validation loss {:.4f}", st.step, v);
  }
  metrics.write(j.dump());
  progress.update(st.step, loss, lr, tps);
  if (o.save_every > 0 && st.step % o.save_every == 0 && st.step < st.total_steps) save();
  return g_stop_signal == 0;
}

}  // namespace

void pretrain(const PretrainOptions& opts) {
  Run run(opts);
  run.init();
  if (run.st.step >= run.st.total_steps) {
    spdlog::info("nothing to do: the checkpoint is at step {} of {}", run.st.step,
                 run.st.total_steps);
    return;
  }
  auto prev_term = std::signal(SIGTERM, on_stop_signal);
  auto prev_int = std::signal(SIGINT, on_stop_signal);
  g_stop_signal = 0;
  spdlog::info("training {} parameters for {} steps ({} tokens), batch {} x {} tokens, {} threads",
               run.params.numel(), run.st.total_steps, run.st.total_tokens, opts.batch_size,
               opts.seq_len, run.ctx.threads);
  Progress progress(run.st.total_steps, opts.log_every);
  int64_t stop_at = opts.stop_after > 0 ? run.st.step + opts.stop_after
                                             : run.st.total_steps;
  bool interrupted = false;
  while (run.st.step < std::min(stop_at, run.st.total_steps)) {
    if (!run.step_once(progress)) { interrupted = true; break; }
  }
  progress.finish();
  std::signal(SIGTERM, prev_term);
  std::signal(SIGINT, prev_int);
  if (interrupted) spdlog::warn("signal {} received: saving a checkpoint and stopping", int(g_stop_signal));
  run.save();
  json summary{{"steps", run.st.step}, {"tokens", run.st.tokens_seen},
               {"checkpoint", (fs::path(opts.out) / io::checkpoint_dir_name(uint64_t(run.st.step))).string()},
               {"nonfinite_skipped", run.st.nonfinite_skipped}, {"interrupted", interrupted}};
  if (opts.profile)
    summary["profile"] = profile_report(run.prof, run.prof_step_s, run.prof_steps, run.prof_tokens);
  std::printf("%s\n", summary.dump().c_str());
}

}  // namespace ds::train
