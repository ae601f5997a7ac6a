// ds-eval generate: generation-based exact match (GSM8K style) with greedy decoding on the
// inference engine (absorbed-MLA cache), k-shot prompts drawn from the same file (the item
// itself excluded, seeded) in the plain or the chat layout (user/assistant turns rendered with
// the checkpoint's chat template, EOS stop), answer extraction and normalisation.
// reference: spec §6.1-6.2 (GSM8K 8-shot); include/ds/eval/gen_tasks.hpp, ds/infer/generator.hpp.
#include <spdlog/spdlog.h>

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

  infer::GenerationConfig cfg;   // greedy: temperature 0
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
  infer::Engine engine(pt.args, *pt.store, detail::make_context(o.common),
                       infer::EngineOptions{int(std::min(B, std::max<size_t>(n, 1))), capacity});

  std::unique_ptr<SampleLog> own;   // no caller's log: this function publishes its own
  if (!log && !o.common.log_samples.empty()) {
    own = std::make_unique<SampleLog>(o.common.log_samples);
    log = own.get();
  }
  detail::Progress bar(spec.name, n, o.common.progress);
  size_t correct = 0;
  infer::GenerationStats stats;
  for (size_t b0 = 0; b0 < n; b0 += B) {
    check_interrupt();
    const std::vector<std::vector<int32_t>> batch(
        ids.begin() + std::ptrdiff_t(b0), ids.begin() + std::ptrdiff_t(std::min(n, b0 + B)));
    const auto outs = infer::generate(engine, batch, cfg, &text, &stats);
    for (size_t k = 0; k < outs.size(); ++k) {
      const size_t i = b0 + k;
      const auto pred = extract(outs[k].text);
      const bool ok = exact_match(pred, all[i].gold);
      correct += ok;
      if (log) log->write(gen_sample_record(i, all[i], prompts[i], outs[k].text, pred, ok,
                                            std::string(infer::to_string(outs[k].reason))));
    }
    bar.update(std::min(n, b0 + B));
  }

  if (own) own->close();

  EvalReport rep;
  rep.task = spec.name;
  rep.task_file = data.string();
  rep.task_fingerprint = file_fingerprint(data);
  rep.checkpoint_fingerprint = pt.fingerprint;
  rep.settings = {{"shots", n_shots},
                  {"seed", o.seed},
                  {"chat", o.chat},
                  {"system", o.system},
                  {"max_new_tokens", o.max_new_tokens},
                  {"answer_regex", o.answer_regex},
                  {"decoding", "greedy"},
                  {"limit", o.common.limit}};
  rep.add("exact_match", accuracy(correct, n));
  rep.counts = {{"items", n},
                {"correct", correct},
                {"truncated_prompts", truncated},
                {"prompt_tokens", uint64_t(stats.prompt_tokens)},
                {"generated_tokens", uint64_t(stats.generated_tokens)}};
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
