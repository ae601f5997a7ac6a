// ds-eval mc: perplexity-based multiple choice -- per item and choice the log-likelihood of
// " " + choice after the (k-shot) prompt, the prompt computed once per item (the inference
// engine's cache copied to each choice); accuracy and byte-normalised accuracy with standard
// errors (eval::score_mc / aggregate_mc).
// reference: spec §6.1 (perplexity-based tasks; PIQA 0-shot); include/ds/eval/tasks.hpp.
#include <algorithm>
#include <string_view>

#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/eval/lm_scorer.hpp"
#include "ds/io/file.hpp"
#include "run_internal.hpp"

namespace ds::eval {

namespace {

// "a,b" -> {a, b}; an empty name ("a,,b", "a,b,") is a usage error.
std::vector<std::string> split_commas(const std::string& s, std::string_view flag) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t end = s.find(',', start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    DS_CHECK_AS(UsageError, !out.back().empty(), "{} '{}': empty field name", flag, s);
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

bool is_builtin(const std::string& task) { return task == "piqa"; }

// The spec and data file of --task (built-in name + --data, or a JSONL file + field flags).
McSpec mc_spec(const McOptions& o, fs::path& data) {
  const bool custom_fields = !o.context_field.empty() || !o.choice_fields.empty() ||
                             !o.choices_field.empty() || !o.gold_field.empty();
  if (is_builtin(o.task)) {
    DS_CHECK_AS(UsageError, !o.data.empty(), "--task {} needs --data FILE (its JSONL file)",
                o.task);
    DS_CHECK_AS(UsageError, !custom_fields, "--task {}: field flags apply to a task FILE only",
                o.task);
    DS_CHECK_AS(UsageError, o.gold_base == 0 && o.context_template == "{context}",
                "--task {}: --gold-base and --context-template apply to a task FILE only",
                o.task);
    data = o.data;
    return builtin_mc_spec(o.task);
  }
  DS_CHECK_AS(UsageError, io::exists(o.task), "--task {}: not a built-in task (piqa) nor a file",
              o.task);
  DS_CHECK_AS(UsageError, o.data.empty(),
              "--data is for built-in tasks; --task {} is the data file", o.task);
  DS_CHECK_AS(UsageError, !o.context_field.empty(), "--task FILE needs --context-field");
  DS_CHECK_AS(UsageError, o.choice_fields.empty() != o.choices_field.empty(),
              "--task FILE needs exactly one of --choice-fields and --choices-field");
  DS_CHECK_AS(UsageError, o.gold_field.empty() != o.labels.empty(),
              "--task FILE needs exactly one of --gold-field and --labels");
  data = o.task;
  McSpec s;
  s.name = fs::path(o.task).stem().string();
  s.context_field = o.context_field;
  if (!o.choice_fields.empty()) s.choice_fields = split_commas(o.choice_fields, "--choice-fields");
  DS_CHECK_AS(UsageError, o.choice_fields.empty() || s.choice_fields.size() >= 2,
              "--choice-fields {}: a multiple-choice item needs at least two choice fields",
              o.choice_fields);
  s.choices_field = o.choices_field;
  s.gold_field = o.gold_field;
  s.labels_file = !o.labels.empty();
  s.gold_base = o.gold_base;
  s.context_template = o.context_template;
  DS_CHECK_AS(UsageError, s.context_template.find("{context}") != std::string::npos,
              "--context-template must contain {{context}}");
  return s;
}

// The files an evaluation reads: the data file and its labels file, if any.
std::vector<std::string> mc_inputs(const McOptions& o, const McSpec& s, const fs::path& data) {
  std::vector<std::string> in{data.string()};
  if (s.labels_file) in.push_back(o.labels.empty() ? default_labels_path(data).string() : o.labels);
  return in;
}

}  // namespace

EvalReport eval_mc(model::Pretrained& pt, const McOptions& o, SampleLog* log) {
  detail::check_common(o.common);
  DS_CHECK_AS(UsageError, o.shots >= 0 && o.max_len >= 0, "--shots and --max-len must be >= 0");
  fs::path data;
  const McSpec spec = mc_spec(o, data);
  detail::check_outputs_not_inputs(o.common, mc_inputs(o, spec, data));
  const tok::Tokenizer& tk = detail::tokenizer_of(pt);
  const ops::Context ctx = detail::make_context(o.common);
  DS_CHECK_AS(UsageError, o.max_len <= pt.args.max_seq_len,
              "--max-len {} exceeds the model's max_seq_len {}", o.max_len, pt.args.max_seq_len);
  const std::vector<McItem> all = load_mc(data, spec, o.labels);
  const size_t n = detail::limited(all.size(), o.common.limit);
  const size_t max_len = size_t(o.max_len > 0 ? o.max_len : pt.args.max_seq_len);

  std::vector<McRequest> texts(n);
  std::vector<std::vector<ScoredSequence>> seqs(n);
  std::vector<ScoreRequest> reqs;
  for (size_t i = 0; i < n; ++i) {
    std::vector<McItem> shots;
    for (size_t j : select_shots(all.size(), size_t(o.shots), i, o.seed, i))
      shots.push_back(all[j]);
    texts[i] = build_mc_request(all[i], shots);
    try {
      seqs[i] = tokenize_mc(tk, texts[i], detail::text_bos(pt), max_len);
    } catch (const FormatError& e) {
      DS_THROW(FormatError, "{}:{}: {}", data.string(), all[i].line, e.what());
    }
  }
  uint64_t tokens = 0;
  for (const auto& item : seqs)
    for (const ScoredSequence& s : item) {
      reqs.push_back({s.tokens, s.score_begin, s.tokens.size()});
      tokens += s.tokens.size();
    }
  // An item's choices share its context: computed once per item (score_shared_prefix).
  std::vector<size_t> groups;
  int64_t longest = 1;
  size_t biggest = 1;
  for (const auto& item : seqs) {
    groups.push_back(item.size());
    biggest = std::max(biggest, item.size());
    for (const ScoredSequence& s : item)
      longest = std::max(longest, int64_t(s.tokens.size()) - 1);   // the model reads n - 1
  }
  infer::EngineOptions eo{int(std::max(size_t(o.common.batch_size), biggest)), longest};
  eo.bf16_weights = false;   // no BF16 copies beside the F32 weights: scoring is all prefill
  infer::Engine engine(pt.args, *pt.store, ctx, eo);
  detail::Progress bar(spec.name, reqs.size(), o.common.progress);
  const auto res =
      score_shared_prefix(engine, reqs, groups, 512, [&](size_t k) { bar.update(k); });

  std::unique_ptr<SampleLog> own;   // no caller's log: this function publishes its own
  if (!log && !o.common.log_samples.empty()) {
    own = std::make_unique<SampleLog>(o.common.log_samples);
    log = own.get();
  }
  std::vector<McOutcome> outcomes;
  size_t r = 0;
  for (size_t i = 0; i < n; ++i) {
    std::vector<double> ll;
    std::vector<size_t> lens;
    for (const ScoredSequence& s : seqs[i])
      ll.push_back(res[r++].logprob), lens.push_back(s.norm_len);
    outcomes.push_back(score_mc(ll, lens, all[i].gold));
    if (log) log->write(mc_sample_record(i, all[i], texts[i], ll, outcomes.back()));
  }
  const McMetrics m = aggregate_mc(outcomes);

  if (own) own->close();

  EvalReport rep;
  rep.task = spec.name;
  rep.task_file = data.string();
  rep.task_fingerprint = file_fingerprint(data);
  rep.checkpoint_fingerprint = pt.fingerprint;
  rep.settings = {
      {"shots", o.shots}, {"seed", o.seed}, {"max_len", max_len}, {"limit", o.common.limit},
      {"batch_size", o.common.batch_size}};
  rep.add("acc", m.acc);
  rep.add("acc_norm", m.acc_norm);
  rep.counts = {{"items", n}, {"requests", reqs.size()}, {"tokens", tokens}};
  return rep;
}

EvalReport run_mc(const McOptions& o) {
  detail::check_common(o.common);
  DS_CHECK_AS(UsageError, o.shots >= 0 && o.max_len >= 0, "--shots and --max-len must be >= 0");
  fs::path data;
  const McSpec spec = mc_spec(o, data);   // flag errors before the model is loaded
  detail::check_outputs_not_inputs(o.common, mc_inputs(o, spec, data));
  model::Pretrained pt = detail::load_model_for_eval(o.common);
  // from here SIGINT/SIGTERM stop at the next batch: the sample log's temporary file and a
  // report being written are removed, and the tool exits 128 + the signal
  InterruptScope interrupts;
  std::unique_ptr<SampleLog> log;   // published by write_report, with the report
  if (!o.common.log_samples.empty()) log = std::make_unique<SampleLog>(o.common.log_samples);
  EvalReport r = eval_mc(pt, o, log.get());
  check_interrupt();   // one that came during the last batch: no report
  detail::write_report(r, o.common, log.get());
  return r;
}

}  // namespace ds::eval
