// The GRPO run (see include/ds/rl/rl.hpp): flag checks, policy/reference loading, prompt
// rendering, resume, the step loop with its metrics line, checkpoints and the summary.
// Prompt order: epoch e visits the prompts in a permutation drawn from
// Rng(seed, rng_stream("rl-prompts", e)); the training state's data position is (epoch,
// prompts consumed in it), so a resume continues the order exactly.
// On several ranks (data parallel only) every rank draws the whole step's prompts (one data
// position for all), the policy's parameters are ZeRO-1 sharded (train::ShardedAdamW), rank 0
// writes the metrics and the summary, and checkpoints are written by every rank together.
#include "ds/rl/rl.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/core/rng.hpp"
#include "ds/infer/sampler.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"
#include "ds/train/flag_checks.hpp"
#include "ds/train/run_setup.hpp"
#include "ds/train/trainer.hpp"
#include "ds/train/zero.hpp"
#include "rl_internal.hpp"

namespace ds::rl {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void check_flags(const RlOptions& o) {
  DS_CHECK_AS(UsageError, !o.init.empty(), "--init is required (a checkpoint or run directory)");
  DS_CHECK_AS(UsageError, !o.prompts.empty(), "--prompts is required (a JSONL file)");
  DS_CHECK_AS(UsageError, !o.out.empty(), "--out is required");
  io::check_output_dir(o.out, "--out");
  DS_CHECK_AS(UsageError, o.steps > 0, "--steps must be positive");
  DS_CHECK_AS(UsageError, o.stop_after >= 0, "--stop-after must not be negative");
  DS_CHECK_AS(UsageError, o.prompts_per_step > 0, "--prompts-per-step must be positive");
  DS_CHECK_AS(UsageError, o.group_size >= 2, "--group-size must be at least 2 (advantages are "
              "relative to the group)");
  DS_CHECK_AS(UsageError, o.max_new_tokens > 0, "--max-new-tokens must be positive");
  DS_CHECK_AS(UsageError, std::isfinite(o.temperature) && o.temperature > 0,
              "--temperature must be positive (GRPO needs sampled, different completions)");
  infer::SamplingOptions so;
  so.temperature = o.temperature;
  so.top_p = o.top_p;
  so.top_k = o.top_k;
  infer::validate(so);   // --top-p in (0, 1], --top-k >= 0
  DS_CHECK_AS(UsageError, o.updates > 0, "--updates must be positive");
  DS_CHECK_AS(UsageError, o.micro_batch_size >= 0, "--micro-batch-size must not be negative");
  DS_CHECK_AS(UsageError, o.lr > 0 && std::isfinite(o.lr), "--lr must be positive");
  DS_CHECK_AS(UsageError, o.ema_decay == 0 || (o.ema_decay > 0 && o.ema_decay < 1),
              "--ema-decay {}: expected 0 (off) or a number in (0, 1)", o.ema_decay);
  DS_CHECK_AS(UsageError, o.grpo.clip_eps > 0 && o.grpo.clip_eps < 1,
              "--clip-eps must be in (0, 1)");
  DS_CHECK_AS(UsageError, o.grpo.beta >= 0 && std::isfinite(o.grpo.beta), "--beta must be >= 0");
  DS_CHECK_AS(UsageError, o.grpo.adv_eps > 0 && std::isfinite(o.grpo.adv_eps),
              "--adv-eps must be a finite positive number");
  train::check_flag_value(o.balance_alpha, "--balance-alpha");
  train::validate(o.optimizer);
  train::check_flag_count(o.save_every, "--save-every", 0);
  train::check_flag_count(o.log_every, "--log-every", 0);
  DS_CHECK_AS(UsageError, o.reward_timeout >= 0, "--reward-timeout must be >= 0");
  DS_CHECK_AS(UsageError, o.keep_last >= 1, "--keep-last must be at least 1");
  DS_CHECK_AS(UsageError, o.dist.layout.pp == 1,
              "--pp {}: ds-rl runs data-parallel only (--pp 1): every rank samples its rollouts "
              "with the whole model on its own inference engine, which cannot run one pipeline "
              "stage", o.dist.layout.pp);
  DS_CHECK_AS(UsageError, o.dist.layout.ep == 1,
              "--ep {}: ds-rl runs data-parallel only (--ep 1): every rank samples its rollouts "
              "with the whole model on its own inference engine, which cannot run a part of the "
              "experts", o.dist.layout.ep);
  DS_CHECK_AS(UsageError, io::is_directory(o.init), "--init {}: not a directory", o.init);
  train::check_out_beside_init(o.out, o.init);
  train::check_metrics_path(o.metrics, o.out,
                           {{io::checkpoint_in(o.init).value_or(o.init).string(), "--init"}});
  DS_CHECK_AS(UsageError, o.resume == "auto" || o.resume == "never" || io::is_directory(o.resume),
              "--resume {}: not auto, never or a checkpoint directory", o.resume);
}

std::vector<int32_t> render(const detail::Run& r, const RlPrompt& p) {
  const tok::Tokenizer& tk = *r.policy.tokenizer;
  std::vector<int32_t> ids;
  if (p.messages.empty() && !r.o.chat) {   // raw text as ds-generate without --chat: after
    if (r.policy.add_bos_token)            // BOS when the policy's add_bos_token says so
      if (auto bos = tk.bos_id()) ids.push_back(int32_t(*bos));
    for (tok::TokenId t : tk.encode(p.prompt, /*match_added_tokens=*/false))
      ids.push_back(int32_t(t));
    return ids;
  }
  DS_CHECK_AS(FormatError, r.policy.chat_template.has_value(),
              "{}:{}: no usable DeepSeek-V3 chat template in {} ({})", r.o.prompts, p.line,
              r.policy.dir.string(), r.policy.chat_template_error);
  const auto msgs = p.messages.empty()
                        ? std::vector<infer::ChatMessage>{{"user", p.prompt, {}}}
                        : p.messages;
  infer::RenderedChat chat;
  try {
    chat = r.policy.chat_template->render(msgs, true);
  } catch (const FormatError& e) {   // the template's own checks (roles, contents)
    DS_THROW(FormatError, "{}:{}: {}", r.o.prompts, p.line, e.what());
  }
  for (tok::TokenId t : tk.encode(chat.text, true)) ids.push_back(int32_t(t));
  return ids;
}

// Prompts rendered and tokenized; gold answers for the exact reward; the data fingerprint.
void load_prompt_set(detail::Run& r) {
  r.prompts = load_prompts(r.o.prompts);
  const bool exact = r.rewards->has("exact");
  Xxh64Stream h(0x5e1f);
  const std::string init_fp = model::checkpoint_fingerprint(r.policy.dir);
  h.update(init_fp.data(), init_fp.size());
  for (const RlPrompt& p : r.prompts) {
    const std::string src = r.o.prompts + ":" + std::to_string(p.line);
    std::vector<int32_t> ids = render(r, p);
    DS_CHECK_AS(FormatError, int64_t(ids.size()) + r.o.max_new_tokens <= r.policy.args.max_seq_len,
                "{}: prompt of {} tokens + --max-new-tokens {} exceeds the model's "
                "max_position_embeddings {}", src, ids.size(), r.o.max_new_tokens,
                r.policy.args.max_seq_len);
    std::string gold;
    if (p.reference && exact)
      if (const std::string why = unusable_reference(*p.reference); !why.empty())
        DS_THROW(FormatError, "{}: reference: {}", src, why);
    if (p.reference) gold = reference_answer(*p.reference).value_or("");
    DS_CHECK_AS(FormatError, !exact || !gold.empty(),
                "{}: the exact reward needs a non-empty 'reference' (or 'answer')", src);
    h.update(ids.data(), ids.size() * sizeof(int32_t));
    const std::string ref = p.reference.value_or("") + '\x1f' + p.prompt + '\x1e';
    h.update(ref.data(), ref.size());
    r.prompt_ids.push_back(std::move(ids));
    r.golds.push_back(std::move(gold));
  }
  r.st.data_fingerprint = hex64(h.digest());
}

// The policy's model rebuilt over this rank's part of the model (DistRuntime::model_parallel:
// the whole model, as ds-rl runs with --pp 1 --ep 1), taking over the loaded values without a
// copy: a shape-only store registers the same parameters, then shares their tensors.
void place_on_ranks(model::Pretrained& p, const model::ModelParallel& par) {
  auto store = std::make_unique<model::ParamStore>();
  store->set_allocate(false);
  auto m = std::make_unique<model::Transformer>(p.args, *store, par);
  store->set_allocate(true);
  DS_CHECK(store->params().size() == p.store->params().size() &&
               store->buffers().size() == p.store->buffers().size(),
           "{}: this rank's model has {} parameters and {} buffers, the loaded one {} and {} "
           "(ds-rl needs the whole model on every rank)", p.dir.string(), store->params().size(),
           store->buffers().size(), p.store->params().size(), p.store->buffers().size());
  for (model::Param& q : store->params()) q.value = p.store->get(q.info.name).value;
  for (auto& [name, t] : store->buffers()) {
    const Tensor* loaded = p.store->find_buffer(name);
    DS_CHECK(loaded, "{}: no buffer {} in the loaded model", p.dir.string(), name);
    t = *loaded;
  }
  p.model = std::move(m);   // before the old store it refers to goes
  p.store = std::move(store);
}

void resume_from(detail::Run& r, const fs::path& dir) {
  train::TrainerState saved =
      r.distributed() ? train::load_checkpoint(dir, *r.policy.store, r.ranks->opt(),
                                               train::CheckpointLoadOptions{})
                      : train::load_checkpoint(dir, *r.policy.store, *r.opt);
  DS_CHECK_AS(UsageError, saved.kind == "rl",
              "{}: a {} checkpoint, not an RL one (use it as --init, or --resume never)",
              dir.string(), saved.kind);
  DS_CHECK_AS(UsageError, saved.seed == r.st.seed,
              "{}: saved with --seed {}; resume needs the same", dir.string(), saved.seed);
  DS_CHECK_AS(UsageError, saved.data_fingerprint == r.st.data_fingerprint,
              "{}: saved with other prompts or another --init (fingerprint {} vs {}); resume needs "
              "the same --prompts, --chat and --init (or --resume never)", dir.string(),
              saved.data_fingerprint, r.st.data_fingerprint);
  if (saved.total_steps != r.st.total_steps)
    spdlog::info("resume: run length changed ({} -> {} steps)", saved.total_steps,
                 r.st.total_steps);
  if (!r.st.init_weights.empty() && !saved.init_weights.empty() &&
      saved.init_weights != r.st.init_weights)
    DS_THROW(UsageError, "{}: --init {} holds other weights than the run started from ({}; "
             "weights {} vs {}), and the KL term's reference model would change: resume with "
             "that checkpoint as --init (a run directory resolves to its newest step-*)",
             dir.string(), r.policy.dir.string(), saved.init_checkpoint, saved.init_weights,
             r.st.init_weights);
  if (saved.init_weights.empty()) {   // not recorded yet (--beta 0 then): from now on
    saved.init_checkpoint = r.st.init_checkpoint;
    saved.init_weights = r.st.init_weights;
  }
  saved.total_steps = r.st.total_steps;
  r.st = saved;
  r.st.branched_from = train::branch_origin(dir, r.o.out, r.st.branched_from);
  spdlog::info("resumed from {} at step {}", dir.string(), r.st.step);
}

json metrics_line(const detail::Run& r, const detail::StepReport& s) {
  const double n = double(r.o.prompts_per_step * r.o.group_size);
  const double gen_s = std::max(1e-9, s.rollout_s);
  json terms = json::object();
  for (size_t k = 0; k < r.rewards->terms().size(); ++k)
    terms[r.rewards->terms()[k].name] = s.term_means[k];
  // without a reference model (--beta 0) no KL is measured: null, not a 0 that reads as "no drift"
  const json kl = r.o.grpo.beta > 0 ? json(s.kl) : json();
  json j{{"step", r.st.step}, {"tokens", r.st.tokens_seen}, {"reward", s.reward_mean},
         {"reward_std", s.reward_std}, {"rewards", terms}, {"kl", kl},
         {"clip_fraction", s.clip_fraction}, {"response_length", double(s.completion_tokens) / n},
         {"max_response_length", s.max_len}, {"entropy", s.entropy}, {"loss", s.loss},
         {"loss_pg", s.loss_pg}, {"loss_balance", s.loss_balance}, {"lr", r.o.lr},
         {"grad_norm", s.grad_norm}, {"no_signal_groups", s.no_signal_groups},
         {"rollout_tokens_per_s", double(s.completion_tokens) / gen_s},
         {"time", {{"rollout", s.rollout_s}, {"reward", s.reward_s},
                   {"reference", s.reference_s}, {"update", s.update_s}}}};
  j["accuracy"] = s.accuracy >= 0 ? json(s.accuracy) : json(nullptr);
  return j;
}

}  // namespace

