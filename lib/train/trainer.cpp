// Shared training-loop building blocks (see include/ds/train/trainer.hpp).
#include "ds/train/trainer.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/core/name_list.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"

namespace ds::train {

namespace fs = std::filesystem;
using nlohmann::json;

double max_violation(const std::vector<int32_t>& counts) {
  if (counts.empty()) return 0;
  double sum = 0, mx = 0;
  for (int32_t c : counts) { sum += c; mx = std::max(mx, double(c)); }
  double mean = sum / double(counts.size());
  return mean > 0 ? (mx - mean) / mean : 0;
}

model::LossWeights micro_loss_weights(const model::LossWeights& w, int64_t rows_m, int64_t B,
                                      double share) {
  model::LossWeights m = w;
  m.balance_alpha = share > 0 ? float(double(w.balance_alpha) * double(rows_m) / double(B) / share)
                              : 0.0f;
  return m;
}

void StepAccumulator::add(const model::StepResult& r, double share) {
  loss += share * r.loss;
  loss_main += share * r.loss_main;
  loss_mtp += share * r.loss_mtp;
  loss_balance += share * r.loss_balance;
  if (expert_counts.empty()) {
    expert_counts = r.expert_counts;
    return;
  }
  DS_CHECK(expert_counts.size() == r.expert_counts.size(), "expert counts: {} layers, then {}",
           expert_counts.size(), r.expert_counts.size());
  for (size_t l = 0; l < r.expert_counts.size(); ++l)
    for (size_t e = 0; e < r.expert_counts[l].size(); ++e)
      expert_counts[l][e] += r.expert_counts[l][e];
}

std::vector<double> StepAccumulator::maxvio() const {
  std::vector<double> out;
  out.reserve(expert_counts.size());
  for (const auto& c : expert_counts) out.push_back(max_violation(c));
  return out;
}

void check_resume_config(const fs::path& ckpt, const model::ModelArgs& run,
                         const std::string& hint) {
  const fs::path cfg = ckpt / "config.json";
  const json saved = json::parse(model::to_hf_json(model::load_config(cfg)));
  const json here = json::parse(model::to_hf_json(run));
  std::vector<std::string> differ;
  for (const auto& [key, value] : saved.items()) {
    const auto it = here.find(key);
    const std::string now = it == here.end() ? "none" : it->dump();
    if (now == value.dump()) continue;
    // ds before 2026-12-06 wrote 0 / 1 whatever the tokenizer: the run's ids (the tokenizer's)
    // are not a different model, and its checkpoints will carry them
    if (key == "bos_token_id" || key == "eos_token_id")
      spdlog::info("{}: {} {}; the run's tokenizer says {}, which its checkpoints will hold",
                   cfg.string(), key, value.dump(), now);
    else
      differ.push_back(fmt::format("{} {} vs {}", key, value.dump(), now));
  }
  for (const auto& [key, value] : here.items())
    if (!saved.contains(key)) differ.push_back(fmt::format("{} none vs {}", key, value.dump()));
  if (!differ.empty())
    DS_THROW(UsageError, "{}: the checkpoint's model differs from this run's (checkpoint vs "
             "run: {}); resume with {}", cfg.string(), name_list(differ), hint);
}

bool finite_or_skip(const ops::Context& ctx, const model::ParamStore& params, TrainerState& st,
                    double loss, const GradStats& grads, bool skip_nonfinite,
                    const std::string& run_dir) {
  if (std::isfinite(loss) && grads.nonfinite == 0) {
    st.nonfinite_streak = 0;
    return true;
  }
  if (const auto bad = first_nonfinite_param(ctx, params))   // (only on a non-finite step)
    DS_THROW(NumericsError,
             "step {}: the weights are not finite ({}: {} of {} values NaN or infinite): an "
             "earlier update diverged (--lr too high?); stopped without saving (checkpoints "
             "already in {} are kept)", st.step, bad->param->info.name, bad->count,
             bad->param->value.numel(), run_dir);
  if (!skip_nonfinite)
    DS_THROW(NumericsError,
             "step {}: non-finite {} (loss {}); stopped without saving (checkpoints already in "
             "{} are kept; --skip-nonfinite skips such steps)",
             st.step, std::isfinite(loss) ? "gradient" : "loss", loss, run_dir);
  if (++st.nonfinite_streak >= kMaxNonfiniteStreak)
    DS_THROW(NumericsError,
             "step {}: non-finite loss or gradient for the {}th step in a row: the run has "
             "diverged; stopped without saving (checkpoints already in {} are kept)", st.step,
             st.nonfinite_streak, run_dir);
  st.nonfinite_skipped++;
  spdlog::warn("step {}: non-finite loss or gradient, step skipped ({} so far)", st.step,
               st.nonfinite_skipped);
  return false;
}

UpdateResult apply_update(const ops::Context& ctx, model::Transformer& model, AdamW& opt,
                          TrainerState& st, const StepAccumulator& acc, double lr,
                          double gamma, bool skip_nonfinite, const std::string& run_dir) {
  UpdateResult u;
  // (the weights' cached operands stay valid through a skipped step; AdamW::step refreshes
  // or clears them as it changes the weights)
  u.grads = opt.grad_stats(ctx);
  if (!finite_or_skip(ctx, opt.params(), st, acc.loss, u.grads, skip_nonfinite, run_dir))
    return u;
  opt.step(ctx, float(lr), u.grads);
  st.optimizer_steps++;
  model.update_router_bias(acc.expert_counts, float(gamma));
  u.applied = true;
  return u;
}

int run_step_loop(const TrainerState& st, int64_t stop_after, const std::function<void()>& step,
                  const std::function<bool(bool)>& agree) {
  // Repeated signals are ignored: the step finishes (the callers' scope covers the save).
  InterruptScope scope(InterruptScope::Repeat::kIgnored);
  const int64_t stop_at = stop_after > 0 ? st.step + stop_after : st.total_steps;
  while (st.step < std::min(stop_at, st.total_steps)) {
    // The decision is taken once per step, from one read of the flag (agreed over the ranks
    // when distributed), so every rank runs the same number of steps.
    const int local = interrupt_signal();
    const bool stop = agree ? agree(local != 0) : local != 0;
    if (stop) return local != 0 ? local : SIGTERM;
    step();
  }
  return agree ? 0 : interrupt_signal();   // one that arrived during the last step
}

fs::path save_run_checkpoint(const fs::path& run_dir, int keep_last,
                             const io::TokenizerFiles& tokenizer, bool bf16,
                             const model::ModelArgs& args,
                             const model::ParamStore& params, AdamW& opt,
                             const TrainerState& st, const model::ParamStore* ema) {
  SaveSpec spec;
  spec.dir = run_dir / io::checkpoint_dir_name(uint64_t(st.step));
  spec.tokenizer = tokenizer;
  spec.bf16 = bf16;
  spec.ema = ema;
  save_checkpoint(spec, args, params, opt, st);
  auto removed = io::prune_checkpoints(run_dir, keep_last);
  spdlog::info("saved {}{}", spec.dir.string(),
               removed.empty() ? "" : fmt::format(" (pruned {} older)", removed.size()));
  return spec.dir;
}

namespace {

fs::path canonical_dir(const fs::path& p) {
  std::error_code ec;
  return io::resolved_path(p, ec);
}

}  // namespace

fs::path resolve_resume(const std::string& resume, const std::string& run_dir) {
  if (resume.empty()) return {};
  if (resume == "never") {
    if (auto latest = io::find_latest_checkpoint(run_dir))
      DS_THROW(UsageError, "--resume never: {} already holds checkpoints (up to {}); give another "
               "--out or remove them", run_dir, latest->filename().string());
    return {};
  }
  if (resume == "auto") {
    auto latest = io::find_latest_checkpoint(run_dir);
    if (latest) return *latest;
    spdlog::info("--resume auto: no checkpoint in {}; starting fresh", run_dir);
    return {};
  }
  if (!io::is_directory(resume))
    DS_THROW(UsageError, "--resume {}: not a checkpoint directory", resume);
  const auto ckpt = io::checkpoint_in(resume);
  if (!ckpt)
    DS_THROW(UsageError, "--resume {}: not a checkpoint directory (no config.json)", resume);
  if (*ckpt != fs::path(resume))
    DS_THROW(UsageError, "--resume {}: a run directory, not a checkpoint (its latest is {})",
             resume, ckpt->string());
  // The run continues in run_dir: checkpoints already there must be this one's past. Later
  // ones would be overwritten step by step; another run's would be mixed with this one's.
  const auto latest = io::find_latest_checkpoint(run_dir);
  std::error_code ec;
  if (!latest || fs::equivalent(*latest, resume, ec)) return resume;
  const std::string newest = latest->filename().string();
  if (canonical_dir(resume).parent_path() == canonical_dir(run_dir))
    DS_THROW(UsageError, "--resume {}: --out {} holds later checkpoints (up to {}) that the "
             "resumed run would overwrite: give another --out to branch from it (or remove "
             "them)", resume, run_dir, newest);
  const fs::path state = *latest / "training_state" / "trainer_state.json";
  const std::string origin =
      parse_trainer_state(io::read_file(state), state.string()).branched_from;
  DS_CHECK_AS(UsageError, origin == canonical_dir(resume).string(),
              "--resume {}: --out {} already holds checkpoints (up to {}) of {}: continue them "
              "with --resume auto, or give an empty --out to branch from {}", resume, run_dir,
              newest, origin.empty() ? "another run" : "a run branched from " + origin, resume);
  spdlog::info("--resume {}: --out {} continues the run branched from it; resuming its newest "
               "checkpoint {}", resume, run_dir, newest);
  return *latest;
}

fs::path CheckpointMark::checkpoint(const fs::path& run_dir, int64_t step) const {
  if (step == start_step && saved_step != step && !resumed_from.empty()) return resumed_from;
  return run_dir / io::checkpoint_dir_name(uint64_t(step));
}

std::string branch_origin(const fs::path& resumed, const std::string& run_dir,
                          const std::string& kept) {
  const fs::path dir = canonical_dir(resumed);
  return dir.parent_path() == canonical_dir(run_dir) ? kept : dir.string();
}

double cosine_lr(int64_t step, int64_t total_steps, int64_t warmup_steps, double peak,
                 double final_lr) {
  if (warmup_steps > 0 && step < warmup_steps)
    return peak * double(step + 1) / double(warmup_steps);
  const int64_t span = std::max<int64_t>(1, total_steps - 1 - std::max<int64_t>(0, warmup_steps));
  const double t =
      std::clamp(double(step - std::max<int64_t>(0, warmup_steps)) / double(span), 0.0, 1.0);
  return final_lr + 0.5 * (peak - final_lr) * (1.0 + std::cos(M_PI * t));
}

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;   // Linux reports KiB
}

