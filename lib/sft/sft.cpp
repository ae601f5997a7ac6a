// The SFT run (see include/ds/sft/sft.hpp): data and model setup, the step loop, evaluation,
// checkpoints and resume. One step = up to batch_size packed rows in micro-batches; micro-batch
// m is weighted by W_m / W_step (its share of the step's target tokens), so the step's loss is
// the mean over all its target tokens however the rows are split. Then clipping, AdamW, and
// the router-bias update (gamma 0 by default: the pre-trained biases stay as they are).
#include "ds/sft/sft.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/core/rng.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/io/staging.hpp"
#include "ds/model/checkpoint_io.hpp"
#include "ds/model/pretrained.hpp"
#include "ds/sft/data.hpp"
#include "ds/sft/packing.hpp"
#include "ds/train/metrics.hpp"
#include "ds/train/run_setup.hpp"
#include "ds/train/dist_step.hpp"
#include "ds/train/ema.hpp"
#include "ds/train/flag_checks.hpp"
#include "ds/train/state.hpp"
#include "ds/train/trainer.hpp"

namespace ds::sft {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Planning packs every epoch to count its rows; a run of more epochs than this is refused.
constexpr int64_t kMaxEpochs = 100000;

void check_flags(const SftOptions& o, bool need_out) {
  if (o.init.empty())
    DS_THROW(UsageError, "--init is required (a ds-pretrain checkpoint directory)");
  if (o.data.empty()) DS_THROW(UsageError, "--data is required (chat or prompt/completion JSONL)");
  if (need_out && o.out.empty()) DS_THROW(UsageError, "--out is required");
  if (need_out) io::check_output_dir(o.out, "--out");
  if (o.batch_size <= 0) DS_THROW(UsageError, "--batch-size must be positive");
  if (o.micro_batch_size < 0) DS_THROW(UsageError, "--micro-batch-size must not be negative");
  if (o.seq_len < 2) DS_THROW(UsageError, "--seq-len must be at least 2");
  if (o.steps < 0 || o.epochs < 0 || (o.steps == 0 && o.epochs == 0))
    DS_THROW(UsageError, "give a positive --epochs or --steps");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1))
    DS_THROW(UsageError, "--val-fraction must be in [0, 1)");
  if (o.val_fraction > 0 && !o.val_data.empty())
    DS_THROW(UsageError, "--val-data and --val-fraction are mutually exclusive");
  if (o.eval_every > 0 && o.val_data.empty() && o.val_fraction == 0)
    DS_THROW(UsageError, "--eval-every needs held-out data: --val-data FILE or --val-fraction F");
  train::check_flag_value(o.lr, "--lr", true);
  train::check_flag_value(o.lr_final, "--lr-final");
  train::validate(o.optimizer);
  train::check_flag_value(o.mtp_lambda, "--mtp-lambda");
  train::check_flag_value(o.balance_alpha, "--balance-alpha");
  train::check_flag_value(o.gamma, "--bias-update-speed");
  if (o.ema_decay != 0 && !(o.ema_decay > 0 && o.ema_decay < 1))
    DS_THROW(UsageError, "--ema-decay {}: expected 0 (off) or a number in (0, 1)", o.ema_decay);
  if (o.steps > INT64_MAX / o.batch_size)
    DS_THROW(UsageError, "--steps {} x --batch-size {}: the run's row count overflows", o.steps,
             o.batch_size);
  if (o.epochs > kMaxEpochs)
    DS_THROW(UsageError, "--epochs {}: more than {} epochs", o.epochs, kMaxEpochs);
  train::check_flag_count(o.warmup_steps, "--warmup-steps", 0);
  train::check_flag_count(o.save_every, "--save-every", 0);
  train::check_flag_count(o.eval_every, "--eval-every", 0);
  train::check_flag_count(o.eval_batches, "--eval-batches", 0);
  train::check_flag_count(o.log_every, "--log-every", 0);
  train::check_flag_count(o.stop_after, "--stop-after", 0);
  if (!io::is_directory(o.init) || !io::exists(fs::path(o.init) / "config.json"))
    DS_THROW(UsageError, "--init {}: not a checkpoint directory (no config.json)", o.init);
  if (need_out) train::check_out_beside_init(o.out, o.init);
  train::check_metrics_path(o.metrics, o.out,
                           {{io::checkpoint_in(o.init).value_or(o.init).string(), "--init"}});
}

