// Document reading for ds-tokenize: text files (one document per file, per line, or per
// blank-line-separated block) and JSON Lines, with UTF-8 validation and JSONL error
// reporting by FILE:LINE. Documents larger than a chunk are returned in pieces cut at
// points that cannot change the tokenization (see last_cut_point), so memory is bounded.
// reference: spec/deepseek-v3.md §8.3 (the pre-tokenizer regexes the cut rule relies on).
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ds/tokenize/tokenize.hpp"

namespace ds::tok { class Tokenizer; }

namespace ds::tokenize {

// One piece of a document. A document is one or more pieces with the same doc_index,
// the first marked `first`, the last marked `last` (a whole document has both).
struct Segment {
  std::string text;
  uint64_t doc_index = 0;   // ordinal among accepted (non-empty) documents
  uint64_t doc_offset = 0;  // bytes of the document before this piece (0 for its first)
  bool first = true;
  bool last = true;
};

struct ReaderStats {
  uint64_t bytes_read = 0;          // input bytes consumed
  uint64_t documents = 0;           // documents returned
  uint64_t chunked_documents = 0;   // documents returned in more than one piece
  uint64_t bad_lines_skipped = 0;
  uint64_t empty_skipped = 0;
};

// Position just after the last '\n' in `text` that is followed by an ASCII letter, or 0 if
// there is none. Cutting there never changes DeepSeek-V3 tokenization (proof in the .cpp).
size_t last_cut_point(std::string_view text);
// First such position >= from, or text.size() if there is none.
size_t next_cut_point(std::string_view text, size_t from);
// True when cutting at last_cut_point() is provably neutral for `tok`: its pre-tokenizer
// is DeepSeek-V3's and no added token contains '\n' (nor lstrip-absorbs it).
bool cutting_is_neutral(const tok::Tokenizer& tok);

// Reads documents from InputOptions::inputs in order. Errors (all ds::Error, one line):
// IoError "FILE: cannot open: ..."; FormatError "FILE: invalid UTF-8 at byte N (line L)";
// FormatError "FILE:LINE: ..." for a malformed JSONL line (unless skip_bad_lines).
class DocumentReader {
 public:
  // allow_cuts = false: long documents are returned whole (memory grows with them).
  DocumentReader(const InputOptions& in, bool allow_cuts);
  ~DocumentReader();
  // Next piece; false at the end of the last input.
  bool next(Segment& seg);
  const ReaderStats& stats() const;
  // Input names as given ("-" for standard input).
  std::vector<std::string> sources() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Checks that every input exists and is readable (IoError naming the first that is not),
// and that format/doc_split are known (UsageError). Called before any output is created.
void check_inputs(const InputOptions& in);

}  // namespace ds::tokenize
