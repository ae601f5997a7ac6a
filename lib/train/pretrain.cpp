// The pre-training run (see include/ds/train/pretrain.hpp): setup, the step loop, evaluation,
// checkpoints and resume. One step = batch(tokens_seen) rows (PackedLoader: stride windows
// or best-fit packed documents) in micro-batches, each one's gradients weighted by its share
// of the step's target tokens, global-norm clipping, AdamW, then the router-bias update from
// the step's summed expert counts (spec §4.8 steps 1-7). Launched on several ranks
// (docs/distributed.md), each rank reads the whole global batch (so the data position stays
// one number), takes its data-parallel slice, runs it through its pipeline stage (DistStep)
// and ZeRO-1 AdamW (ShardedAdamW); rank 0 writes metrics and progress. With --ema-decay, a
// moving average of the weights follows each update on a host thread (spec §4.8 step 8): it
// is evaluated beside the weights (val_loss_ema) and saved as each checkpoint's ema/.
#include "ds/train/pretrain.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <filesystem>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/data/shard.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"
#include "ds/model/transformer.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "ds/train/data_loader.hpp"
#include "ds/train/data_mix.hpp"
#include "ds/train/dist_step.hpp"
#include "ds/train/ema.hpp"
#include "ds/train/metrics.hpp"
#include "ds/train/run_setup.hpp"
#include "ds/train/state.hpp"
#include "ds/train/trainer.hpp"
#include "ds/train/zero.hpp"

namespace ds::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Run {
  const PretrainOptions& o;
  RunSetup setup;
  std::vector<std::unique_ptr<data::Dataset>> datasets;   // --data, in order
  std::unique_ptr<MixedLoader> loader;
  model::ParamStore params;
  std::unique_ptr<model::Transformer> model;
  std::unique_ptr<AdamW> opt;          // one process
  std::unique_ptr<DistRuntime> ranks;   // several ranks when ranks->active()
  std::unique_ptr<Schedule> sched;
  std::unique_ptr<WeightEma> ema;      // --ema-decay
  io::TokenizerFiles tokenizer_files;  // --tokenizer, add_bos_token as the data has BOS
  TrainerState st;
  MetricsWriter metrics;
  ops::Context ctx;
  ops::Profiler prof;                  // used with --profile
  double prof_step_s = 0;              // wall seconds of the profiled steps
  int64_t prof_steps = 0, prof_tokens = 0;

  explicit Run(const PretrainOptions& opts) : o(opts) {}
  void init();
  void init_data();
  void init_tokenizer_files();
  double evaluate(std::vector<double>* by_source = nullptr);
  double evaluate_source(const PackedLoader& l);
  double evaluate_dist(const PackedLoader& l);
  double evaluate_ema();
  void evaluate_into(json& j);
  void finish_pending_eval();
  void init_ema();
  void save();
  void step_once(Progress& progress);
  template <class F>
  void read_data(F&& read);
  CheckpointMark mark;       // the step it started from, the last it wrote
  // The data position after the last completed step (what a checkpoint records): a read that
  // fails half-way through a step may have moved the loader already.
  std::vector<LoaderState> done_pos;
  bool data_failed = false;  // a read of the data failed (on some rank): see read_data
};

// Runs `read`, a read of the training or held-out data. When it throws (a corrupt block, a
// failed read), the run is marked, so that pretrain() saves the last completed step before the
// error ends it (the default --save-every 0 would otherwise lose the whole run to one bad
// block). With several ranks the outcome is agreed first: every rank stops, and saves,
// together; the ranks whose own read succeeded report the other's failure.
template <class F>
void Run::read_data(F&& read) {
  std::exception_ptr err;
  try {
    read();
  } catch (const Interrupted&) {
    throw;
  } catch (const Error&) {
    err = std::current_exception();
  }
  const bool any = ranks->active() ? ranks->step().agree_stop(err != nullptr) : err != nullptr;
  if (!any) return;
  data_failed = true;
  if (err) std::rethrow_exception(err);
  DS_THROW(IoError, "rank {}: another rank could not read the data (its error names the file)",
           ranks->topo().world().rank());
}

