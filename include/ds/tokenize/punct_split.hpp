// Random splitting of tokens that join punctuation and line breaks (spec §4.1): DeepSeek-V3's
// pre-tokenizer makes tokens such as ".\n" or "):\n\n", which leaves a model unsure what
// follows a prompt that ends without its newline (the token-boundary bias); the paper splits
// "a certain proportion" of them in the training data (rate and method unpublished). Here a
// joined token is one of the BPE vocabulary whose bytes tok::joins_punctuation_and_line_break
// accepts (an optional space, punctuation or other characters that are neither whitespace,
// letters nor numbers, then one or more CR/LF); a split replaces it by the encoding of the part
// before the first CR/LF followed by the encoding of the line breaks, so the text is
// unchanged. Each joined token is split with probability `rate`, decided by a hash of (seed,
// document index, byte offset in the document), so the result depends on neither the thread
// count nor the encode batch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ds::tok {
class Tokenizer;
}

namespace ds::tokenize {

class PunctNewlineSplitter {
 public:
  // Finds the joined tokens of the tokenizer's BPE vocabulary (added tokens never are) and
  // encodes their parts once.
  PunctNewlineSplitter(const tok::Tokenizer& tok, uint64_t seed, double rate);
  size_t joined_tokens() const { return n_joined_; }
  // Rewrites the tokens of one encoded piece that starts `offset` bytes into document
  // `doc_index`: every joined token drawn for splitting becomes its two parts. Adds the joined
  // tokens seen and those split to the counters.
  void apply(uint64_t doc_index, uint64_t offset, std::vector<uint32_t>& tokens,
             uint64_t& seen, uint64_t& split) const;
  // The split-point of id (bytes before its first CR/LF), 0 when id is not a joined token.
  uint32_t split_point(uint32_t id) const { return id < cut_.size() ? cut_[id] : 0; }

 private:
  uint64_t seed_;
  double rate_;
  std::vector<uint32_t> cut_;    // (vocab) split point per id, 0 = not joined
  std::vector<uint32_t> len_;    // (vocab) byte length per id
  std::vector<uint32_t> first_;  // (vocab + 1) a joined id's replacement: parts_[first_[id],
  std::vector<uint32_t> parts_;  //   first_[id + 1]), the encodings of its two parts
  size_t n_joined_ = 0;
};

}  // namespace ds::tokenize