// Tokenizer, chat template and samples, as both sft() and check_data() need them.
struct DataSetup {
  std::string tokenizer_path;
  // copied into checkpoints, with --init's add_bos_token: the chat template puts BOS first,
  // but plain text goes on as the model was pre-trained (a --tokenizer from elsewhere, such as
  // ds-tokenize's directory, would otherwise change it)
  io::TokenizerFiles tokenizer_files;
  std::optional<tok::Tokenizer> tok;
  infer::ChatTemplate tmpl = infer::ChatTemplate::deepseek_v3();
  SampleSet train, val;
  int32_t pad_id = 0;
  std::string fingerprint;   // of the data files and every setting that shapes the samples
};

// A token's text for a message: "(none)" for an id the tokenizer lacks, at most 40 bytes.
std::string printable_token(const std::string& t) {
  if (t.empty()) return "(none)";
  return t.size() > 40 ? t.substr(0, 40) + "..." : t;
}

DataSetup load_data(const SftOptions& o) {
  DataSetup d;
  const LossOn loss_on = parse_loss_on(o.loss_on);
  d.tokenizer_path =
      o.tokenizer.empty() ? (fs::path(o.init) / "tokenizer.json").string() : o.tokenizer;
  if (!io::exists(d.tokenizer_path))
    DS_THROW(UsageError, "{}: no tokenizer (give --tokenizer)", d.tokenizer_path);
  d.tok.emplace(tok::Tokenizer::from_file(d.tokenizer_path));
  d.tokenizer_files = io::TokenizerFiles(d.tokenizer_path);
  d.tokenizer_files.add_bos_token =
      io::add_bos_token_in(fs::path(o.init) / "tokenizer_config.json").value_or(true);
  // another tokenizer than the one --init was trained with: its ids must mean the same tokens
  // (one that adds tokens after them is accepted), else every id would change meaning
  if (const fs::path own = fs::path(o.init) / "tokenizer.json";
      !o.tokenizer.empty() && io::exists(own)) {
    const tok::Tokenizer init_tok = tok::Tokenizer::from_file(own);
    if (init_tok.fingerprint() != d.tok->fingerprint())
      for (size_t id = 0; id < init_tok.vocab_size(); ++id) {
        const std::string a = init_tok.id_to_token(tok::TokenId(id));
        const std::string b = d.tok->id_to_token(tok::TokenId(id));
        if (a != b)
          DS_THROW(UsageError, "--tokenizer {}: id {} is \"{}\", but \"{}\" in {}, the "
                   "tokenizer --init was trained with: its token ids would change meaning (a "
                   "tokenizer that only adds tokens after them is accepted)", o.tokenizer, id,
                   printable_token(b), printable_token(a), own.string());
      }
  }
  const fs::path cfg = fs::path(d.tokenizer_path).parent_path() / "tokenizer_config.json";
  if (io::exists(cfg)) {
    d.tmpl = infer::ChatTemplate::from_tokenizer_config(cfg);
    d.tmpl.check_tokens(*d.tok, cfg.string());
    io::add_bos_token_in(cfg);   // copied into every checkpoint: a bad value fails now
  } else spdlog::info("{}: not found; using the built-in DeepSeek-V3 chat template", cfg.string());
  d.pad_id = int32_t(d.tok->token_to_id(tok::special::kPad).value_or(d.tok->eos_id().value_or(0)));
  TokenizeOptions topt{loss_on, o.seq_len + 1, o.truncate};
  // --truncate keeps a sample's first --seq-len + 1 tokens; one left with no assistant token
  // is dropped, and a set left empty is an error naming the flags.
  auto check_kept = [&](const SampleSet& set, const std::string& what) {
    if (set.samples.empty() && set.dropped > 0)
      DS_THROW(UsageError, "--truncate at --seq-len {}: all {} {} samples lost every assistant "
               "token (raise --seq-len)", o.seq_len, set.dropped, what);
  };
  d.train = load_samples(o.data, d.tmpl, *d.tok, topt, o.threads);
  check_kept(d.train, "training");
  if (!o.val_data.empty()) {
    d.val = load_samples({o.val_data}, d.tmpl, *d.tok, topt, o.threads);
    check_kept(d.val, "--val-data");
  } else if (o.val_fraction > 0) {   // a seeded choice of samples, kept in file order
    const int64_t n = int64_t(d.train.samples.size());
    const int64_t n_val = std::max<int64_t>(1, std::llround(o.val_fraction * double(n)));
    if (n_val >= n)
      DS_THROW(UsageError, "--val-fraction {}: {} of {} samples leaves none for training",
               o.val_fraction, n_val, n);
    std::vector<uint8_t> is_val(size_t(n), 0);   // n_val distinct picks (partial Fisher-Yates)
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = i;
    Rng rng(o.seed, rng_stream("sft-val-split"));
    for (int64_t i = 0; i < n_val; ++i) {
      std::swap(idx[size_t(i)], idx[size_t(i + int64_t(rng.below(uint64_t(n - i))))]);
      is_val[size_t(idx[size_t(i)])] = 1;
    }
    SampleSet tr;
    for (int64_t i = 0; i < n; ++i) {
      SampleSet& to = is_val[size_t(i)] ? d.val : tr;
      to.tokens += int64_t(d.train.samples[size_t(i)].tokens.size());
      to.targets += d.train.samples[size_t(i)].n_targets;
      to.samples.push_back(std::move(d.train.samples[size_t(i)]));
    }
    tr.truncated = d.train.truncated;
    tr.dropped = d.train.dropped;
    d.train = std::move(tr);
  }
  if (d.train.samples.empty()) DS_THROW(UsageError, "no training samples left (all dropped)");
  const std::string desc = fmt::format(
      "data={};val={};loss_on={};packing={};truncate={};val_fraction={};tokenizer={}",
      files_fingerprint(o.data), o.val_data.empty() ? "" : files_fingerprint({o.val_data}),
      o.loss_on, o.packing, o.truncate, o.val_fraction, d.tok->fingerprint());
  d.fingerprint = hex64(xxh64(desc));
  return d;
}