// What a checkpoint's data position refers to: the shards in order (name, counts, size), the
// tokenizer and the held-out split. A resume on other data would continue at a position of a
// different token stream.
std::string data_fingerprint(const data::Manifest& m, int64_t val) {
  std::string d = fmt::format("{}|{}|{}", m.tokenizer_fingerprint, m.vocab_size, val);
  for (const data::ShardEntry& s : m.shards)
    d += fmt::format("|{}:{}:{}:{}", s.file, s.tokens, s.documents, s.bytes);
  return hex64(xxh64(d));
}

// Whether the data has BOS before every document: ds-tokenize encode's provenance "add_bos"
// (nullopt when the manifest does not say; FormatError naming `src` when it is not a boolean).
std::optional<bool> data_add_bos(const data::Manifest& m, const std::string& src) {
  const json p = json::parse(m.extra_json, nullptr, /*allow_exceptions=*/false);
  if (!p.is_object()) return std::nullopt;
  const auto it = p.find("add_bos");
  if (it == p.end()) return std::nullopt;
  if (!it->is_boolean())
    DS_THROW(FormatError, "{}: field 'provenance.add_bos' is {}, not true or false", src,
             it->dump());
  return it->get<bool>();
}

// Target positions of a batch: T per row, or those a best-fit row's loss mask keeps.
int64_t count_targets(const model::Batch& b) {
  if (!b.loss_mask.defined()) return b.tokens.size(0) * (b.tokens.size(1) - 1);
  const float* m = b.loss_mask.f32();   // (B, T)
  int64_t n = 0;
  for (int64_t i = 0; i < b.loss_mask.numel(); ++i) n += m[i] != 0.0f;
  return n;
}

// Rows [first, first + n) of a loader batch (views of its tensors).
model::Batch rows_of(const model::Batch& all, int64_t first, int64_t n) {
  model::Batch b;
  b.tokens = all.tokens.slice0(first, first + n);
  if (all.loss_mask.defined()) b.loss_mask = all.loss_mask.slice0(first, first + n);
  if (!all.lengths.empty())
    b.lengths.assign(all.lengths.begin() + first, all.lengths.begin() + first + n);
  return b;
}

void log_packing(const PackedLoader& l, const std::string& source) {
  const PackingStats& s = l.stats();
  const double pad = s.rows > 0 ? 100.0 * double(s.padding) / double(s.padding + s.tokens) : 0;
  spdlog::info("{}packing {}: {} training rows from {} documents, {} of them not whole in one "
               "row{}; padding {:.2f}%", source, packing_name(l.packing()), s.rows, s.documents,
               s.split_documents,
               s.dropped > 0 ? fmt::format(", {} with one token in the training region left out",
                                           s.dropped)
                             : std::string(),
               pad);
}

