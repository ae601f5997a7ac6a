// ShardWriter: buffers tokens into fixed-size blocks, compresses each block as one zstd
// frame, then writes the block index, the document table and the footer, patches the
// header and publishes the file atomically. Layout: lib/data/shard_format.hpp,
// docs/formats.md ("Token shards").
#include <zstd.h>

#include <algorithm>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/data/shard.hpp"
#include "ds/io/file.hpp"
#include "shard_format.hpp"

namespace ds::data {

using namespace detail;

struct ShardWriter::Impl {
  io::AtomicFile file;
  uint32_t vocab_size;
  std::string fingerprint;
  uint64_t fingerprint_u64 = 0;
  uint32_t block_tokens;
  uint32_t width;
  int level;
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx{nullptr, ZSTD_freeCCtx};
  std::vector<TokenId> pending;          // tokens of the block being filled
  std::vector<unsigned char> raw, comp;  // scratch: little-endian bytes, compressed frame
  std::vector<IndexEntry> index;
  std::vector<uint64_t> doc_lengths;
  uint64_t n_tokens = 0;
  uint64_t doc_start = 0;                // first token of the open document
  uint64_t block_bytes = 0;              // compressed bytes written so far
  bool finished = false;

  Impl(const fs::path& path, uint32_t vocab, std::string fp, uint32_t bt, int lvl)
      : file(path), vocab_size(vocab), fingerprint(std::move(fp)), block_tokens(bt),
        width(token_width_for(vocab)), level(lvl) {}

