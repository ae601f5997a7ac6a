// `ds-tokenize decode`: token shards (a range of documents) back to text on stdout, read
// in windows so a huge document never sits in memory whole; invalid UTF-8 (possible only
// for arbitrary ids) becomes U+FFFD, exactly as Tokenizer::decode would produce it.
// reference: include/ds/data/shard.hpp (Dataset, document offsets); man/ds-tokenize.1.
#include <ostream>

#include "ds/core/error.hpp"
#include "ds/data/shard.hpp"
#include "ds/tokenize/tokenize.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "ds/tokenizer/utf8.hpp"
#include "jsonl_io.hpp"

namespace ds::tokenize {

namespace {

constexpr uint64_t kWindowTokens = 1u << 16;

// Length of the trailing bytes of `s` that start a UTF-8 sequence not yet complete.
size_t incomplete_tail(std::string_view s) {
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;   // continuation byte: keep looking for the lead
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

class TextWriter {
 public:
  TextWriter(const tok::Tokenizer& tok, bool skip_special, std::ostream& out)
      : tok_(tok), out_(out), skip_(tok.vocab_size(), false) {
    if (skip_special)
      for (const auto& t : tok.added_tokens())
        if (t.special && t.id < skip_.size()) skip_[t.id] = true;
  }
  void add(std::span<const uint32_t> ids) {
    for (uint32_t id : ids) {
      if (id < skip_.size() && skip_[id]) continue;
      if (id >= skip_.size()) DS_THROW(FormatError, "token id {} is outside the vocabulary ({})",
                                       id, skip_.size());
      pending_ += tok_.token_bytes(id);
    }
    const size_t keep = incomplete_tail(pending_);
    write(std::string_view(pending_).substr(0, pending_.size() - keep));
    pending_.erase(0, pending_.size() - keep);
  }
  void end_document() {
    write(pending_);
    pending_.clear();
  }

 private:
  void write(std::string_view bytes) {
    if (tok::first_invalid_utf8(bytes)) out_ << tok::utf8_repair(bytes);
    else out_.write(bytes.data(), std::streamsize(bytes.size()));
    if (!out_) DS_THROW(IoError, "<stdout>: write failed");
  }
  const tok::Tokenizer& tok_;
  std::ostream& out_;
  std::vector<bool> skip_;
  std::string pending_;
};

}  // namespace

void decode(const DecodeOptions& o, std::istream& in, std::ostream& out) {
  if (o.tokenizer.empty()) DS_THROW(UsageError, "--tokenizer is required");
  if (o.jsonl) {
    if (!o.data.empty()) DS_THROW(UsageError, "--jsonl and --data are exclusive");
    detail::decode_jsonl(o, in, out);
    return;
  }
  if (o.data.empty()) DS_THROW(UsageError, "--data or --jsonl is required");
  if (o.count < -1)
    DS_THROW(UsageError, "--count {}: expected a number of documents, or -1 for all", o.count);
  const tok::Tokenizer tok = tok::Tokenizer::from_file(o.tokenizer);
  const data::Dataset ds(o.data, tok.fingerprint());
  const uint64_t n_docs = ds.manifest().documents;
  if (o.start > n_docs)
    DS_THROW(UsageError, "--start {}: the dataset holds {} documents", o.start, n_docs);
  if (o.count >= 0 && uint64_t(o.count) > n_docs - o.start)   // as --start past the end
    DS_THROW(UsageError, "--start {} --count {}: the dataset holds {} documents (the last is "
             "{}; --count -1 reads to the end)", o.start, o.count, n_docs, n_docs - 1);
  const uint64_t end = o.count < 0 ? n_docs : o.start + uint64_t(o.count);

  TextWriter writer(tok, o.skip_special_tokens, out);
  std::vector<uint32_t> window;
  uint64_t doc_base = 0;   // global index of the current shard's first document
  for (size_t si = 0; si < ds.n_shards() && doc_base < end; ++si) {
    const auto& shard = ds.shard(si);
    const auto& offs = shard.document_offsets();
    const uint64_t n = offs.size() - 1;
    for (uint64_t d = 0; d < n; ++d) {
      const uint64_t g = doc_base + d;
      if (g < o.start) continue;
      if (g >= end) break;
      for (uint64_t t = offs[d]; t < offs[d + 1]; t += kWindowTokens) {
        window.resize(std::min(kWindowTokens, offs[d + 1] - t));
        shard.read(t, window);
        writer.add(window);
      }
      writer.end_document();
    }
    doc_base += n;
  }
  out.flush();
}

}  // namespace ds::tokenize