// The --data sources (one tokenizer, ids within the model's vocabulary), each with its
// held-out windows, the loader dealing their rows by --data-weights, and what a checkpoint's
// data position refers to (st.data_fingerprint): with one source its data_fingerprint, with
// several a hash of theirs and of the normalised weights.
void Run::init_data() {
  const std::vector<double> weights = parse_data_weights(o.data_weights, o.data.size());
  std::vector<const data::Dataset*> sources;
  std::vector<int64_t> vals;
  std::vector<std::string> fps;
  for (size_t i = 0; i < o.data.size(); ++i) {
    datasets.push_back(std::make_unique<data::Dataset>(o.data[i], setup.expected_fingerprint));
    const data::Manifest& m = datasets.back()->manifest();
    if (m.vocab_size > uint64_t(setup.args.vocab_size))
      DS_THROW(UsageError, "{}: dataset vocabulary ({}) is larger than the model's vocab_size "
               "({})", o.data[i], m.vocab_size, setup.args.vocab_size);
    const data::Manifest& first = datasets[0]->manifest();
    if (m.tokenizer_fingerprint != first.tokenizer_fingerprint)
      DS_THROW(UsageError, "--data {}: encoded with tokenizer {}, --data {} with {} (the sources "
               "of a mixture share one tokenizer)", o.data[i], m.tokenizer_fingerprint,
               o.data[0], first.tokenizer_fingerprint);
    const int64_t n_seq = (int64_t(datasets.back()->n_tokens()) - 1) / o.seq_len;
    int64_t val = o.val_sequences >= 0
                      ? o.val_sequences
                      : std::min<int64_t>(256, std::max<int64_t>(1, n_seq / 100));
    if (o.eval_every <= 0 && o.val_sequences < 0) val = 0;
    if (n_seq - val < 1)   // (named here: the loader does not know which --data it reads)
      DS_THROW(UsageError, "--data {}: {} sequence(s) of {} tokens, not enough for {} held-out "
               "one(s) and training", o.data[i], n_seq, o.seq_len, val);
    vals.push_back(val);
    sources.push_back(datasets.back().get());
    fps.push_back(data_fingerprint(m, val));
  }
  loader = std::make_unique<MixedLoader>(sources, weights, o.seq_len,
                                         o.data_seed.value_or(o.seed), vals,
                                         parse_packing(o.packing));
  for (size_t i = 0; i < loader->size(); ++i)
    log_packing(loader->source(i),
                loader->size() > 1 ? fmt::format("--data {} (weight {:.3g}): ", o.data[i],
                                                 loader->weights()[i])
                                   : std::string());
  init_tokenizer_files();
  std::string mix = "mixture";
  for (size_t i = 0; i < fps.size(); ++i)
    mix += fmt::format("|{}|{:.17g}", fps[i], loader->weights()[i]);
  st.data_fingerprint = fps.size() == 1 ? fps[0] : hex64(xxh64(mix));
}

// The checkpoints' tokenizer_config.json says add_bos_token as the data did (the sources'
// manifests, when they all record it), so that ds-eval, ds-generate and ds-rl put BOS before a
// plain text exactly when the model saw one before every document.
void Run::init_tokenizer_files() {
  tokenizer_files = io::TokenizerFiles(o.tokenizer);
  std::optional<size_t> with, without;   // a source that has BOS, one that has none
  bool unknown = false;                  // a manifest that does not say
  for (size_t i = 0; i < datasets.size(); ++i) {
    const std::optional<bool> b =
        data_add_bos(datasets[i]->manifest(),
                     io::is_directory(o.data[i]) ? (fs::path(o.data[i]) / "manifest.json").string()
                                                 : o.data[i]);
    if (!b) unknown = true;
    else if (*b && !with) with = i;
    else if (!*b && !without) without = i;
  }
  if (with && without)
    DS_THROW(UsageError, "--data {} has BOS before every document and --data {} has none "
             "(ds-tokenize encode --add-bos): encode the sources of a mixture alike",
             o.data[*with], o.data[*without]);
  if (unknown || o.tokenizer.empty()) return;
  const bool bos = with.has_value();
  tokenizer_files.add_bos_token = bos;
  const fs::path t(o.tokenizer);
  const fs::path tc = (io::is_directory(t) ? t : t.parent_path()) / "tokenizer_config.json";
  if (io::exists(tc)) io::add_bos_token_in(tc);   // a malformed file fails now, not at a save
  if (!ranks->main()) return;
  if (!bos && !io::exists(tc))
    spdlog::warn("{}: absent, so the checkpoints will have none, and ds-eval and ds-generate "
                 "will put BOS before a text this model never saw BOS in (add one with "
                 "\"add_bos_token\": false)", tc.string());
  // a change of convention: --resume-new-data, or a checkpoint of ds before 2026-12-07 (which
  // copied the field as it was)
  const fs::path saved = setup.resume_from / "tokenizer_config.json";
  if (setup.resume_from.empty() || !io::exists(saved)) return;
  if (const bool had = io::add_bos_token_in(saved).value_or(true); had != bos)
    spdlog::warn("{}: add_bos_token {}, but this run's data has {} BOS: its checkpoints will "
                 "say {}", saved.string(), had, bos ? "a" : "no", bos);
}