void check_vocab(const DataSetup& d, const model::ModelArgs& args) {
  if (int64_t(d.tok->vocab_size()) > args.vocab_size)
    DS_THROW(UsageError, "{}: tokenizer vocabulary ({}) is larger than the model's vocab_size ({})",
             d.tokenizer_path, d.tok->vocab_size(), args.vocab_size);
}

// Rows and target tokens of the whole run: epochs of the stream, or steps * batch rows.
struct Plan {
  int64_t total_rows = 0, total_steps = 0, total_tokens = 0;
  std::vector<int64_t> epoch_rows;   // rows of each epoch the run touches
};

Plan make_plan(const SftOptions& o, RowStream& stream, const SampleSet& train) {
  Plan p;
  const int64_t wanted = o.steps > 0 ? o.steps * o.batch_size : -1;
  for (int64_t e = 0;; ++e) {
    if (wanted < 0 && e == o.epochs) break;
    if (e == kMaxEpochs)   // each epoch is packed to count its rows: bound the planning
      DS_THROW(UsageError, "--steps {} at --batch-size {} needs more than {} epochs of the {} "
               "training samples", o.steps, o.batch_size, kMaxEpochs, train.samples.size());
    const int64_t n = stream.rows_in_epoch(e);
    p.epoch_rows.push_back(n);
    if (wanted >= 0 && p.total_rows + n >= wanted) {
      p.total_tokens +=
          int64_t(std::llround(double(train.tokens) * double(wanted - p.total_rows) / double(n)));
      p.total_rows = wanted;
      break;
    }
    p.total_rows += n;
    p.total_tokens += train.tokens;
  }
  p.total_steps = (p.total_rows + o.batch_size - 1) / o.batch_size;
  return p;
}

double row_efficiency(std::span<const Row> rows, int64_t seq_len) {
  int64_t t = 0;
  for (const Row& r : rows) t += r.tokens;
  return rows.empty() ? 0.0 : double(t) / double(int64_t(rows.size()) * (seq_len + 1));
}

struct Run {
  const SftOptions& o;
  DataSetup data;
  std::unique_ptr<RowStream> stream;
  std::vector<Row> val_rows;
  Plan plan;
  int64_t rows_done = 0;               // training rows consumed (all epochs)
  model::ModelArgs args;
  model::ParamStore params;
  std::unique_ptr<model::Transformer> model;
  std::unique_ptr<train::AdamW> opt;           // one process
  std::unique_ptr<train::DistRuntime> ranks;   // several ranks when ranks->active()
  std::unique_ptr<train::WeightEma> ema;        // --ema-decay
  train::TrainerState st;
  train::MetricsWriter metrics;
  ops::Context ctx;
  ops::Profiler prof;
  double step_seconds = 0, last_val = NAN, last_loss = NAN;
  int64_t steps_run = 0, tokens_run = 0;
  train::CheckpointMark mark;   // the checkpoint resumed from, the last step written
  std::unique_ptr<io::RunDirLock> lock;   // --out (rank 0)

