// Random splitting of punctuation + line-break tokens (see include/ds/tokenize/punct_split.hpp).
#include "ds/tokenize/punct_split.hpp"

#include <string>
#include <unordered_set>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::tokenize {

namespace {

bool is_line_break(char c) { return c == '\n' || c == '\r'; }

// Bytes before the first CR/LF when `b` is a joined token (see the header), else 0.
uint32_t joined_cut(const std::string& b) {
  if (!tok::joins_punctuation_and_line_break(b)) return 0;
  size_t k = 0;
  while (!is_line_break(b[k])) ++k;
  return uint32_t(k);
}

}  // namespace

PunctNewlineSplitter::PunctNewlineSplitter(const tok::Tokenizer& tok, uint64_t seed, double rate)
    : seed_(seed), rate_(rate) {
  DS_CHECK_AS(UsageError, rate >= 0.0 && rate <= 1.0,
              "--punct-newline-split-rate {}: expected a value in [0, 1]", rate);
  std::unordered_set<uint32_t> added;
  for (const tok::AddedToken& a : tok.added_tokens()) added.insert(a.id);
  const size_t V = tok.vocab_size();
  cut_.assign(V, 0);
  len_.assign(V, 0);
  first_.assign(V + 1, 0);
  for (uint32_t id = 0; id < V; ++id) {
    first_[id] = uint32_t(parts_.size());
    if (tok.id_to_token(id).empty()) continue;   // a gap in the ids
    const std::string b = tok.token_bytes(id);
    len_[id] = uint32_t(b.size());
    if (added.count(id)) continue;
    cut_[id] = joined_cut(b);
    if (cut_[id] == 0) continue;
    n_joined_++;
    tok.encode(std::string_view(b).substr(0, cut_[id]), parts_, false);
    tok.encode(std::string_view(b).substr(cut_[id]), parts_, false);
  }
  first_[V] = uint32_t(parts_.size());
}

void PunctNewlineSplitter::apply(uint64_t doc_index, uint64_t offset,
                                 std::vector<uint32_t>& tokens, uint64_t& seen,
                                 uint64_t& split) const {
  if (n_joined_ == 0 || rate_ <= 0.0) return;
  // the draw of a token: a uniform number in [0, 1) from the hash of its position
  const auto drawn = [&](uint64_t pos) {
    const uint64_t key[3] = {seed_, doc_index, pos};
    const uint64_t h = xxh64(key, sizeof(key), 0x70756e63742d6e6cull);   // "punct-nl"
    return double(h >> 11) * 0x1.0p-53 < rate_;
  };
  std::vector<uint32_t> out;
  bool changed = false;
  uint64_t pos = offset;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t id = tokens[i];
    const uint32_t cut = split_point(id);
    if (cut > 0) {
      seen++;
      if (drawn(pos)) {
        if (!changed) out.assign(tokens.begin(), tokens.begin() + std::ptrdiff_t(i));
        changed = true;
        split++;
        out.insert(out.end(), parts_.begin() + first_[id], parts_.begin() + first_[id + 1]);
        pos += len_[id];
        continue;
      }
    }
    if (changed) out.push_back(id);
    pos += id < len_.size() ? len_[id] : 0;
  }
  if (changed) tokens.swap(out);
}

}  // namespace ds::tokenize