void Run::init() {
  setup = resolve_setup(o);   // first: flags and the device are checked before any rank waits
  ranks = std::make_unique<DistRuntime>(o.dist);
  ranks->check_model(setup.args, o.preset.empty() ? o.model_config : "preset " + o.preset);
  ctx = setup.ctx;
  if (o.profile) ctx.prof = &prof;
  init_data();
  if (ctx.device == Device::cuda && ranks->active())
    DS_THROW(UsageError, "--device cuda runs on one GPU for now: launch one process (multi-GPU "
                         "training with NCCL is not wired to the CUDA model path yet)");
  params.set_device(ctx.device);   // weights, gradients and optimizer moments on the GPU
  model = ranks->build_model(setup.args, params);
  params.alloc_grads();
  params.init(o.seed);   // a function of (seed, name): every rank gets the same values
  if (ranks->active()) ranks->attach(*model, o.optimizer);
  else opt = std::make_unique<AdamW>(params, o.optimizer);
  sched = std::make_unique<Schedule>(o.schedule, setup.total_tokens, setup.total_steps,
                                     o.batch_size);
  st.seed = o.seed;
  st.data_seed = o.data_seed;
  st.seq_len = o.seq_len;
  st.total_steps = setup.total_steps;
  st.total_tokens = setup.total_tokens;
  st.packing = packing_name(loader->packing());
  if (!setup.resume_from.empty()) {
    check_resume_config(setup.resume_from, setup.args, "the same --preset or --model-config");
    // an expert- or pipeline-parallel rank loads only the tensors it holds
    TrainerState saved = ranks->active()
                             ? load_checkpoint(setup.resume_from, params, ranks->opt(),
                                               CheckpointLoadOptions{ranks->partial_model()})
                             : load_checkpoint(setup.resume_from, params, *opt);
    if (saved.kind != "pretrain")
      DS_THROW(UsageError, "{}: a {} checkpoint, not a ds-pretrain one", setup.resume_from.string(),
               saved.kind);
    if (saved.seed != st.seed || saved.seq_len != st.seq_len)
      DS_THROW(UsageError, "{}: saved with --seed {} --seq-len {}; resume needs the same values",
               setup.resume_from.string(), saved.seed, saved.seq_len);
    const uint64_t saved_order = saved.data_seed.value_or(saved.seed);
    const bool other_order = saved_order != st.data_seed.value_or(st.seed);
    if (other_order && !o.resume_new_data)
      DS_THROW(UsageError, "{}: saved with --data-seed {} (the data order); resume needs the same "
               "(or --resume-new-data to read the data from its start)",
               setup.resume_from.string(), saved_order);
    const std::string saved_packing = saved.packing.empty() ? "stride" : saved.packing;
    if (saved_packing != st.packing && !o.resume_new_data)
      DS_THROW(UsageError, "{}: saved with --packing {}; resume needs the same (or "
               "--resume-new-data to read the data from its start)",
               setup.resume_from.string(), saved_packing);
    // (checkpoints written before the fingerprint was recorded carry none)
    // (a state without a fingerprint was written for one --data source)
    const bool other_data = saved.data_fingerprint.empty()
                                ? loader->size() > 1
                                : saved.data_fingerprint != st.data_fingerprint;
    if (other_data) {
      if (!o.resume_new_data)
        DS_THROW(UsageError,
                 "{}: saved with other data (fingerprint {} vs {}): the same --data (and "
                 "--data-weights), tokenizer and held-out split (--val-sequences; by default "
                 "sized by --eval-every) continue it; --resume-new-data reads the new data from "
                 "its start",
                 setup.resume_from.string(),
                 saved.data_fingerprint.empty() ? "(none: one source)" : saved.data_fingerprint,
                 st.data_fingerprint);
      // other data, but the same token ids: weights trained on another tokenizer's ids would
      // go on with a different meaning for every id
      const fs::path saved_tok = setup.resume_from / "tokenizer.json";
      if (std::error_code ec; fs::exists(saved_tok, ec)) {
        const std::string fp = tok::Tokenizer::from_file(saved_tok).fingerprint();
        if (fp != datasets[0]->manifest().tokenizer_fingerprint)
          DS_THROW(UsageError, "--resume-new-data: {} (fingerprint {}) is not the tokenizer of "
                   "--data {} ({}): the checkpoint's token ids would change meaning",
                   saved_tok.string(), fp, o.data[0],
                   datasets[0]->manifest().tokenizer_fingerprint);
      }
      spdlog::info("--resume-new-data: the new data is read from its start");
      saved.data = {};
      saved.data_sources.assign(loader->size() > 1 ? loader->size() : 0, LoaderState{});
    } else if (saved_packing != st.packing || other_order) {
      spdlog::info("--resume-new-data: {} reads the data from its start",
                   other_order ? "another --data-seed" : "--packing " + st.packing);
      saved.data = {};
      saved.data_sources.assign(loader->size() > 1 ? loader->size() : 0, LoaderState{});
    }
    saved.data_fingerprint = st.data_fingerprint;
    saved.packing = st.packing;
    saved.data_seed = st.data_seed;
    if (saved.total_steps != st.total_steps || saved.total_tokens != st.total_tokens)
      spdlog::info("resume: run length changed ({} steps, {} tokens -> {} steps, {} tokens); "
                   "schedules follow the new length", saved.total_steps, saved.total_tokens,
                   st.total_steps, st.total_tokens);
    saved.total_steps = st.total_steps;
    saved.total_tokens = st.total_tokens;
    st = saved;
    st.branched_from = branch_origin(setup.resume_from, o.out, st.branched_from);
    // (a count unlike --data's is refused: a mixture's state resumes only the same mixture)
    loader->set_state(st.data_sources.empty() ? std::vector<LoaderState>{st.data}
                                              : st.data_sources);
    spdlog::info("resumed from {} at step {} ({} tokens)", setup.resume_from.string(), st.step,
                 st.tokens_seen);
  }
  mark.start_step = st.step;
  mark.resumed_from = setup.resume_from;
  done_pos = loader->state();
  init_ema();
  if (o.resume_new_data && !st.pending_metrics.empty()) {   // (it would read the new data)
    spdlog::info("--resume-new-data: step {}'s evaluation, left undone by a failed read, is not "
                 "run", st.step);
    st.pending_metrics.clear();
  }
  // a fresh run (step 0) starts the file over; an existing file must hold metrics lines (with
  // an evaluation pending, once it has run: finish_pending_eval)
  if (ranks->main() && st.pending_metrics.empty()) metrics.open(o.metrics, st.step);
}

