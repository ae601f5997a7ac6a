// ds-tokenize's library entry points: train a BPE tokenizer, encode documents into token
// shards (with optional FIM, spec §4.2), encode/decode JSON Lines on stdio, decode shards
// back to text and inspect a dataset. Every default is written here, once; the tool's
// main.cpp only binds flags to these structs. Contract: man/ds-tokenize.1.
// reference: spec/deepseek-v3.md §4.2 (documents end with EOS; FIM in PSM layout), §8.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace ds::tokenize {

// Allowed values of the enumerated flags (CLI11 IsMember uses these lists too).
inline const std::vector<std::string> kFormats = {"text", "jsonl"};
inline const std::vector<std::string> kDocSplits = {"file", "line", "blank-line"};

// Where documents come from and how they are delimited (shared by train and encode).
struct InputOptions {
  std::vector<std::string> inputs;   // files; empty or "-" = standard input
  std::string format = "text";       // text | jsonl
  std::string field = "text";        // JSONL: the string field holding the document
  std::string doc_split = "file";    // text: file | line | blank-line
  bool skip_bad_lines = false;       // JSONL: skip (and count) malformed lines
  // A document longer than this is cut into pieces at tokenization-neutral points (after
  // a '\n' followed by an ASCII letter) so that memory stays bounded; see documents.hpp.
  uint64_t chunk_bytes = 8ull << 20;
};

struct TrainOptions {
  InputOptions input;
  std::string out;                          // directory for tokenizer.json + config
  uint64_t vocab_size = 32000;
  uint64_t min_frequency = 2;
  std::vector<std::string> special_tokens;  // empty -> DeepSeek-V3's set
  int threads = 0;                          // <= 0 -> all cores
  bool force = false;                       // replace an existing tokenizer in `out`
};

struct TrainSummary {
  uint64_t vocab_size = 0, merges = 0, documents = 0, bytes = 0;
  double seconds = 0;
  std::string fingerprint, out;
};

struct EncodeOptions {
  InputOptions input;
  std::string tokenizer;             // tokenizer.json
  std::string out;                   // dataset directory (created atomically)
  double fim_rate = 0.0;             // probability that a document is rewritten in PSM form
  uint64_t seed = 0;                 // FIM decisions are a pure function of (seed, doc index)
  // probability that a token joining punctuation and line breaks is split in two (spec §4.1;
  // punct_split.hpp): a pure function of (seed, doc index, byte offset)
  double punct_newline_split_rate = 0.0;
  bool add_bos = false;              // BOS before every document
  bool match_added_tokens = true;    // recognise added-token strings inside the text
  int threads = 0;                   // <= 0 -> all cores; output identical for any value
  uint64_t max_shard_bytes = 256ull << 20;   // roll over to a new shard past this size
  bool force = false;                // replace a non-empty --out
  uint64_t batch_bytes = 32ull << 20;        // text read and encoded per parallel batch
  bool progress = true;              // progress log lines (only when stderr is a TTY)
};

struct EncodeSummary {
  std::string out;
  uint64_t documents = 0, tokens = 0, shards = 0, bytes_in = 0, compressed_bytes = 0;
  uint64_t fim_documents = 0;        // documents rewritten in PSM form
  uint64_t fim_skipped_large = 0;    // FIM drawn but the document spanned several chunks
  uint64_t chunked_documents = 0;    // documents encoded in more than one piece
  uint64_t punct_newline_tokens = 0; // joined punctuation + line-break tokens encoded ...
  uint64_t punct_newline_split = 0;  // ... and of those, the ones split in two
  uint64_t bad_lines_skipped = 0;    // JSONL lines skipped with skip_bad_lines
  uint64_t empty_skipped = 0;        // empty documents (nothing written for them)
  double seconds = 0;                // wall time, tokenizer loading included
  double tokenizer_seconds = 0;      // loading tokenizer.json
};

// `encode --jsonl`: {"<field>": "..."} per line on `in` -> {"ids":[...]} per line on `out`.
struct EncodeJsonlOptions {
  std::string tokenizer;
  std::string field = "text";
  bool add_special_tokens = false;   // prepend BOS (as HF add_special_tokens for DeepSeek-V3)
  bool match_added_tokens = true;
};

struct DecodeOptions {
  std::string tokenizer;
  std::string data;                  // dataset dir, manifest.json or one shard
  uint64_t start = 0;                // first document
  int64_t count = -1;                // documents to decode; -1 = to the end
  bool jsonl = false;                // {"ids":[...]} lines on stdin -> {"text":...} lines
  bool skip_special_tokens = false;
};

struct InspectOptions {
  std::string data;
  std::string tokenizer;             // optional: report whether fingerprints match
  bool verify = false;               // decompress and check every block
};

TrainSummary train(const TrainOptions& opts);
EncodeSummary encode(const EncodeOptions& opts);
void encode_jsonl(const EncodeJsonlOptions& opts, std::istream& in, std::ostream& out);
// Data mode writes the decoded text to `out`; JSONL mode reads `in`.
void decode(const DecodeOptions& opts, std::istream& in, std::ostream& out);
// Writes the JSON report to `out`; throws FormatError afterwards when --verify found bad
// blocks or --tokenizer does not match.
void inspect(const InspectOptions& opts, std::ostream& out);

// One-line JSON renderings of the summaries (printed on stdout by the tool).
std::string to_json(const TrainSummary& s);
std::string to_json(const EncodeSummary& s);

}  // namespace ds::tokenize
