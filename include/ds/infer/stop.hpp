// When a completion ends, and what text it has so far: EOS / stop ids, a maximum number of
// new tokens, and stop strings matched in the decoded text (also across token boundaries;
// the completion is cut before the match). finish_reason follows OpenAI-style APIs:
// "stop" (EOS, stop id or stop string), "length" (max new tokens).
// Streaming: Utf8StreamDecoder turns token byte strings into complete UTF-8 characters, and
// StopChecker::take_stream() only releases text that no stop string can still claim.
// reference: spec §2.4 (stop at EOS id 1, decode with skip_special_tokens).
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "ds/tokenizer/tokenizer.hpp"

namespace ds::infer {

// Incremental UTF-8 reassembly. The concatenation of every push() result and flush() equals
// tok::utf8_repair(all bytes): invalid sequences become U+FFFD, an incomplete but so far
// valid sequence at the end is held back until the next push.
class Utf8StreamDecoder {
 public:
  std::string push(std::string_view bytes);   // complete characters now available
  std::string flush();                        // the held-back tail (repaired); resets
  size_t pending() const { return pending_.size(); }

 private:
  std::string pending_;
};

enum class FinishReason { kNone, kStop, kLength };
std::string_view to_string(FinishReason r);   // "", "stop", "length"

struct StopOptions {
  std::vector<tok::TokenId> stop_ids;       // EOS and friends; the token's text is dropped
  size_t max_new_tokens = 200;              // generate.py's default
  std::vector<std::string> stop_strings;    // non-empty, valid UTF-8 (UsageError otherwise)
};

// Tracks one completion. Feed each generated token with its visible bytes (empty for
// tokens that decode to nothing, e.g. special tokens; TokenText below provides them).
class StopChecker {
 public:
  explicit StopChecker(StopOptions opts);

  // Returns true once the completion is finished; pushing after that is an InternalError.
  bool push(tok::TokenId id, std::string_view bytes);

  bool done() const { return reason_ != FinishReason::kNone; }
  FinishReason finish_reason() const { return reason_; }
  // Index into stop_strings of the string that ended the completion, if one did.
  std::optional<size_t> matched_stop_string() const { return matched_; }
  // Every generated id, including the stop id or the token that completed a stop string.
  const std::vector<tok::TokenId>& tokens() const { return tokens_; }
  // The completion text: complete UTF-8 characters, cut before a matched stop string,
  // without stop-id text. While running, an incomplete trailing character is not included.
  const std::string& text() const { return text_; }
  // Text not returned before that is final: excludes any tail that may still turn into a
  // stop string. Once done(), returns everything left (including a repaired partial char).
  std::string take_stream();

 private:
  void finish(FinishReason r);
  void append_text(std::string_view chars);
  size_t held_back() const;   // length of the text tail that is a prefix of a stop string

  StopOptions opts_;
  Utf8StreamDecoder utf8_;
  std::vector<tok::TokenId> tokens_;
  std::string text_;
  size_t emitted_ = 0;
  size_t max_stop_len_ = 0;
  FinishReason reason_ = FinishReason::kNone;
  std::optional<size_t> matched_;
};

// Visible bytes of each id for StopChecker: token_bytes(id), or "" for special tokens
// (what decode(skip_special = true) drops).
class TokenText {
 public:
  explicit TokenText(const tok::Tokenizer& tokenizer);
  std::string bytes(tok::TokenId id) const;
  bool is_special(tok::TokenId id) const { return special_.count(id) != 0; }
  // Ids the tokenizer knows (a model's head may be padded beyond it: never sample those).
  size_t vocab_size() const;
  // Ids below vocab_size() that no token has (gaps): never sampled either.
  const std::vector<uint32_t>& missing_ids() const { return missing_; }

 private:
  const tok::Tokenizer* tok_;
  std::unordered_set<tok::TokenId> special_;
  std::vector<uint32_t> missing_;
};

}  // namespace ds::infer
