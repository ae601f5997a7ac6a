// SFT data: chat JSONL ({"messages": [{"role", "content"}, ...]}) and prompt/completion JSONL
// ({"prompt", "completion", optional "system"}: a user turn and an assistant turn), checked
// line by line (FormatError "FILE:LINE: field: problem"), rendered with the tokenizer's
// DeepSeek-V3 chat template and tokenised without adding a BOS (the rendering starts with
// it). Each token gets a target flag from the template's target spans (assistant content +
// EOS), so the loss can be restricted to what the assistant says. Format: docs/formats.md
// "SFT data".
// reference: spec §5.1 (SFT), §8.6 (chat template; "SFT target: assistant content + EOS").
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ds/infer/chat_template.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::sft {

// Which tokens are trained on (--loss-on).
enum class LossOn {
  assistant,   // every assistant turn's content + EOS (default)
  last,        // only the last assistant turn's content + EOS
  all,         // every token after the BOS (the whole rendered conversation)
};
LossOn parse_loss_on(std::string_view s);   // UsageError naming --loss-on
std::string_view loss_on_name(LossOn l);

// One conversation of a data file, checked but not yet tokenised.
struct Example {
  int32_t file = 0;                          // index into the list of data files
  int64_t line = 0;                          // 1-based line number
  std::vector<infer::ChatMessage> messages;
};

// Parses and checks one JSONL line; `where` ("FILE:LINE") prefixes every FormatError. Rules:
// valid JSON object; either "messages" (a non-empty array) or "prompt" + "completion"
// (strings; "system" optional); roles system, user, assistant, tool; every content a
// non-blank string (an assistant turn may instead carry tool_calls); system messages only
// before the first other turn (the template moves them to the start); at least one
// non-system turn; unless loss_on is `all`, the last turn is the assistant's.
std::vector<infer::ChatMessage> parse_example(std::string_view line, const std::string& where,
                                              LossOn loss_on);

// Every non-blank line of a JSONL file (file index `file` recorded in each Example).
// IoError if unreadable; FormatError "FILE: no samples" for a file without any line.
std::vector<Example> read_examples(const std::string& path, int32_t file, LossOn loss_on);

// A tokenised conversation.
struct Sample {
  std::vector<int32_t> tokens;   // (L) ids, tokens[0] = BOS
  std::vector<uint8_t> target;   // (L) 1: the token is a training target (predicted from the
                                 // tokens before it); target[0] is always 0
  int64_t n_targets = 0;         // sum of target
  int32_t file = 0;
  int64_t line = 0;
  bool truncated = false;
};

struct TokenizeOptions {
  LossOn loss_on = LossOn::assistant;
  int64_t max_tokens = 0;        // longest sample (seq_len + 1); 0: no limit
  bool truncate = false;         // cut longer samples to max_tokens instead of an error
};

// Renders `messages` (no generation prompt), tokenises the text with added tokens matched
// and no extra BOS, and marks the target tokens. FormatError prefixed with `where` if the
// tokenizer does not reproduce the text byte for byte, if the text does not start with the
// BOS token, if a target span boundary falls inside a token (a tokenizer without the
// DeepSeek special tokens), or if the sample is longer than max_tokens without truncate.
Sample tokenize_example(const std::vector<infer::ChatMessage>& messages,
                        const infer::ChatTemplate& tmpl, const tok::Tokenizer& tok,
                        const TokenizeOptions& opt, const std::string& where);

struct SampleSet {
  std::vector<Sample> samples;   // in file order
  int64_t truncated = 0;         // samples cut to max_tokens (--truncate)
  int64_t dropped = 0;           // samples left without a target by truncation (skipped)
  int64_t tokens = 0;            // sum of sample lengths
  int64_t targets = 0;           // sum of n_targets
};

// Reads, checks and tokenises every file (threads: 0 = all cores); the first error in file
// order is thrown. Samples keep file order.
SampleSet load_samples(const std::vector<std::string>& files, const infer::ChatTemplate& tmpl,
                       const tok::Tokenizer& tok, const TokenizeOptions& opt, int threads);

// XXH64 over the bytes of `files` (in order, each prefixed by its size), as 16 hex digits:
// part of the data fingerprint a resume must match. A FIFO or pipe (/dev/stdin, <(zcat f.gz))
// gives the bytes load_samples read from it (io::read_input), not a second, empty read.
std::string files_fingerprint(const std::vector<std::string>& files);

}  // namespace ds::sft