namespace detail {

void Run::init() {
  check_flags(o);
  // the device is checked before any rank waits
  ctx = train::make_context(o.device, o.threads, dist::process_gpu(o.device, o.dist.launch));
  ranks = std::make_unique<train::DistRuntime>(o.dist);
  if (distributed())   // whole groups per rank: a group's advantages never leave its rank
    DS_CHECK_AS(UsageError, o.prompts_per_step >= ranks->topo().layout().dp,
                "--prompts-per-step {} is smaller than the {} data-parallel ranks: every rank "
                "takes whole groups, at least one prompt per step", o.prompts_per_step,
                ranks->topo().layout().dp);
  RewardConfig rc{parse_reward_terms(o.rewards), o.reward_regex, o.reward_command,
                  o.reward_timeout, /*command_stoppable=*/true};
  rewards = std::make_unique<RewardSet>(std::move(rc));
  if (ctx.device == Device::cuda && distributed())
    DS_THROW(UsageError, "--device cuda runs on one GPU for now: launch one process (multi-GPU "
                         "RL with NCCL is not wired to the CUDA model path yet)");
  if (distributed()) {   // the layout against the model before any weights are read
    const fs::path cfg = model::resolve_checkpoint_dir(o.init) / "config.json";
    if (io::exists(cfg)) ranks->check_model(model::load_config(cfg), cfg.string());
  }
  model::PretrainedOptions pol;
  pol.device = ctx.device;
  policy = model::load_pretrained(o.init, pol);
  DS_CHECK_AS(UsageError, policy.tokenizer.has_value(), "--init {}: no tokenizer.json", o.init);
  text = std::make_unique<infer::TokenText>(*policy.tokenizer);
  const auto eos_id = policy.tokenizer->eos_id();
  eos = eos_id ? int32_t(*eos_id) : int32_t(policy.args.eos_token_id);
  st.kind = "rl";
  st.seed = o.seed;
  st.seq_len = o.max_new_tokens;
  st.total_steps = o.steps;
  load_prompt_set(*this);
  if (o.grpo.beta > 0) {   // the reference: --init's weights, the same on every resume
    st.init_checkpoint = fs::absolute(policy.dir).lexically_normal().string();
    st.init_weights = model::checkpoint_weights_hash(policy.dir);
    model::PretrainedOptions po;
    po.load_mtp = false;   // the reference only scores tokens with the main model
    po.device = ctx.device;
    ref = model::load_pretrained(policy.dir, po);
  }
  if (distributed()) place_on_ranks(policy, ranks->model_parallel());
  // log-probabilities, ratios, k3 and entropies of the policy that sampled: logits / T (top-p
  // and top-k truncation are not modelled, as in TRL and verl)
  policy.model->set_policy_temperature(o.temperature);
  if (ref) ref->model->set_policy_temperature(o.temperature);
  policy.store->alloc_grads();
  if (distributed()) ranks->attach(*policy.model, o.optimizer);
  else opt = std::make_unique<train::AdamW>(*policy.store, o.optimizer);
  if (main()) lock = std::make_unique<io::RunDirLock>(o.out, "--out");
  mark.resumed_from = train::resolve_resume(o.resume, o.out);
  if (!mark.resumed_from.empty()) resume_from(*this, mark.resumed_from);
  mark.start_step = st.step;
  ema = train::start_ema(*policy.store, o.ema_decay, mark.resumed_from, policy.args,
                         "the same --init (its config.json)",
                         distributed() && ranks->partial_model(), st.step);
  if (main()) metrics.open(o.metrics, st.step);
}

std::vector<int64_t> Run::next_prompts() {
  const int64_t n = int64_t(prompts.size());
  std::vector<int64_t> out;
  while (int64_t(out.size()) < o.prompts_per_step) {
    if (st.data.position >= n) {
      st.data.epoch++;
      st.data.position = 0;
    }
    if (order_epoch != st.data.epoch) {   // Fisher-Yates with the epoch's own stream
      order.resize(size_t(n));
      for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
      Rng rng(st.seed, rng_stream("rl-prompts", uint64_t(st.data.epoch)));
      for (int64_t i = n - 1; i > 0; --i)
        std::swap(order[size_t(i)], order[size_t(rng.below(uint64_t(i + 1)))]);
      order_epoch = st.data.epoch;
    }
    out.push_back(order[size_t(st.data.position++)]);
  }
  return out;
}

void Run::save() {
  if (!mark.needs_save(st.step)) return;   // written already, or the resumed checkpoint's step
  mark.saved_step = st.step;
  const model::ParamStore* avg = nullptr;
  if (ema) {
    ema->wait();
    avg = &ema->average();
  }
  if (distributed())
    train::save_run_checkpoint(o.out, o.keep_last, policy.dir.string(), o.save_bf16, policy.args,
                               *policy.store, ranks->opt(), st, ranks->topo().world(), avg);
  else
    train::save_run_checkpoint(o.out, o.keep_last, policy.dir.string(), o.save_bf16, policy.args,
                               *policy.store, *opt, st, avg);
}

}  // namespace detail