  explicit Run(const SftOptions& opts) : o(opts) {}
  void init();
  void resume(const fs::path& dir);
  double evaluate();
  void save();
  void step_once(train::Progress& progress);
  int64_t micro() const { return o.micro_batch_size > 0 ? o.micro_batch_size : o.batch_size; }
};

void Run::init() {
  check_flags(o, true);
  ctx = train::make_context(o.device, o.threads, o.precision, o.fp8_granularity, o.fp8_scale,
                            o.moe_gemm, dist::process_gpu(o.device, o.dist.launch));
  ranks = std::make_unique<train::DistRuntime>(o.dist);
  if (o.profile) ctx.prof = &prof;
  args = model::load_config(fs::path(o.init) / "config.json");
  ranks->check_model(args, (fs::path(o.init) / "config.json").string());
  if (o.seq_len > args.max_seq_len)
    DS_THROW(UsageError, "--seq-len {} exceeds the model's max_position_embeddings {}", o.seq_len,
             args.max_seq_len);
  data = load_data(o);
  check_vocab(data, args);
  stream = std::make_unique<RowStream>(data.train.samples, o.seq_len, o.seed, o.packing);
  plan = make_plan(o, *stream, data.train);
  if (!data.val.samples.empty()) {
    std::vector<int64_t> lens, order;
    for (const Sample& s : data.val.samples) lens.push_back(int64_t(s.tokens.size()));
    for (int64_t i = 0; i < int64_t(lens.size()); ++i) order.push_back(i);
    val_rows = pack_rows(lens, order, o.seq_len + 1, o.packing);
  }
  if (ctx.device == Device::cuda && ranks->active())
    DS_THROW(UsageError, "--device cuda runs on one GPU for now: launch one process (multi-GPU "
                         "training with NCCL is not wired to the CUDA model path yet)");
  params.set_device(ctx.device);   // weights, gradients and optimizer moments on the GPU
  model = ranks->build_model(args, params);
  params.alloc_grads();
  if (ranks->active()) ranks->attach(*model, o.optimizer);
  else opt = std::make_unique<train::AdamW>(params, o.optimizer);
  st.kind = "sft";
  st.seed = o.seed;
  st.seq_len = o.seq_len;
  st.total_steps = plan.total_steps;
  st.total_tokens = plan.total_tokens;
  st.data_fingerprint = data.fingerprint;
  if (ranks->main()) lock = std::make_unique<io::RunDirLock>(o.out, "--out");
  const fs::path resumed_from = train::resolve_resume(o.resume, o.out);
  // an expert- or pipeline-parallel rank takes only the tensors it holds from --init
  if (resumed_from.empty()) {
    model::LoadOptions lo;
    lo.subset = ranks->partial_model();
    model::load_model(params, io::SafetensorsDir(o.init), o.init, lo);
  } else {
    resume(resumed_from);
  }
  mark.resumed_from = resumed_from;
  mark.start_step = st.step;
  ema = train::start_ema(params, o.ema_decay, resumed_from, args,
                         "the same --init (its config.json)", ranks->partial_model(), st.step);
  if (ranks->main()) metrics.open(o.metrics, st.step);   // a fresh run starts the file over
}

