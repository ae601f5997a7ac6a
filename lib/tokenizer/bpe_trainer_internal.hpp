// Internals of the byte-level BPE trainer (bpe_trainer.cpp), exposed for the unit tests:
// safe chunking of large documents for parallel counting, and the merge engine that
// runs on a table of (word bytes, frequency).
// reference: Sennrich et al. 2016 (BPE); the incremental pair-count method of fast
// trainers (pair -> words index plus a max-heap with lazy invalidation).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ds::tok::detail {

// Cuts `text` into pieces of about `target` bytes at positions where the DeepSeek-V3
// pre-tokenizer cannot produce a piece spanning the cut: right after a '\n' that is
// followed by a printable, non-space ASCII byte. Every Split alternative that contains
// '\n' ends at the last newline of a whitespace run, and none continues into a
// non-space character, so pre-tokenizing the pieces gives the same pieces as the whole.
// A document without such a position stays one piece. The pieces cover `text` in order.
std::vector<std::string_view> split_safe_chunks(std::string_view text, size_t target);

// One merge as found by the engine: the two internal symbol ids merged and its count.
struct MergeStep {
  uint32_t left = 0, right = 0;
  uint64_t count = 0;
};

// Runs BPE merges on `words` (distinct byte strings with their frequencies; any order).
// Symbols 0..255 are the bytes, merge r creates symbol 256 + r. The pair chosen each
// step has the highest count; ties go to the pair whose (left, right) token strings --
// in the GPT-2 byte-level alphabet, compared bytewise, left first -- is smallest. A
// merge whose result string already exists is dropped (the pair is discarded), so every
// merge adds a distinct token. Stops after `max_merges`, or when the best count is
// below max(min_frequency, 1). `on_progress(done)` is called every 1000 merges if set.
std::vector<MergeStep> run_merges(const std::vector<std::pair<std::string, uint64_t>>& words,
                                  size_t max_merges, uint64_t min_frequency,
                                  void (*on_progress)(size_t done, size_t total) = nullptr);

// The GPT-2 alphabet string of every symbol after `merges` (256 bytes, then merges).
std::vector<std::string> symbol_strings(const std::vector<MergeStep>& merges);

// JSON string literal (with quotes) for `s`: escapes '"', '\\' and control characters.
void append_json_string(std::string& out, std::string_view s);

}  // namespace ds::tok::detail
