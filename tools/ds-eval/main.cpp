// ds-eval: evaluate a checkpoint (ours or a Hugging Face DeepSeek-V3 directory, FP8 included):
// perplexity / bits per byte, perplexity-based multiple choice, generation exact match.
// Thin CLI: flags bind to ds::eval::{Perplexity,Mc,Gen}Options (defaults live there), then
// ds::eval::run_*(); exit codes from ds::cli::run_tool. Contract: man ds-eval.
#include <CLI/CLI.hpp>

#include "ds/cli/common.hpp"
#include "ds/eval/run.hpp"

namespace {

void add_shared(CLI::App* sub, ds::eval::CommonEvalOptions& c) {
  sub->add_option("--model", c.model,
                  "Checkpoint directory (or a ds-pretrain run directory)")->required();
  sub->add_option("--limit", c.limit, "Evaluate only the first N documents / items (0: all)")
      ->capture_default_str();
  sub->add_option("--log-samples", c.log_samples, "Write one JSON line per document / item here");
  sub->add_option("--out", c.out, "Write the report JSON here (default: stdout)");
  sub->add_option("--batch-size", c.batch_size, "Sequences per forward pass")
      ->capture_default_str();
  sub->add_option("--threads", c.threads, "CPU threads (0: all cores)")->capture_default_str();
  sub->add_option("--device", c.device, "cpu or cuda (one GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  sub->add_flag("--no-progress{false}", c.progress, "Never draw the progress bar");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Evaluate a DeepSeek-V3 checkpoint: perplexity, multiple choice, generation",
               "ds-eval"};
  ds::cli::CommonOptions common;
  ds::cli::add_common_options(app, common, "ds-eval");
  app.require_subcommand(1);
  app.fallthrough();

  ds::eval::PerplexityOptions p;
  auto* ppl = app.add_subcommand("perplexity", "Mean NLL, perplexity and bits per byte");
  add_shared(ppl, p.common);
  ppl->add_option("--data", p.data, "Token shards: dataset directory, manifest.json or one shard");
  ppl->add_option("files", p.files, "Text files, one document each")->check(CLI::ExistingFile);
  ppl->add_option("--window", p.window, "Tokens per window (0: min(max_seq_len, 2048))")
      ->capture_default_str();
  ppl->add_option("--stride", p.stride, "Window start step in tokens (0: = window)")
      ->capture_default_str();

  ds::eval::McOptions m;
  auto* mc = app.add_subcommand("mc", "Multiple choice by per-choice log-likelihood");
  add_shared(mc, m.common);
  mc->add_option("--task", m.task, "Built-in task (piqa) or a JSONL file")->capture_default_str();
  mc->add_option("--data", m.data, "JSONL file of a built-in task");
  mc->add_option("--labels", m.labels, "Labels file, one gold index per line");
  mc->add_option("--context-field", m.context_field, "Context field of a task FILE (dotted path)");
  mc->add_option("--choice-fields", m.choice_fields, "Choice fields, comma-separated (a,b)");
  mc->add_option("--choices-field", m.choices_field,
                 "Or: one array-of-strings field with the choices");
  mc->add_option("--gold-field", m.gold_field, "Gold field (index, digit string or letter)");
  mc->add_option("--gold-base", m.gold_base, "Subtracted from numeric gold values")
      ->capture_default_str();
  mc->add_option("--context-template", m.context_template, "Context text; {context} is replaced")
      ->capture_default_str();
  mc->add_option("--shots", m.shots, "Few-shot examples per item")->capture_default_str();
  mc->add_option("--seed", m.seed, "Seed of the shot selection")->capture_default_str();
  mc->add_option("--max-len", m.max_len,
                 "Cut prompts from the left to this many tokens (0: max_seq_len)")
      ->capture_default_str();

  ds::eval::GenOptions g;
  auto* gen = app.add_subcommand("generate",
                                "Exact match of generations (GSM8K style): greedy, pass@k, maj@N");
  add_shared(gen, g.common);
  gen->add_option("--task", g.task, "Built-in task (gsm8k) or a JSONL file")->capture_default_str();
  gen->add_option("--data", g.data, "JSONL file of a built-in task");
  gen->add_option("--question-field", g.question_field, "Question field")->capture_default_str();
  gen->add_option("--answer-field", g.answer_field, "Reference answer field (ends with #### N)")
      ->capture_default_str();
  gen->add_option("--shots", g.shots, "Few-shot examples per item (-1: 8, or 0 with --chat)")
      ->capture_default_str();
  gen->add_option("--seed", g.seed, "Seed of the shot selection and of sampling")
      ->capture_default_str();
  gen->add_option("--answer-regex", g.answer_regex,
                  "Regex extracting the answer (its first matched group, if any)");
  gen->add_flag("--chat", g.chat,
                "Chat layout: user/assistant turns in the chat template, stop at EOS");
  gen->add_option("--system", g.system, "System message of the chat layout (needs --chat)");
  gen->add_option("--max-new-tokens", g.max_new_tokens, "Generated tokens per item at most")
      ->capture_default_str();
  gen->add_option("--samples", g.samples,
                  "Sampled completions per item (pass@k, maj@N; > 1 needs --temperature)")
      ->capture_default_str();
  gen->add_option("--temperature", g.temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str();
  gen->add_option("--top-k", g.top_k, "Sample from the k most likely tokens (0: all)")
      ->capture_default_str();
  gen->add_option("--top-p", g.top_p, "Nucleus sampling mass (1: off)")->capture_default_str();
  gen->add_option("--pass-k", g.pass_k, "k of the pass@k metrics, comma-separated (default: 1,N)")
      ->delimiter(',');

  return ds::cli::run_tool(app, argc, argv, common, [&] {
    if (ppl->parsed()) ds::eval::run_perplexity(p);
    else if (mc->parsed()) ds::eval::run_mc(m);
    else ds::eval::run_generate(g);
  });
}