  std::string name() const { return file.final_path().string(); }
  void flush_block();
  std::string compress_doc_table();
};

ShardWriter::ShardWriter(const fs::path& path, uint32_t vocab_size,
                         std::string tokenizer_fingerprint, uint32_t block_tokens,
                         int zstd_level) {
  if (vocab_size == 0) DS_THROW(UsageError, "{}: vocab_size must be positive", path.string());
  if (block_tokens == 0 || block_tokens > kMaxBlockTokens)
    DS_THROW(UsageError, "{}: block_tokens {} not in [1, {}]", path.string(), block_tokens,
             kMaxBlockTokens);
  uint64_t fp = 0;
  if (!parse_fingerprint(tokenizer_fingerprint, &fp))
    DS_THROW(UsageError, "{}: tokenizer fingerprint '{}' is not 16 hex digits", path.string(),
             tokenizer_fingerprint);
  impl_ = std::make_unique<Impl>(path, vocab_size, hex64(fp), block_tokens, zstd_level);
  impl_->fingerprint_u64 = fp;
  impl_->cctx.reset(ZSTD_createCCtx());
  DS_CHECK(impl_->cctx != nullptr, "{}: ZSTD_createCCtx failed", path.string());
  ZSTD_CCtx_setParameter(impl_->cctx.get(), ZSTD_c_compressionLevel, zstd_level);
  ZSTD_CCtx_setParameter(impl_->cctx.get(), ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(impl_->cctx.get(), ZSTD_c_checksumFlag, 0);   // we keep our own
  impl_->pending.reserve(block_tokens);
  // Placeholder header; the real one is patched in by finish().
  const ShardHeader zero{};
  impl_->file.write(&zero, sizeof zero);
}

ShardWriter::~ShardWriter() = default;   // AtomicFile's destructor removes the temp file

// Encodes `pending` as little-endian tokens of `width` bytes, compresses and appends it.
void ShardWriter::Impl::flush_block() {
  if (pending.empty()) return;
  const size_t n = pending.size();
  raw.resize(n * width);
  if (width == 4) {
    std::memcpy(raw.data(), pending.data(), n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t t = uint16_t(pending[i]);
      std::memcpy(raw.data() + 2 * i, &t, 2);
    }
  }
  comp.resize(ZSTD_compressBound(raw.size()));
  const size_t c = ZSTD_compress2(cctx.get(), comp.data(), comp.size(), raw.data(), raw.size());
  if (ZSTD_isError(c)) DS_THROW(IoError, "{}: zstd compression failed: {}", name(),
                                ZSTD_getErrorName(c));
  DS_CHECK(c <= UINT32_MAX, "{}: compressed block too large", name());
  IndexEntry e{};
  e.offset = file.offset();
  e.first_token = n_tokens - n;
  e.compressed_bytes = uint32_t(c);
  e.n_tokens = uint32_t(n);
  e.compressed_xxh64 = checksum(comp.data(), c);
  e.raw_xxh64 = checksum(raw.data(), raw.size());
  file.write(comp.data(), c);
  index.push_back(e);
  block_bytes += c;
  pending.clear();
}

void ShardWriter::append(std::span<const TokenId> tokens) {
  auto& s = *impl_;
  DS_CHECK(!s.finished, "{}: append after finish", s.name());
  while (!tokens.empty()) {
    const size_t room = s.block_tokens - s.pending.size();
    const size_t take = std::min(room, tokens.size());
    for (size_t i = 0; i < take; ++i) {
      if (tokens[i] >= s.vocab_size)
        DS_THROW(FormatError, "{}: token id {} >= vocab_size {}", s.name(), tokens[i],
                 s.vocab_size);
    }
    s.pending.insert(s.pending.end(), tokens.begin(), tokens.begin() + take);
    s.n_tokens += take;
    tokens = tokens.subspan(take);
    if (s.pending.size() == s.block_tokens) s.flush_block();
  }
}

void ShardWriter::end_document() {
  auto& s = *impl_;
  DS_CHECK(!s.finished, "{}: end_document after finish", s.name());
  s.doc_lengths.push_back(s.n_tokens - s.doc_start);
  s.doc_start = s.n_tokens;
}

uint64_t ShardWriter::n_tokens() const { return impl_->n_tokens; }
uint64_t ShardWriter::n_documents() const {
  return impl_->doc_lengths.size() + (impl_->n_tokens > impl_->doc_start ? 1 : 0);
}
uint64_t ShardWriter::bytes_written() const { return impl_->block_bytes; }

std::string ShardWriter::Impl::compress_doc_table() {
  const size_t raw_bytes = doc_lengths.size() * sizeof(uint64_t);
  std::string out(ZSTD_compressBound(raw_bytes), '\0');
  const size_t c = ZSTD_compress2(cctx.get(), out.data(), out.size(), doc_lengths.data(),
                                  raw_bytes);
  if (ZSTD_isError(c)) DS_THROW(IoError, "{}: zstd compression failed: {}", name(),
                                ZSTD_getErrorName(c));
  out.resize(c);
  return out;
}

ShardHeaderInfo ShardWriter::finish() {
  auto& s = *impl_;
  DS_CHECK(!s.finished, "{}: finish called twice", s.name());
  if (s.n_tokens > s.doc_start) end_document();   // an open document ends with the shard
  s.flush_block();
  s.finished = true;

  ShardHeader h{};
  std::memcpy(h.magic, kShardMagic, 8);
  h.version = kShardVersion;
  h.token_width = s.width;
  h.vocab_size = s.vocab_size;
  h.block_tokens = s.block_tokens;
  h.fingerprint = s.fingerprint_u64;
  h.n_tokens = s.n_tokens;
  h.n_documents = s.doc_lengths.size();
  h.n_blocks = s.index.size();
  h.index_offset = s.file.offset();
  const size_t index_bytes = s.index.size() * sizeof(IndexEntry);
  h.index_xxh64 = checksum(s.index.data(), index_bytes);
  s.file.write(s.index.data(), index_bytes);
  const std::string docs = s.compress_doc_table();
  h.doc_table_offset = s.file.offset();
  h.doc_table_bytes = docs.size();
  h.doc_table_xxh64 = checksum(docs);
  s.file.write(docs);
  h.file_size = s.file.offset() + kFooterBytes;
  h.header_xxh64 = checksum(&h, offsetof(ShardHeader, header_xxh64));

  ShardFooter f{};
  f.index_offset = h.index_offset;
  f.header_xxh64 = h.header_xxh64;
  std::memcpy(f.magic, kShardMagic, 8);
  s.file.write(&f, sizeof f);
  s.file.pwrite(&h, sizeof h, 0);
  s.file.commit();

  ShardHeaderInfo info;
  info.version = h.version;
  info.token_width = h.token_width;
  info.vocab_size = h.vocab_size;
  info.tokenizer_fingerprint = s.fingerprint;
  info.n_tokens = h.n_tokens;
  info.n_documents = h.n_documents;
  info.n_blocks = h.n_blocks;
  info.block_tokens = h.block_tokens;
  return info;
}

}  // namespace ds::data