// The moving average starts from the weights, or continues the resumed checkpoint's ema/.
void Run::init_ema() {
  ema = start_ema(params, o.ema_decay, setup.resume_from, setup.args,
                  "the same --preset or --model-config", ranks->partial_model(), st.step);
}

// The validation loss: each source's mean over its held-out windows (in by_source when given),
// and their mean weighted by --data-weights (with one source, its mean).
double Run::evaluate(std::vector<double>* by_source) {
  double sum = 0, weight = 0;
  for (size_t i = 0; i < loader->size(); ++i) {
    const PackedLoader& l = loader->source(i);
    if (l.n_val() == 0) {   // no held-out windows (then none of the sources has any)
      if (by_source) by_source->push_back(NAN);
      continue;
    }
    const double v = ranks->active() ? evaluate_dist(l) : evaluate_source(l);
    if (by_source) by_source->push_back(v);
    sum += loader->weights()[i] * v;   // a NaN of one source makes the whole NaN
    weight += loader->weights()[i];
  }
  return weight > 0 ? sum / weight : NAN;
}

double Run::evaluate_source(const PackedLoader& l) {
  const int64_t n_val = l.n_val();
  int64_t B = std::max<int64_t>(1, o.micro_batch_size > 0 ? o.micro_batch_size : o.batch_size);
  int64_t batches = std::min<int64_t>(o.eval_batches, (n_val + B - 1) / B);
  double sum = 0;
  int64_t n = 0;
  model::LossWeights w{0.0f, 0.0f};
  for (int64_t i = 0; i < batches; ++i) {
    int64_t first = i * B, b = std::min(B, n_val - first);
    model::Batch batch;
    batch.tokens = Tensor::empty({b, o.seq_len + 1}, DType::i32);
    read_data([&] { l.val_batch(first, b, batch.tokens); });
    auto r = model->forward_loss(ctx, batch, w);
    sum += r.loss_main * double(b);
    n += b;
  }
  return sum / double(n);
}