void Run::resume(const fs::path& dir) {
  train::check_resume_config(dir, args, "the same --init (its config.json)");
  train::TrainerState saved =
      ranks->active() ? train::load_checkpoint(dir, params, ranks->opt(),
                                               train::CheckpointLoadOptions{ranks->partial_model()})
                      : train::load_checkpoint(dir, params, *opt);
  if (saved.kind != "sft")
    DS_THROW(UsageError,
             "{}: a {} checkpoint, not an SFT one (use it as --init, or --resume never)",
             dir.string(), saved.kind);
  if (saved.seed != st.seed || saved.seq_len != st.seq_len)
    DS_THROW(UsageError, "{}: saved with --seed {} --seq-len {}; resume needs the same values",
             dir.string(), saved.seed, saved.seq_len);
  if (saved.data_fingerprint != st.data_fingerprint)
    DS_THROW(UsageError,
             "{}: saved with other data or data settings (fingerprint {} vs {}); resume needs the "
             "same --data, --val-data, --val-fraction, --loss-on, --no-packing, --truncate and "
             "tokenizer (or --resume never)",
             dir.string(), saved.data_fingerprint, st.data_fingerprint);
  if (saved.total_steps != st.total_steps)
    spdlog::info("resume: run length changed ({} -> {} steps); the schedule follows the new length",
                 saved.total_steps, st.total_steps);
  saved.total_steps = st.total_steps;
  saved.total_tokens = st.total_tokens;
  st = saved;
  st.branched_from = train::branch_origin(dir, o.out, st.branched_from);
  stream->set_state(st.data);
  // Rows consumed before the saved position. The plan's epochs hold at least plan.total_rows
  // rows, so a position past them leaves rows_done >= total_rows whatever the later epochs
  // hold (every step then takes the one-row minimum); they are not packed to be counted, which
  // also bounds the work for a hand-edited data.epoch.
  rows_done = st.data.position;
  const int64_t counted = std::min<int64_t>(st.data.epoch, int64_t(plan.epoch_rows.size()));
  for (int64_t e = 0; e < counted; ++e) rows_done += plan.epoch_rows[size_t(e)];
  spdlog::info("resumed from {} at step {} ({} tokens)", dir.string(), st.step, st.tokens_seen);
}

double Run::evaluate() {
  if (val_rows.empty()) return NAN;
  const int64_t mb = micro(), n = int64_t(val_rows.size());
  int64_t batches = (n + mb - 1) / mb;
  if (o.eval_batches > 0) batches = std::min(batches, o.eval_batches);
  if (ranks->active()) {   // batches dealt round-robin to the data-parallel ranks
    std::vector<train::MicroBatch> mine;
    for (int64_t i : ranks->eval_batches(batches)) {
      const int64_t k = std::max<int64_t>(0, i);
      std::span<const Row> rows(val_rows.data() + k * mb, size_t(std::min(mb, n - k * mb)));
      train::MicroBatch m;
      m.batch = make_batch(data.val.samples, rows, o.seq_len, data.pad_id);
      m.dummy = i < 0;
      mine.push_back(std::move(m));
    }
    const auto [sum, weight] = ranks->step().forward_loss(ctx, mine);
    return weight > 0 ? sum / weight : NAN;
  }
  double sum = 0, weight = 0;
  for (int64_t i = 0; i < batches; ++i) {
    std::span<const Row> rows(val_rows.data() + i * mb, size_t(std::min(mb, n - i * mb)));
    model::Batch b = make_batch(data.val.samples, rows, o.seq_len, data.pad_id);
    auto r = model->forward_loss(ctx, b, model::LossWeights{0.0f, 0.0f});
    sum += r.loss_main * r.target_weight;
    weight += r.target_weight;
  }
  return weight > 0 ? sum / weight : NAN;
}

void Run::save() {
  if (!mark.needs_save(st.step)) return;   // written already, or the resumed checkpoint's step
  mark.saved_step = st.step;
  st.data = stream->state();
  const model::ParamStore* avg = nullptr;
  if (ema) {
    ema->wait();
    avg = &ema->average();
  }
  if (ranks->active())
    train::save_run_checkpoint(o.out, o.keep_last, data.tokenizer_files, o.save_bf16, args,
                               params, ranks->opt(), st, ranks->topo().world(), avg);
  else
    train::save_run_checkpoint(o.out, o.keep_last, data.tokenizer_files, o.save_bf16, args,
                               params, *opt, st, avg);
}