std::string profile_report(const ops::Profiler& prof, double step_s, int64_t steps,
                           int64_t tokens) {
  const double ops_s = prof.seconds(), gemm_s = prof.seconds("gemm");
  const double gemm_gflops = gemm_s > 0 ? prof.flops("gemm") / gemm_s * 1e-9 : 0.0;
  std::vector<ops::Profiler::Entry> es = prof.entries();
  std::sort(es.begin(), es.end(),
            [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
  std::fprintf(stderr, "\nprofile: %lld steps, %.3f s in steps, %.0f tokens/s\n",
               (long long)steps, step_s, step_s > 0 ? double(tokens) / step_s : 0.0);
  // MB/step and GB/s: the bytes of the ops' operands (each read or written once), the least
  // memory traffic the op has; GB/s against the device's bandwidth says how far an op is
  // from its memory bound.
  std::fprintf(stderr, "%-32s %-14s %9s %10s %7s %9s %10s %8s\n", "op", "family", "calls",
               "ms/step", "share", "GFLOP/s", "MB/step", "GB/s");
  const double nsteps = double(std::max<int64_t>(1, steps));
  json ops_j = json::array();
  for (const auto& e : es) {
    const double share = step_s > 0 ? e.seconds / step_s : 0.0;
    const double gf = e.flops > 0 && e.seconds > 0 ? e.flops / e.seconds * 1e-9 : 0.0;
    const double gbs = e.bytes > 0 && e.seconds > 0 ? e.bytes / e.seconds * 1e-9 : 0.0;
    std::fprintf(stderr, "%-32s %-14s %9lld %10.2f %6.1f%% %9.1f %10.1f %8.1f\n", e.op,
                 std::string(e.family).c_str(), (long long)e.calls, 1e3 * e.seconds / nsteps,
                 100 * share, gf, 1e-6 * e.bytes / nsteps, gbs);
    ops_j.push_back({{"op", e.op}, {"family", e.family}, {"calls", e.calls},
                     {"seconds", e.seconds}, {"gflops", gf}, {"bytes", e.bytes},
                     {"gbytes_per_s", gbs}});
  }
  json fam = json::object();
  for (const char* f : {"gemm", "attention", "cross_entropy", "norm", "rope_permute", "moe",
                        "embedding", "elementwise", "quantize", "optimizer"})
    fam[f] = step_s > 0 ? prof.seconds(f) / step_s : 0.0;
  fam["outside_ops"] = step_s > 0 ? std::max(0.0, step_s - ops_s) / step_s : 0.0;
  const double rss = peak_rss_mb();
  std::fprintf(stderr,
               "GEMM share %.1f%%, GEMM %.1f GFLOP/s, outside ops %.1f%%, peak RSS %.0f MiB\n",
               100 * (step_s > 0 ? gemm_s / step_s : 0.0), gemm_gflops,
               100 * fam["outside_ops"].get<double>(), rss);
  const double non_gemm_b = prof.bytes() - prof.bytes("gemm") - prof.bytes("attention");
  std::fprintf(stderr, "operand traffic %.2f GB/step, %.2f GB/step outside GEMMs and attention "
               "(%.1f GB/s there)\n", prof.bytes() * 1e-9 / nsteps, non_gemm_b * 1e-9 / nsteps,
               [&] {
                 const double s = ops_s - gemm_s - prof.seconds("attention");
                 return s > 0 ? non_gemm_b / s * 1e-9 : 0.0;
               }());
  json j{{"steps", steps}, {"step_seconds", step_s},
         {"tokens_per_s", step_s > 0 ? double(tokens) / step_s : 0.0},
         {"gemm_share", step_s > 0 ? gemm_s / step_s : 0.0}, {"gemm_gflops", gemm_gflops},
         {"gemm_gflop_per_step", prof.flops("gemm") * 1e-9 / nsteps},
         {"op_gbytes_per_step", prof.bytes() * 1e-9 / nsteps},
         {"op_share", fam}, {"peak_rss_mb", rss}, {"ops", ops_j}};
  return j.dump();
}

}  // namespace ds::train