void run_rl(const RlOptions& opts) {
  detail::Run run(opts);
  run.init();
  bool interrupted = false;
  json last;
  DS_CHECK_AS(UsageError, run.st.step <= run.st.total_steps,
              "the checkpoint is at step {}, past this run's last step {} (nothing to continue: "
              "the run is longer than the flags ask for)", run.st.step, run.st.total_steps);
  if (run.st.step >= run.st.total_steps) {
    spdlog::info("nothing to do: the checkpoint is at step {} of {}", run.st.step,
                 run.st.total_steps);
  } else {
    spdlog::info("GRPO on {} parameters: {} prompts, {} steps of {} prompts x {} completions "
                 "(<= {} new tokens), beta {}, {} update(s) per step, {} threads{}",
                 run.policy.store->numel(), run.prompts.size(), run.st.total_steps,
                 opts.prompts_per_step, opts.group_size, opts.max_new_tokens, opts.grpo.beta,
                 opts.updates, run.ctx.threads,
                 run.distributed() ? " per rank, " + run.ranks->describe() : "");
    std::function<bool(bool)> agree;   // every rank stops after the same step
    if (run.distributed()) agree = [&](bool local) { return run.ranks->step().agree_stop(local); };
    InterruptScope interrupts(InterruptScope::Repeat::kIgnored);   // over the loop and the save
    const int sig = train::run_step_loop(run.st, opts.stop_after, [&] {
      // A stop request while the reward command runs (Slurm signals it too) abandons the step:
      // nothing of it is applied (its prompts are drawn again on resume) and the loop then
      // saves the last finished step. Several ranks abandon it together (see score()).
      const auto before = run.st.data;
      detail::StepReport s;
      try {
        s = run.step();
      } catch (const Interrupted& e) {
        run.st.data = before;
        spdlog::warn("signal {} during step {}: the step is abandoned", e.signal_number(),
                     run.st.step + 1);
        return;
      }
      last = metrics_line(run, s);
      run.metrics.write(last.dump());
      if (opts.log_every > 0 &&
          (run.st.step % opts.log_every == 0 || run.st.step == run.st.total_steps))
        spdlog::info("step {}/{}: reward {:.4f} accuracy {} kl {:.5f} length {:.1f} entropy {:.3f} "
                     "({:.2f} s rollout, {:.2f} s update)", run.st.step, run.st.total_steps,
                     s.reward_mean, s.accuracy >= 0 ? fmt::format("{:.3f}", s.accuracy) : "-",
                     s.kl, last["response_length"].get<double>(), s.entropy, s.rollout_s,
                     s.update_s);
      if (opts.save_every > 0 && run.st.step % opts.save_every == 0 &&
          run.st.step < run.st.total_steps)
        run.save();
    }, agree);
    interrupted = sig != 0;
    if (interrupted) spdlog::warn("signal {} received: saving a checkpoint and stopping", sig);
    run.save();
  }
  if (!run.main()) return;
  const fs::path ckpt = run.mark.checkpoint(opts.out, run.st.step);
  json summary{
      {"steps", run.st.step},
      {"total_steps", run.st.total_steps},
      {"completion_tokens", run.st.tokens_seen},
      {"checkpoint", ckpt.string()},
      {"interrupted", interrupted},
      {"rollout_tokens_per_s",
       run.rollout_s > 0 ? double(run.rollout_tokens) / run.rollout_s : 0.0},
      {"update_s_per_step", run.steps_run > 0 ? run.update_s / double(run.steps_run) : 0.0}};
  if (!last.is_null())
    for (const char* k : {"reward", "accuracy", "kl", "response_length"}) summary[k] = last[k];
  if (run.distributed()) summary["ranks"] = run.ranks->topo().world_size();
  if (run.ema && io::exists(train::ema_dir_of(ckpt)))
    summary["ema_checkpoint"] = train::ema_dir_of(ckpt).string();
  std::printf("%s\n", summary.dump().c_str());
}

}  // namespace ds::rl
