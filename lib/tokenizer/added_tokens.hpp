// Added-token extraction on raw text, HF AddedVocabulary semantics: leftmost-longest
// matches (a byte trie), then per token single_word (no word character adjacent),
// lstrip (swallow whitespace before) and rstrip (swallow whitespace after).
// reference: spec §8.5; HF tokenizers tokenizer/added_vocabulary.rs (behaviour).
#pragma once
#include <cstddef>
#include <string_view>
#include <vector>

#include "ds/tokenizer/tokenizer.hpp"

namespace ds::tok::detail {

class AddedMatcher {
 public:
  struct Span {
    size_t begin, end;
    int token;   // index into the token list given to build(); -1 for plain text
  };
  // Indexes tokens[i] for every i in `which`.
  void build(const std::vector<AddedToken>& tokens, const std::vector<size_t>& which);
  bool empty() const { return nodes_.size() <= 1; }
  // Appends the spans of `text` (covering it, in order) to `out`. As in HF, spans overlap
  // only where the whitespace an rstrip token took holds the start of the next added token.
  void split(std::string_view text, std::vector<Span>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> edges;   // sorted by byte
    int token = -1;
  };
  struct Match { size_t begin, end; int token; };
  int child(int node, unsigned char b) const;
  bool find(std::string_view text, size_t from, Match& m) const;
  std::vector<Node> nodes_{1};
  bool first_byte_[256] = {};
  int single_first_ = -1;   // the only possible first byte, or -1
  const std::vector<AddedToken>* tokens_ = nullptr;
};

}  // namespace ds::tok::detail
