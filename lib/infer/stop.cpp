// Stop conditions and streaming UTF-8 reassembly (see include/ds/infer/stop.hpp).
// reference: spec §2.4; Unicode §3.9 (maximal subparts, matching tok::utf8_repair).
#include "ds/infer/stop.hpp"

#include <algorithm>

#include "ds/core/error.hpp"
#include "ds/tokenizer/utf8.hpp"

namespace ds::infer {

namespace {

// Length of the prefix of s[pos..] that is the start of a well-formed sequence but runs
// into the end of `s` before completing; 0 if s[pos..] is not such a truncated sequence.
size_t truncated_sequence(std::string_view s, size_t pos) {
  const size_t left = s.size() - pos;
  const size_t need = tok::utf8_sequence_length(static_cast<unsigned char>(s[pos]));
  if (need < 2 || left >= need) return 0;
  return tok::utf8_maximal_subpart(s, pos) == left ? left : 0;
}

}  // namespace

std::string Utf8StreamDecoder::push(std::string_view bytes) {
  pending_.append(bytes);
  // Everything up to the last position that could start a held-back sequence is final.
  size_t keep_from = pending_.size();
  for (size_t back = 1; back <= 3 && back <= pending_.size(); ++back) {
    const size_t pos = pending_.size() - back;
    if (truncated_sequence(pending_, pos) == back) { keep_from = pos; break; }
  }
  std::string out = tok::utf8_repair(std::string_view(pending_).substr(0, keep_from));
  pending_.erase(0, keep_from);
  return out;
}

std::string Utf8StreamDecoder::flush() {
  std::string out = tok::utf8_repair(pending_);
  pending_.clear();
  return out;
}

std::string_view to_string(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
  }
  return "";
}

StopChecker::StopChecker(StopOptions opts) : opts_(std::move(opts)) {
  for (size_t i = 0; i < opts_.stop_strings.size(); ++i) {
    const std::string& s = opts_.stop_strings[i];
    if (s.empty()) DS_THROW(UsageError, "--stop #{}: empty stop string", i);
    if (tok::first_invalid_utf8(s))
      DS_THROW(UsageError, "--stop #{}: stop string is not valid UTF-8", i);
    max_stop_len_ = std::max(max_stop_len_, s.size());
  }
  if (opts_.max_new_tokens == 0) reason_ = FinishReason::kLength;
}

void StopChecker::append_text(std::string_view chars) {
  if (chars.empty()) return;
  const size_t old = text_.size();
  text_.append(chars);
  // A new match must end inside the appended part.
  const size_t from = old >= max_stop_len_ ? old - max_stop_len_ + 1 : 0;
  size_t best = std::string::npos;
  for (size_t i = 0; i < opts_.stop_strings.size(); ++i) {
    const size_t pos = text_.find(opts_.stop_strings[i], from);
    if (pos < best) { best = pos; matched_ = i; }
  }
  if (best != std::string::npos) {
    text_.resize(best);
    finish(FinishReason::kStop);
  }
}

void StopChecker::finish(FinishReason r) {
  reason_ = r;
  if (matched_) return;
  const std::string tail = utf8_.flush();   // a trailing partial char, repaired (U+FFFD)
  if (tail.empty()) return;
  reason_ = FinishReason::kNone;   // the repaired char may complete a stop string
  append_text(tail);
  if (!matched_) reason_ = r;
}

bool StopChecker::push(tok::TokenId id, std::string_view bytes) {
  DS_CHECK(!done(), "StopChecker::push after the completion finished ({})",
           to_string(reason_));
  tokens_.push_back(id);
  if (std::find(opts_.stop_ids.begin(), opts_.stop_ids.end(), id) != opts_.stop_ids.end()) {
    finish(FinishReason::kStop);
    return true;
  }
  append_text(utf8_.push(bytes));
  if (!done() && tokens_.size() >= opts_.max_new_tokens) finish(FinishReason::kLength);
  return done();
}

size_t StopChecker::held_back() const {
  if (done()) return 0;
  const size_t avail = text_.size() - emitted_;
  for (size_t len = std::min(avail, max_stop_len_ ? max_stop_len_ - 1 : 0); len > 0; --len) {
    const std::string_view tail = std::string_view(text_).substr(text_.size() - len);
    for (const std::string& s : opts_.stop_strings)
      if (s.size() > len && std::string_view(s).substr(0, len) == tail) return len;
  }
  return 0;
}

std::string StopChecker::take_stream() {
  const size_t end = text_.size() - held_back();
  if (end <= emitted_) return {};
  std::string out = text_.substr(emitted_, end - emitted_);
  emitted_ = end;
  return out;
}

TokenText::TokenText(const tok::Tokenizer& tokenizer) : tok_(&tokenizer) {
  for (const tok::AddedToken& t : tokenizer.added_tokens())
    if (t.special) special_.insert(t.id);
  for (size_t id = 0; id < tokenizer.vocab_size(); ++id)
    if (tokenizer.id_to_token(tok::TokenId(id)).empty()) missing_.push_back(uint32_t(id));
}

size_t TokenText::vocab_size() const { return tok_->vocab_size(); }

std::string TokenText::bytes(tok::TokenId id) const {
  if (is_special(id)) return {};
  return tok_->token_bytes(id);
}

}  // namespace ds::infer
