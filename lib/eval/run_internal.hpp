// Pieces shared by the ds-eval entry points (run_perplexity.cpp, run_mc.cpp,
// run_generate.cpp): option checks, the compute context, model loading, report output and a
// terminal progress bar.
// reference: include/ds/eval/run.hpp.
#pragma once
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "ds/eval/report.hpp"
#include "ds/eval/run.hpp"
#include "ds/ops/ops.hpp"

namespace ds::eval::detail {

// UsageError naming the flag: --device other than cpu, --batch-size < 1, --threads < 0,
// --limit < 0, --out and --log-samples naming one file.
void check_common(const CommonEvalOptions& o);
// UsageError when --out or --log-samples names one of the files the evaluation reads: one of
// `inputs`, or a file of a checkpoint or dataset directory among them or of --model
// (config.json, *.safetensors, the index, the tokenizer files, manifest.json, shards).
void check_outputs_not_inputs(const CommonEvalOptions& o, std::vector<std::string> inputs);
ops::Context make_context(const CommonEvalOptions& o);   // also sets the CPU thread count
model::Pretrained load_model_for_eval(const CommonEvalOptions& o);
const tok::Tokenizer& tokenizer_of(const model::Pretrained& pt);   // FormatError if absent
tok::TokenId bos_of(const model::Pretrained& pt);   // tokenizer's BOS, else config bos_token_id
tok::TokenId eos_of(const model::Pretrained& pt);   // tokenizer's EOS, else config eos_token_id
// What a plain text (a prompt, a question) starts with: BOS when the model's
// tokenizer_config.json says add_bos_token (or has none), else nothing.
std::optional<tok::TokenId> text_bos(const model::Pretrained& pt);
// What a document scored whole (perplexity) is conditioned on before its first token: BOS as
// above, else EOS, the token before a document in data encoded without BOS (and the
// lm-evaluation-harness's prefix for a model without BOS).
tok::TokenId document_start(const model::Pretrained& pt);
size_t limited(size_t n, int64_t limit);            // min(n, limit) for limit > 0
// The report as JSON to o.out (atomically) or stdout, plus a one-line summary in the log. The
// sample log (--log-samples, when given) is published with it: only once the report's bytes are
// on disk, so that a failed report write (a full disk) leaves neither file behind, and taken
// back should the report's rename fail after the log's.
void write_report(const EvalReport& r, const CommonEvalOptions& o, SampleLog* log);

// "label [#####.....] done/total" redrawn on stderr (only when it is a terminal).
class Progress {
 public:
  Progress(std::string label, size_t total, bool enabled);
  ~Progress();
  void update(size_t done);

 private:
  std::string label_;
  size_t total_;
  bool on_;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace ds::eval::detail