void Run::step_once(train::Progress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t B = std::clamp<int64_t>(plan.total_rows - rows_done, 1, o.batch_size);
  const std::vector<Row> rows = stream->next(B);
  rows_done += B;
  const double lr = train::cosine_lr(st.step, st.total_steps, o.warmup_steps, o.lr, o.lr_final);
  const model::LossWeights w{float(o.mtp_lambda), float(o.balance_alpha)};
  const int64_t W = count_targets(data.train.samples, rows);
  int64_t real_tokens = 0, samples = 0;
  for (const Row& r : rows) { real_tokens += r.tokens; samples += int64_t(r.samples.size()); }
  params.zero_grads();
  train::StepAccumulator acc;
  train::UpdateResult u;
  if (ranks->active()) {   // every rank packs the whole step (one data position), runs its slice
    std::vector<train::MicroBatch> mbs;
    for (const auto& [first, count] : ranks->micro_slices(B, o.micro_batch_size)) {
      std::span<const Row> part(rows.data() + first, size_t(std::max<int64_t>(count, 1)));
      const double share =
          count > 0 ? double(count_targets(data.train.samples, part)) / double(W) : 0.0;
      mbs.push_back(train::MicroBatch{make_batch(data.train.samples, part, o.seq_len, data.pad_id),
                                      share, train::micro_loss_weights(w, count, B, share),
                                      count == 0});
    }
    acc = ranks->step().forward_backward(ctx, mbs, w);
    ranks->step().reduce(acc);
    st.step++;
    st.tokens_seen += real_tokens;
    if (ema) ema->wait();   // its thread reads the weights the update writes
    u = train::apply_update(ctx, ranks->step(), ranks->opt(), st, acc, lr, o.gamma,
                            o.skip_nonfinite, o.out);
  } else {
    for (int64_t m = 0; m * micro() < B; ++m) {
      std::span<const Row> part(rows.data() + m * micro(),
                                size_t(std::min(micro(), B - m * micro())));
      const double share = double(count_targets(data.train.samples, part)) / double(W);
      model::Batch b = make_batch(data.train.samples, part, o.seq_len, data.pad_id);
      const model::LossWeights mw = train::micro_loss_weights(w, int64_t(part.size()), B, share);
      acc.add(model->forward_backward(ctx, b, mw, float(share)), share);
    }
    st.step++;
    st.tokens_seen += real_tokens;
    if (ema) ema->wait();
    u = train::apply_update(ctx, *model, *opt, st, acc, lr, o.gamma, o.skip_nonfinite, o.out);
  }
  if (ema && u.applied) ema->start_update(st.optimizer_steps - 1);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double tps = double(real_tokens) / std::max(1e-9, secs);
  step_seconds += secs;
  steps_run++;
  tokens_run += real_tokens;
  last_loss = acc.loss;
  const train::LoaderState ls = stream->state();
  const double epoch =
      double(ls.epoch) +
      double(ls.position) / double(std::max<int64_t>(1, stream->rows_in_epoch(ls.epoch)));
  json j{{"step", st.step}, {"epoch", epoch}, {"tokens", st.tokens_seen}, {"targets", W},
         {"loss", acc.loss}, {"loss_main", acc.loss_main}, {"loss_mtp", acc.loss_mtp},
         {"loss_balance", acc.loss_balance}, {"lr", lr}, {"grad_norm", u.grads.norm},
         {"batch", B}, {"samples", samples}, {"packing", row_efficiency(rows, o.seq_len)},
         {"mtp_lambda", o.mtp_lambda}, {"gamma", o.gamma}, {"tokens_per_s", tps},
         {"skipped", !u.applied}};
  j["maxvio"] = acc.maxvio();
  const bool last = st.step == st.total_steps;
  if (!val_rows.empty() && ((o.eval_every > 0 && st.step % o.eval_every == 0) || last)) {
    ctx.prof = nullptr;   // the profile covers training steps only
    last_val = evaluate();
    if (std::isfinite(last_val)) j["val_loss"] = last_val;
    spdlog::info("step {}: validation loss {:.4f}", st.step, last_val);
    if (ema) {
      const double ve = train::evaluate_average(*ema, ctx, [&] { return evaluate(); });
      if (std::isfinite(ve)) j["val_loss_ema"] = ve;
      spdlog::info("step {}: validation loss of the weight average {:.4f}", st.step, ve);
    }
    if (o.profile) ctx.prof = &prof;
  }
  metrics.write(j.dump());
  if (ranks->main()) progress.update(st.step, acc.loss, lr, tps);
  if (o.save_every > 0 && st.step % o.save_every == 0 && !last) save();
}

// --init may name a run directory (its newest step-* checkpoint), as ds-rl and ds-eval accept.
SftOptions with_init_resolved(const SftOptions& o) {
  SftOptions r = o;
  if (!o.init.empty() && io::is_directory(o.init) && !io::exists(fs::path(o.init) / "config.json"))
    r.init = model::resolve_checkpoint_dir(o.init).string();
  return r;
}

}  // namespace