// The same batches as evaluate_source(), dealt round-robin to the data-parallel ranks and run
// forward-only through the pipeline; the sums are completed over the world.
double Run::evaluate_dist(const PackedLoader& l) {
  const int64_t n_val = l.n_val();
  const int64_t B =
      std::max<int64_t>(1, o.micro_batch_size > 0 ? o.micro_batch_size : o.batch_size);
  const int64_t batches = std::min<int64_t>(o.eval_batches, (n_val + B - 1) / B);
  std::vector<MicroBatch> mine;
  read_data([&] {   // every rank, then one agreement
    for (int64_t i : ranks->eval_batches(batches)) {
      const int64_t first = std::max<int64_t>(0, i) * B, b = std::min(B, n_val - first);
      MicroBatch m;
      m.batch.tokens = Tensor::empty({b, o.seq_len + 1}, DType::i32);
      l.val_batch(first, b, m.batch.tokens);
      m.dummy = i < 0;
      mine.push_back(std::move(m));
    }
  });
  const auto [sum, weight] = ranks->step().forward_loss(ctx, mine);
  return weight > 0 ? sum / weight : NAN;
}

// The evaluation of a step into its metrics line: val_loss (and per source), val_loss_ema.
void Run::evaluate_into(json& j) {
  ctx.prof = nullptr;   // the profile covers training steps only
  std::vector<double> by_source;
  const double v = evaluate(&by_source);
  const double ve = ema ? evaluate_ema() : NAN;
  if (std::isfinite(v)) j["val_loss"] = v;
  if (by_source.size() > 1) j["val_loss_by_data"] = by_source;
  if (ema) {
    if (std::isfinite(ve)) j["val_loss_ema"] = ve;
    spdlog::info("step {}: validation loss {:.4f}, of the weight average {:.4f}", st.step, v,
                 ve);
  } else {
    spdlog::info("step {}: validation loss {:.4f}", st.step, v);
  }
  if (o.profile) ctx.prof = &prof;
}

// A checkpoint saved because its step's evaluation could not read the data (now repaired):
// that evaluation runs first, then the metrics file is opened one step back, so that its line
// replaces the one written without it (a regular file; appended to a stream). A read that fails
// again stops the run as before, file and checkpoint untouched. The checkpoint keeps its mark
// (later ones have none): a later resume from it runs the evaluation again, to the same line.
void Run::finish_pending_eval() {
  if (st.pending_metrics.empty()) return;
  spdlog::info("step {}: the evaluation a failed read left undone", st.step);
  json j = json::parse(st.pending_metrics);
  evaluate_into(j);
  if (ranks->main()) metrics.open(o.metrics, st.step - 1);
  metrics.write(j.dump());
  st.pending_metrics.clear();
}

// The validation loss of the weights' moving average: the weights are exchanged with it for
// the evaluation and back (also when it throws).
double Run::evaluate_ema() {
  return evaluate_average(*ema, ctx, [&] { return evaluate(); });
}

void Run::save() {
  if (!mark.needs_save(st.step)) return;   // written already, or the resumed checkpoint's step
  mark.saved_step = st.step;
  const std::vector<LoaderState>& pos = done_pos;
  st.data = pos[0];
  st.data_sources = pos.size() > 1 ? pos : std::vector<LoaderState>{};
  const model::ParamStore* avg = nullptr;
  if (ema) {
    ema->wait();
    avg = &ema->average();
  }
  if (ranks->active())
    save_run_checkpoint(o.out, o.keep_last, tokenizer_files, o.save_bf16, setup.args, params,
                        ranks->opt(), st, ranks->topo().world(), avg);
  else
    save_run_checkpoint(o.out, o.keep_last, tokenizer_files, o.save_bf16, setup.args, params,
                        *opt, st, avg);
}

