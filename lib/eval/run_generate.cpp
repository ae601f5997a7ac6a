// ds-eval generate: generation-based exact match (GSM8K style) with greedy decoding, or pass@k
// and maj@N over sampled completions, on the inference engine (absorbed-MLA cache), k-shot
// prompts drawn from the same file (the item itself excluded, seeded) in the plain or the chat
// layout (user/assistant turns rendered with the checkpoint's chat template, EOS stop), answer
// extraction and normalisation.
// reference: spec §6.1-6.2 (GSM8K 8-shot); include/ds/eval/gen_tasks.hpp, ds/infer/generator.hpp;
// Chen et al. 2021 (unbiased pass@k); Wang et al. 2022 (self-consistency, maj@N).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/infer/generator.hpp"
#include "ds/io/file.hpp"
#include "run_internal.hpp"

namespace ds::eval {

namespace {

fs::path gen_data(const GenOptions& o, GenSpec& spec) {
  spec.question_field = o.question_field;
  spec.answer_field = o.answer_field;
  if (o.task == "gsm8k") {
    DS_CHECK_AS(UsageError, !o.data.empty(), "--task gsm8k needs --data FILE (its JSONL file)");
    spec.name = "gsm8k";
    return o.data;
  }
  DS_CHECK_AS(UsageError, io::exists(o.task), "--task {}: not a built-in task (gsm8k) nor a file",
              o.task);
  DS_CHECK_AS(UsageError, o.data.empty(),
              "--data is for built-in tasks; --task {} is the data file", o.task);
  spec.name = fs::path(o.task).stem().string();
  return o.task;
}

// The prompt text of item i: the k-shot "Question:/Answer:" layout, or the rendered chat
// (which starts with the BOS text).
std::string prompt_text(const model::Pretrained& pt, const GenOptions& o, const GenItem& item,
                        std::span<const GenItem> shots) {
  if (!o.chat) return build_gen_prompt(item, shots);
  return pt.chat_template->render(build_chat_messages(item, shots, o.system),
                                  /*add_generation_prompt=*/true).text;
}

// BOS (detail::text_bos) + prompt tokens, or the rendered chat (special tokens matched),
// left-truncated after its first token (the BOS; the chat's BOS text) to `keep`.
std::vector<int32_t> prompt_tokens(const model::Pretrained& pt, const std::string& prompt,
                                   bool chat, size_t keep, size_t& truncated) {
  const tok::Tokenizer& tk = detail::tokenizer_of(pt);
  std::vector<tok::TokenId> ids;
  size_t head = 1;   // kept when the prompt is cut: the BOS (or the chat's BOS text)
  if (chat) {
    ids = tk.encode(prompt, /*match_added_tokens=*/true);
  } else {
    const auto bos = detail::text_bos(pt);
    if (bos) ids.push_back(*bos);
    else head = 0;
    tk.encode(prompt, ids, /*match_added_tokens=*/false);
  }
  if (ids.size() > keep) {
    const auto first = ids.begin() + std::ptrdiff_t(head);
    ids.erase(first, first + std::ptrdiff_t(ids.size() - keep));
    ++truncated;
  }
  return {ids.begin(), ids.end()};
}

// The sampler settings of --temperature/--top-k/--top-p (seeded by --seed), checked against
// --samples: greedy decoding gives one completion however often it is asked.
infer::SamplingOptions sampling_of(const GenOptions& o) {
  const infer::SamplingOptions s{o.temperature, o.top_k, o.top_p, o.seed};
  infer::validate(s);
  DS_CHECK_AS(UsageError, o.samples >= 1 && o.samples <= 65536,
              "--samples must be in [1, 65536] (got {})", o.samples);
  const bool greedy = s.temperature == 0 || s.top_k == 1;
  DS_CHECK_AS(UsageError, !greedy || o.samples == 1,
              "--samples {} needs sampled decoding (--temperature > 0, --top-k other than 1): "
              "greedy completions are all the same", o.samples);
  return s;
}

// The k of the pass@k metrics, ascending: --pass-k, else 1 and --samples (none for one
// greedy or sampled completion without --pass-k: exact_match is pass@1 then).
std::vector<size_t> pass_ks(const GenOptions& o) {
  std::vector<size_t> ks;
  for (int64_t k : o.pass_k) {
    DS_CHECK_AS(UsageError, k >= 1 && k <= o.samples, "--pass-k {} must be in [1, --samples {}]",
                k, o.samples);
    ks.push_back(size_t(k));
  }
  if (o.pass_k.empty() && o.samples > 1) ks = {1, size_t(o.samples)};
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  return ks;
}

}  // namespace

int64_t effective_shots(const GenOptions& o) {
  if (o.shots >= 0) return o.shots;
  return o.chat ? 0 : 8;
}

EvalReport eval_generate(model::Pretrained& pt, const GenOptions& o, SampleLog* log) {
  detail::check_common(o.common);
  DS_CHECK_AS(UsageError, o.shots >= -1, "--shots must be >= 0 (or -1: the default)");
  DS_CHECK_AS(UsageError, o.chat || o.system.empty(), "--system needs --chat");
  const int64_t n_shots = effective_shots(o);
  DS_CHECK_AS(UsageError, o.max_new_tokens >= 1 && o.max_new_tokens < pt.args.max_seq_len - 1,
              "--max-new-tokens must be in [1, {}) for this model", pt.args.max_seq_len - 1);
  if (o.chat && !pt.chat_template)
    DS_THROW(FormatError, "--chat: {}", pt.chat_template_error);
  const infer::SamplingOptions sampling = sampling_of(o);
  const std::vector<size_t> ks = pass_ks(o);
  const size_t N = size_t(o.samples);   // completions per item
  GenSpec spec;
  const fs::path data = gen_data(o, spec);
  detail::check_outputs_not_inputs(o.common, {data.string()});
  const AnswerExtractor extract =
      o.answer_regex.empty() ? AnswerExtractor() : AnswerExtractor(o.answer_regex);
  const std::vector<GenItem> all = load_gen(data, spec);
  const size_t n = detail::limited(all.size(), o.common.limit);
  const tok::Tokenizer& tk = detail::tokenizer_of(pt);

  std::vector<std::string> prompts(n);
  std::vector<std::vector<int32_t>> ids(n);
  size_t truncated = 0;
  const size_t keep = size_t(pt.args.max_seq_len - o.max_new_tokens);
  for (size_t i = 0; i < n; ++i) {
    std::vector<GenItem> shots;
    for (size_t j : select_shots(all.size(), size_t(n_shots), i, o.seed, i))
      shots.push_back(all[j]);
    prompts[i] = prompt_text(pt, o, all[i], shots);
    ids[i] = prompt_tokens(pt, prompts[i], o.chat, keep, truncated);
  }
  if (truncated)
    spdlog::warn("{}: {} prompt(s) cut from the left to fit max_seq_len", spec.name, truncated);

  infer::GenerationConfig cfg;
  cfg.sampling = sampling;
  cfg.stop.max_new_tokens = size_t(o.max_new_tokens);
  cfg.stop.stop_ids = {tok::TokenId(pt.args.eos_token_id)};   // the tokenizer's (checked at load)
  if (!o.chat) cfg.stop.stop_strings = kGenStopStrings;   // a chat turn ends with EOS
  const infer::TokenText text(tk);
  const size_t B = size_t(o.common.batch_size);
  // The cache is allocated up front (slots x capacity): size it to the longest request.
  size_t longest = 1;
  for (const auto& p : ids) longest = std::max(longest, p.size());
  const int64_t capacity =
      std::min<int64_t>(pt.args.max_seq_len, int64_t(longest) + o.max_new_tokens + 2);
  // Requests r = i * N + s (item i, sample s) in that order, batched B at a time; request r
  // samples from stream r.
  const size_t R = n * N;
  infer::Engine engine(pt.args, *pt.store, detail::make_context(o.common),
                       infer::EngineOptions{int(std::min(B, std::max<size_t>(R, 1))), capacity});

  std::unique_ptr<SampleLog> own;   // no caller's log: this function publishes its own
  if (!log && !o.common.log_samples.empty()) {
    own = std::make_unique<SampleLog>(o.common.log_samples);
    log = own.get();
  }
  detail::Progress bar(spec.name, R, o.common.progress);
  std::vector<size_t> item_correct(n, 0);   // correct samples per item
  std::vector<std::vector<std::optional<std::string>>> preds(N > 1 ? n : 0);   // for maj@N
  infer::GenerationStats stats;
  for (size_t b0 = 0; b0 < R; b0 += B) {
    check_interrupt();
    const size_t b1 = std::min(R, b0 + B);
    std::vector<std::vector<int32_t>> batch;
    for (size_t r = b0; r < b1; ++r) batch.push_back(ids[r / N]);
    cfg.first_seq = b0;
    const auto outs = infer::generate(engine, batch, cfg, &text, &stats);
    for (size_t k = 0; k < outs.size(); ++k) {
      const size_t i = (b0 + k) / N, smp = (b0 + k) % N;
      auto pred = extract(outs[k].text);
      const bool ok = exact_match(pred, all[i].gold);
      item_correct[i] += ok;
      if (log) {
        nlohmann::json rec = gen_sample_record(i, all[i], prompts[i], outs[k].text, pred, ok,
                                               std::string(infer::to_string(outs[k].reason)));
        if (N > 1) rec["sample"] = smp;
        log->write(rec);
      }
      if (N > 1) preds[i].push_back(std::move(pred));
    }
    bar.update(b1);
  }

  if (own) own->close();

  EvalReport rep;
  rep.task = spec.name;
  rep.task_file = data.string();
  rep.task_fingerprint = file_fingerprint(data);
  rep.checkpoint_fingerprint = pt.fingerprint;
  const bool greedy = sampling.temperature == 0 || sampling.top_k == 1;
  rep.settings = {{"shots", n_shots},
                  {"seed", o.seed},
                  {"chat", o.chat},
                  {"system", o.system},
                  {"max_new_tokens", o.max_new_tokens},
                  {"answer_regex", o.answer_regex},
                  {"decoding", greedy ? "greedy" : "sampling"},
                  {"samples", N},
                  {"temperature", sampling.temperature},
                  {"top_k", sampling.top_k},
                  {"top_p", sampling.top_p},
                  {"pass_k", ks},
                  {"limit", o.common.limit}};
  size_t correct = 0;
  for (size_t c : item_correct) correct += c;
  // One completion: the binomial error of before. Several: items are the sampled units, each
  // contributing its own estimate (c_i / N, pass@k, the majority's match).
  if (N == 1) {
    rep.add("exact_match", accuracy(correct, n));
  } else {
    std::vector<double> frac(n);
    for (size_t i = 0; i < n; ++i) frac[i] = double(item_correct[i]) / double(N);
    rep.add("exact_match", mean_stderr(frac));
  }
  for (size_t k : ks) {
    std::vector<double> p(n);
    for (size_t i = 0; i < n; ++i) p[i] = pass_at_k(N, item_correct[i], k);
    rep.add(fmt::format("pass@{}", k), mean_stderr(p));
  }
  size_t maj_correct = 0;
  if (N > 1) {
    for (size_t i = 0; i < n; ++i)
      maj_correct += exact_match(majority_answer(preds[i]), all[i].gold);
    rep.add(fmt::format("maj@{}", N), accuracy(maj_correct, n));
  }
  rep.counts = {{"items", n},
                {"completions", R},
                {"correct", correct},
                {"truncated_prompts", truncated},
                {"prompt_tokens", uint64_t(stats.prompt_tokens)},
                {"generated_tokens", uint64_t(stats.generated_tokens)}};
  if (N > 1) rep.counts.emplace_back("majority_correct", maj_correct);
  return rep;
}

EvalReport run_generate(const GenOptions& o) {
  detail::check_common(o.common);
  GenSpec spec;   // task flags and output paths checked before the model is loaded
  detail::check_outputs_not_inputs(o.common, {gen_data(o, spec).string()});
  model::Pretrained pt = detail::load_model_for_eval(o.common);
  // from here SIGINT/SIGTERM stop at the next batch: the sample log's temporary file and a
  // report being written are removed, and the tool exits 128 + the signal
  InterruptScope interrupts;
  std::unique_ptr<SampleLog> log;   // published by write_report, with the report
  if (!o.common.log_samples.empty()) log = std::make_unique<SampleLog>(o.common.log_samples);
  EvalReport r = eval_generate(pt, o, log.get());
  check_interrupt();   // one that came during the last batch: no report
  detail::write_report(r, o.common, log.get());
  return r;
}

}  // namespace ds::eval