void sft(const SftOptions& options) {
  const SftOptions opts = with_init_resolved(options);
  Run run(opts);
  run.init();
  bool interrupted = false;
  DS_CHECK_AS(UsageError, run.st.step <= run.st.total_steps,
              "the checkpoint is at step {}, past this run's last step {} (nothing to continue: "
              "the run is longer than the flags ask for)", run.st.step, run.st.total_steps);
  if (run.st.step >= run.st.total_steps) {
    spdlog::info("nothing to do: the checkpoint is at step {} of {}", run.st.step,
                 run.st.total_steps);
  } else {
    spdlog::info("fine-tuning {} parameters: {} samples ({} target tokens), {} steps of {} rows x "
                 "{} tokens, {} threads{}", run.params.numel(), run.data.train.samples.size(),
                 run.data.train.targets, run.st.total_steps, opts.batch_size, opts.seq_len + 1,
                 run.ctx.threads, run.ranks->active() ? " per rank, " + run.ranks->describe() : "");
    train::Progress progress(run.st.total_steps, opts.log_every);
    std::function<bool(bool)> agree;
    if (run.ranks->active())
      agree = [&](bool local) { return run.ranks->step().agree_stop(local); };
    InterruptScope interrupts(InterruptScope::Repeat::kIgnored);   // over the loop and the save
    const int sig =
        train::run_step_loop(run.st, opts.stop_after, [&] { run.step_once(progress); }, agree);
    if (run.ranks->main()) progress.finish();
    interrupted = sig != 0;
    if (interrupted) spdlog::warn("signal {} received: saving a checkpoint and stopping", sig);
    run.save();
  }
  if (!run.ranks->main()) return;
  const fs::path ckpt = run.mark.checkpoint(opts.out, run.st.step);
  json summary{
      {"steps", run.st.step},
      {"total_steps", run.st.total_steps},
      {"tokens", run.st.tokens_seen},
      {"checkpoint", ckpt.string()},
      {"samples", run.data.train.samples.size()},
      {"val_samples", run.data.val.samples.size()},
      {"nonfinite_skipped", run.st.nonfinite_skipped},
      {"interrupted", interrupted},
      {"tokens_per_s", run.step_seconds > 0 ? double(run.tokens_run) / run.step_seconds : 0.0}};
  if (std::isfinite(run.last_loss)) summary["loss"] = run.last_loss;
  if (std::isfinite(run.last_val)) summary["val_loss"] = run.last_val;
  if (run.ema && io::exists(train::ema_dir_of(ckpt)))
    summary["ema_checkpoint"] = train::ema_dir_of(ckpt).string();
  if (opts.profile)
    summary["profile"] = json::parse(
        train::profile_report(run.prof, run.step_seconds, run.steps_run, run.tokens_run));
  std::printf("%s\n", summary.dump().c_str());
}

void check_data(const SftOptions& options) {
  const SftOptions o = with_init_resolved(options);
  check_flags(o, false);
  const model::ModelArgs args = model::load_config(fs::path(o.init) / "config.json");
  if (o.seq_len > args.max_seq_len)
    DS_THROW(UsageError, "--seq-len {} exceeds the model's max_position_embeddings {}", o.seq_len,
             args.max_seq_len);
  DataSetup d = load_data(o);
  check_vocab(d, args);   // as training does
  RowStream stream(d.train.samples, o.seq_len, o.seed, o.packing);
  Plan p = make_plan(o, stream, d.train);
  int64_t max_len = 0;
  for (const Sample& s : d.train.samples)
    max_len = std::max<int64_t>(max_len, int64_t(s.tokens.size()));
  const int64_t rows0 = p.epoch_rows.front();
  json j{
      {"samples", d.train.samples.size()},
      {"val_samples", d.val.samples.size()},
      {"tokens", d.train.tokens},
      {"targets", d.train.targets},
      {"target_fraction", double(d.train.targets) / double(std::max<int64_t>(1, d.train.tokens))},
      {"truncated", d.train.truncated},
      {"dropped", d.train.dropped},
      {"max_sample_tokens", max_len},
      {"mean_sample_tokens", double(d.train.tokens) / double(d.train.samples.size())},
      {"rows_per_epoch", rows0},
      {"packing_efficiency", double(d.train.tokens) / double(rows0 * (o.seq_len + 1))},
      {"total_rows", p.total_rows},
      {"steps", p.total_steps},
      {"fingerprint", d.fingerprint}};
  std::printf("%s\n", j.dump().c_str());
}

}  // namespace ds::sft
