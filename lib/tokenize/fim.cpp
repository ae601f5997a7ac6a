// Fill-in-the-middle (PSM) rewriting of documents and the per-document RNG behind it.
// The RNG is splitmix64 applied to a counter keyed by (seed, document index), so every
// decision is a pure function of those two numbers.
// reference: spec/deepseek-v3.md §4.2; Steele et al. 2014 (splitmix64 finaliser).
#include "ds/tokenize/fim.hpp"

#include "ds/core/error.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::tokenize {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Number of code points (bytes that are not UTF-8 continuation bytes).
size_t count_chars(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Byte offset of character boundary `k` (0..n) in valid UTF-8 `s`.
size_t char_offset(std::string_view s, size_t k) {
  size_t seen = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (seen == k) return i;
      ++seen;
    }
  }
  return s.size();
}

}  // namespace

DocRng::DocRng(uint64_t seed, uint64_t doc_index)
    : key_(splitmix64(seed ^ splitmix64(doc_index ^ 0x46494D5F52414E44ull))) {}   // "FIM_RAND"

uint64_t DocRng::next() { return splitmix64(key_ + 0x9E3779B97F4A7C15ull * ++counter_); }

double DocRng::uniform() { return double(next() >> 11) * 0x1.0p-53; }

uint64_t DocRng::below(uint64_t n) {
  return uint64_t((static_cast<unsigned __int128>(next()) * n) >> 64);
}

bool fim_selected(uint64_t seed, uint64_t doc_index, double rate) {
  if (rate <= 0.0) return false;
  DocRng rng(seed, doc_index);
  return rng.uniform() < rate;
}

FimSplit fim_split(uint64_t seed, uint64_t doc_index, std::string_view text) {
  DocRng rng(seed, doc_index);
  rng.next();   // draw 1 decided whether to rewrite at all
  const size_t n = count_chars(text);
  size_t a = rng.below(n + 1), b = rng.below(n + 1);
  if (a > b) std::swap(a, b);
  FimSplit s;
  s.lo = char_offset(text, a);
  s.hi = char_offset(text, b);
  return s;
}

FimIds FimIds::from(const tok::Tokenizer& tok) {
  auto need = [&](std::string_view token) {
    const auto id = tok.token_to_id(token);
    if (!id)
      DS_THROW(FormatError, "{}: no token '{}' (needed for --fim-rate > 0)",
               tok.source_name(), token);
    return *id;
  };
  FimIds ids;
  ids.begin = need(tok::special::kFimBegin);
  ids.hole = need(tok::special::kFimHole);
  ids.end = need(tok::special::kFimEnd);
  const auto eos = tok.eos_id();
  if (!eos)
    DS_THROW(FormatError, "{}: no end-of-sentence token '{}'", tok.source_name(),
             tok::special::kEos);
  ids.eos = *eos;
  return ids;
}

void encode_psm(const tok::Tokenizer& tok, const FimIds& ids, std::string_view text,
                const FimSplit& split, bool match_added_tokens, std::vector<uint32_t>& out) {
  const std::string_view prefix = text.substr(0, split.lo);
  const std::string_view middle = text.substr(split.lo, split.hi - split.lo);
  const std::string_view suffix = text.substr(split.hi);
  out.push_back(ids.begin);
  tok.encode(prefix, out, match_added_tokens);
  out.push_back(ids.hole);
  tok.encode(suffix, out, match_added_tokens);
  out.push_back(ids.end);
  tok.encode(middle, out, match_added_tokens);
  out.push_back(ids.eos);
}

}  // namespace ds::tokenize