// One optimiser step.
void Run::step_once(Progress& progress) {
  auto t0 = std::chrono::steady_clock::now();
  int64_t B = sched->batch(st.tokens_seen);
  int64_t micro = o.micro_batch_size > 0 ? std::min(o.micro_batch_size, B) : B;
  int64_t n_micro = (B + micro - 1) / micro;
  double lambda = sched->mtp_lambda(st.tokens_seen), gamma = sched->gamma(st.tokens_seen);
  double lr = sched->lr(st.step, st.tokens_seen);
  model::LossWeights w{float(lambda), float(o.balance_alpha)};
  params.zero_grads();
  StepAccumulator acc;
  UpdateResult u;
  // the step's rows (one data position for every rank); a micro-batch's losses weigh its share
  // of the step's targets (b/B with stride rows, all full)
  model::Batch all;
  read_data([&] { all = loader->next(B); });
  const int64_t W = count_targets(all);
  auto micro_batch = [&](int64_t first, int64_t b) {
    MicroBatch m;
    m.batch = rows_of(all, first, std::max<int64_t>(b, 1));
    m.dummy = b == 0;
    if (loader->packing() == Packing::stride) {
      m.share = double(b) / double(B);
    } else {
      m.share = b > 0 ? double(count_targets(m.batch)) / double(W) : 0.0;
      m.weights = micro_loss_weights(w, b, B, m.share);
    }
    return m;
  };
  if (ranks->active()) {   // every rank holds the global batch and runs its slice
    std::vector<MicroBatch> mbs;
    for (const auto& [first, b] : ranks->micro_slices(B, o.micro_batch_size))
      mbs.push_back(micro_batch(first, b));
    acc = ranks->step().forward_backward(ctx, mbs, w);
    ranks->step().reduce(acc);
    st.step++;
    st.tokens_seen += B * o.seq_len;
    if (ema) ema->wait();   // its thread reads the weights the update writes
    u = apply_update(ctx, ranks->step(), ranks->opt(), st, acc, lr, gamma, o.skip_nonfinite, o.out);
  } else {
    for (int64_t m = 0; m < n_micro; ++m) {
      const MicroBatch mb = micro_batch(m * micro, std::min(micro, B - m * micro));
      auto r = model->forward_backward(ctx, mb.batch, mb.weights.value_or(w), float(mb.share));
      acc.add(r, mb.share);
    }
    st.step++;
    st.tokens_seen += B * o.seq_len;
    if (ema) ema->wait();
    u = apply_update(ctx, *model, *opt, st, acc, lr, gamma, o.skip_nonfinite, o.out);
  }
  done_pos = loader->state();
  // n = the updates before this one (resumed runs continue the count)
  if (ema && u.applied) ema->start_update(st.optimizer_steps - 1);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double tps = double(B * o.seq_len) / std::max(1e-9, secs);
  prof_step_s += secs;
  prof_steps += 1;
  prof_tokens += B * o.seq_len;
  json j{{"step", st.step}, {"tokens", st.tokens_seen}, {"loss", acc.loss},
         {"loss_main", acc.loss_main}, {"loss_mtp", acc.loss_mtp},
         {"loss_balance", acc.loss_balance}, {"lr", lr}, {"grad_norm", u.grads.norm},
         {"batch", B}, {"targets", W}, {"mtp_lambda", lambda}, {"gamma", gamma},
         {"tokens_per_s", tps}, {"skipped", !u.applied}};
  j["maxvio"] = acc.maxvio();
  if (loader->size() > 1) j["rows_by_data"] = loader->rows_per_source();
  if (ranks->active() && ranks->topo().layout().pp > 1)
    j["pipeline_bubble"] = ranks->step().timing().last_bubble();
  if (ranks->active() && ranks->topo().layout().ep > 1) j["a2a_bytes"] = acc.a2a_bytes;
  bool eval_now = o.eval_every > 0 && (st.step % o.eval_every == 0 || st.step == st.total_steps);
  if (eval_now) {
    const json line = j;
    try {
      evaluate_into(j);
    } catch (...) {
      // the step is done: its line without the evaluation, then its checkpoint, which marks
      // the evaluation for the resume to run (see read_data, finish_pending_eval)
      if (data_failed) {
        metrics.write(line.dump());
        st.pending_metrics = line.dump();
      }
      throw;
    }
  }
  metrics.write(j.dump());
  if (ranks->main()) progress.update(st.step, acc.loss, lr, tps);
  if (o.save_every > 0 && st.step % o.save_every == 0 && st.step < st.total_steps) save();
}

}  // namespace

