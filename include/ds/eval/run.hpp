// ds-eval's library entry points: perplexity / bits per byte of texts or token shards,
// perplexity-based multiple choice, and generation-based exact match (greedy, or pass@k and
// maj@N over sampled completions), each on a pretrained checkpoint (ours or a Hugging Face
// DeepSeek-V3 directory, FP8 included). The options structs hold every flag's default; the
// tool only binds flags to them.
//
// Perplexity: every document is scored after a BOS (prepended unless it starts with one);
// a text file is one document (UTF-8 bytes = its size); a shard document's bytes are those
// of its decoded text without special tokens. Long documents are scored in sliding windows
// (eval::sliding_windows): every target once, with >= window - stride tokens of context.
// reference: spec §6.1; include/ds/eval/{metrics,tasks,gen_tasks,report}.hpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ds/eval/report.hpp"
#include "ds/model/pretrained.hpp"

namespace ds::eval {

struct CommonEvalOptions {
  std::string model;          // checkpoint directory (or a ds-pretrain run directory)
  int64_t limit = 0;          // evaluate the first N documents / items (0: all)
  std::string log_samples;    // per-example JSONL ("" = none)
  std::string out;            // report JSON ("" = stdout)
  int64_t batch_size = 8;     // sequences per forward
  int threads = 0;            // CPU threads (0: all cores)
  std::string device = "cpu"; // cpu | cuda (one GPU)
  bool progress = true;       // progress bar on stderr when it is a terminal
};

struct PerplexityOptions {
  CommonEvalOptions common;
  std::string data;                 // dataset dir / manifest.json / shard (ds-tokenize encode)
  std::vector<std::string> files;   // or text files, one document each
  int64_t window = 0;               // tokens per window (0: min(max_seq_len, 2048))
  int64_t stride = 0;               // window start step (0: = window)
};

struct McOptions {
  CommonEvalOptions common;
  std::string task = "piqa";        // a built-in name (data from --data) or a JSONL file
  std::string data;                 // data file of a built-in task
  std::string labels;               // labels file (one per line); built-in default next to data
  std::string context_field, choice_fields /*"a,b"*/, choices_field, gold_field;
  std::string context_template = "{context}";
  int gold_base = 0;
  int64_t shots = 0;
  uint64_t seed = 1234;             // shot selection
  int64_t max_len = 0;              // truncate prompts from the left (0: max_seq_len)
};

struct GenOptions {
  CommonEvalOptions common;
  std::string task = "gsm8k";       // "gsm8k" (data from --data) or a JSONL file
  std::string data;
  std::string question_field = "question", answer_field = "answer";
  int64_t shots = -1;               // -1: 8 (spec §6.2, GSM8K 8-shot), or 0 with --chat
                                    // (spec §6.3, chat models 0-shot); from the same file
  uint64_t seed = 1234;
  std::string answer_regex;         // "" = number after "####", else the last number
  bool chat = false;                // chat layout (gen_tasks.hpp): turns, EOS stop only
  std::string system;               // system message of the chat layout ("" = none)
  int64_t max_new_tokens = 256;
  // Sampled decoding (pass@k, maj@N): `samples` completions per item, sample s of item i
  // drawn from the sampler stream (seed, i * samples + s, step), so the result does not
  // depend on --batch-size. temperature 0 is greedy, which allows one sample only.
  int64_t samples = 1;
  float temperature = 0, top_p = 1;
  int top_k = 0;
  std::vector<int64_t> pass_k;      // k of the pass@k metrics (empty: 1 and samples)
};

// The shot count used: opts.shots, or its default when it is -1.
int64_t effective_shots(const GenOptions& opts);

// Load the model from opts.common.model, evaluate, write the report (and samples); the
// report is also returned. UsageError for bad option values.
EvalReport run_perplexity(const PerplexityOptions& opts);
EvalReport run_mc(const McOptions& opts);
EvalReport run_generate(const GenOptions& opts);

// The same on an already loaded model (nothing written unless the options say so). `log`: the
// caller's open --log-samples file, written to and left for the caller to publish (run_* do,
// with the report); null: one of its own, published at the end when the options name one.
EvalReport eval_perplexity(model::Pretrained& pt, const PerplexityOptions& opts,
                           SampleLog* log = nullptr);
EvalReport eval_mc(model::Pretrained& pt, const McOptions& opts, SampleLog* log = nullptr);
EvalReport eval_generate(model::Pretrained& pt, const GenOptions& opts, SampleLog* log = nullptr);

}  // namespace ds::eval
