// Fill-in-the-middle rewriting of pre-training documents (spec §4.2): with probability
// `rate` a document becomes <｜fim▁begin｜> prefix <｜fim▁hole｜> suffix <｜fim▁end｜> middle
// <｜end▁of▁sentence｜> (PSM). Decisions and split points come from a counter-based RNG
// keyed by (seed, document index), so they do not depend on threads or batching.
// reference: DeepSeek-V3 paper §4.1 (PSM, rate 0.1); split rule: two uniform character
// positions, as in DeepSeek-Coder / StarCoder data preparation (spec §9 item 14).
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

namespace ds::tok { class Tokenizer; }

namespace ds::tokenize {

// Deterministic stream of 64-bit values for one document (splitmix64 over a keyed counter).
class DocRng {
 public:
  DocRng(uint64_t seed, uint64_t doc_index);
  uint64_t next();
  double uniform();                 // [0, 1), 53 bits
  uint64_t below(uint64_t n);       // [0, n), n > 0 (multiply-high, bias < 2^-64 * n)

 private:
  uint64_t key_, counter_ = 0;
};

struct FimSplit {
  size_t lo = 0, hi = 0;   // byte offsets at character boundaries: prefix [0,lo), middle
                           // [lo,hi), suffix [hi,end)
};

// Whether document `doc_index` is rewritten (first draw of its RNG < rate).
bool fim_selected(uint64_t seed, uint64_t doc_index, double rate);
// Two uniform positions among the n+1 character boundaries of `text` (n code points),
// sorted. Uses draws 2 and 3 of the document's RNG. `text` must be valid UTF-8.
FimSplit fim_split(uint64_t seed, uint64_t doc_index, std::string_view text);

// The ids of the three FIM tokens and EOS; FormatError naming the tokenizer if one is absent.
struct FimIds {
  uint32_t begin = 0, hole = 0, end = 0, eos = 0;
  static FimIds from(const tok::Tokenizer& tok);
};

// Appends the PSM form of `text` (each part encoded separately) including the final EOS.
void encode_psm(const tok::Tokenizer& tok, const FimIds& ids, std::string_view text,
                const FimSplit& split, bool match_added_tokens, std::vector<uint32_t>& out);

}  // namespace ds::tokenize
