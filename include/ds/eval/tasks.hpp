// Perplexity-based multiple-choice tasks: JSONL loading with a field mapping, the built-in
// PIQA spec, seeded k-shot selection, the scored token sequences, and accuracy /
// byte-normalised accuracy from per-choice log-likelihoods.
//
// Text layout (one request per item and choice):
//   prompt       = shot_1 + "\n\n" + ... + shot_k + "\n\n" + context(item)
//   shot_j       = context(shot) + " " + gold choice of the shot
//   context(x)   = spec.context_template with "{context}" replaced by the context field
//   continuation = " " + choice
// Tokens: [BOS] + encode(prompt) + encode(continuation); only encode(continuation) is
// scored (so the joining space belongs to the choice, as BPE attaches it to the next word).
// reference: spec §6.1 (perplexity-based evaluation; PIQA 0-shot).
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ds/eval/metrics.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::eval {

namespace fs = std::filesystem;

struct McSpec {
  std::string name;
  std::string context_field;                 // dotted path into the record ("goal")
  std::vector<std::string> choice_fields;    // one field per choice ("sol1", "sol2"), or
  std::string choices_field;                 // one array-of-strings field ("choices.text")
  std::string gold_field;                    // integer, digit string or letter A..Z; or
  bool labels_file = false;                  // labels in a separate file, one per line
  int gold_base = 0;                         // subtracted from numeric gold values
  std::string context_template = "{context}";
};

// PIQA: goal / sol1 / sol2, labels 0/1 in <name>-labels.lst next to <name>.jsonl,
// context "Question: {goal}\nAnswer:" (the lm-evaluation-harness layout).
McSpec piqa_spec();
// A built-in spec by name (UsageError listing the known names).
McSpec builtin_mc_spec(const std::string& name);
// The labels file that goes with a data file: dir/x.jsonl -> dir/x-labels.lst.
fs::path default_labels_path(const fs::path& data);

struct McItem {
  size_t line = 0;                   // 1-based line in the data file
  std::string context;               // the rendered context_template
  std::vector<std::string> choices;
  size_t gold = 0;
};

// FormatError naming file:line and the field for malformed JSON, a missing or mistyped
// field, a gold index out of range; an empty file, or a label count that differs from the
// item count. `labels` is used only when spec.labels_file (default_labels_path if empty).
std::vector<McItem> load_mc(const fs::path& data, const McSpec& spec,
                            const fs::path& labels = {});

// k distinct indices from [0, pool) without `exclude` (npos = none), in a seeded order that
// depends only on (seed, item). UsageError when the pool is too small.
std::vector<size_t> select_shots(size_t pool, size_t k, size_t exclude, uint64_t seed,
                                 uint64_t item);

struct McRequest {
  std::string prompt;
  std::vector<std::string> continuations;   // " " + choice, one per choice
};
McRequest build_mc_request(const McItem& item, std::span<const McItem> shots);

// One tokenised continuation: the model scores tokens[score_begin, size()).
struct ScoredSequence {
  std::vector<tok::TokenId> tokens;
  size_t score_begin = 0;
  // acc_norm's normaliser: the choice's characters (Unicode code points, without the " "
  // before it), as lm-evaluation-harness divides by len(choice)
  size_t norm_len = 0;
};

// Each choice as `bos` (when given) + prompt + continuation; max_len > 0 drops prompt tokens
// from the left (after the BOS) until it fits. Without a BOS the first continuation token is
// conditioned on the last prompt token, which is always kept. FormatError if the continuation
// alone does not fit, or there is neither BOS nor prompt.
std::vector<ScoredSequence> tokenize_mc(const tok::Tokenizer& tokenizer, const McRequest& r,
                                        std::optional<tok::TokenId> bos, size_t max_len = 0);

struct McOutcome {
  size_t pred = 0;        // argmax log-likelihood (ties: lower index)
  size_t pred_norm = 0;   // argmax log-likelihood / length (ScoredSequence::norm_len)
  bool correct = false;
  bool correct_norm = false;
};
McOutcome score_mc(std::span<const double> loglik, std::span<const size_t> lengths,
                   size_t gold);

struct McMetrics {
  Estimate acc;
  Estimate acc_norm;
};
McMetrics aggregate_mc(std::span<const McOutcome> outcomes);

}  // namespace ds::eval