void pretrain(const PretrainOptions& opts) {
  Run run(opts);
  run.init();
  const bool distributed = run.ranks->active();
  DS_CHECK_AS(UsageError, run.st.step <= run.st.total_steps,
              "the checkpoint is at step {}, past this run's last step {} (nothing to continue: "
              "the run is longer than the flags ask for)", run.st.step, run.st.total_steps);
  run.finish_pending_eval();
  if (run.st.step >= run.st.total_steps) {   // the summary still names the checkpoint
    spdlog::info("nothing to do: the checkpoint is at step {} of {}", run.st.step,
                 run.st.total_steps);
    if (run.ranks->main())
      std::printf("%s\n", json{{"steps", run.st.step},
                               {"tokens", run.st.tokens_seen},
                               {"checkpoint", run.setup.resume_from.string()},
                               {"nonfinite_skipped", run.st.nonfinite_skipped},
                               {"interrupted", false}}.dump().c_str());
    return;
  }
  spdlog::info(
      "training {} parameters{} for {} steps ({} tokens), batch {} x {} tokens, {} threads{}",
      model::count_params(run.setup.args).total + model::count_params(run.setup.args).mtp,
      distributed ? fmt::format(" ({} on this rank)", run.params.numel()) : "", run.st.total_steps,
      run.st.total_tokens, opts.batch_size, opts.seq_len, run.ctx.threads,
      distributed ? " per rank, " + run.ranks->describe() : "");
  Progress progress(run.st.total_steps, opts.log_every);
  std::function<bool(bool)> agree;
  if (distributed) agree = [&](bool local) { return run.ranks->step().agree_stop(local); };
  InterruptScope interrupts(InterruptScope::Repeat::kIgnored);   // over the loop and the save
  int sig = 0;
  try {
    sig = run_step_loop(run.st, opts.stop_after, [&] { run.step_once(progress); }, agree);
  } catch (const Error&) {
    if (!run.data_failed) throw;
    // the data failed to read: the steps done so far are kept (a resume once the data is
    // repaired continues them), and the read's error is the one reported
    if (run.st.step > run.mark.start_step && run.mark.needs_save(run.st.step)) {
      if (run.ranks->main()) progress.finish();
      spdlog::warn("the data could not be read after step {}: saving its checkpoint",
                   run.st.step);
      try {
        run.save();
      } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
      }
    }
    throw;
  }
  const bool interrupted = sig != 0;
  if (run.ranks->main()) progress.finish();
  if (interrupted) spdlog::warn("signal {} received: saving a checkpoint and stopping", sig);
  run.save();
  if (!run.ranks->main()) return;
  const fs::path ckpt = run.mark.checkpoint(opts.out, run.st.step);
  json summary{{"steps", run.st.step},
               {"tokens", run.st.tokens_seen},
               {"checkpoint", ckpt.string()},
               {"nonfinite_skipped", run.st.nonfinite_skipped},
               {"interrupted", interrupted}};
  if (run.ema && io::exists(ema_dir_of(ckpt)))
    summary["ema_checkpoint"] = ema_dir_of(ckpt).string();
  if (distributed) {
    summary["ranks"] = run.ranks->topo().world_size();
    if (run.ranks->topo().layout().pp > 1)
      summary["pipeline_bubble"] = run.ranks->step().timing().bubble();
  }
  if (opts.profile)
    summary["profile"] =
        json::parse(profile_report(run.prof, run.prof_step_s, run.prof_steps, run.prof_tokens));
  std::printf("%s\n", summary.dump().c_str());
}

}  // namespace ds::train
