// ShardReader: opens a token shard with pread, validates header, footer, block index and
// document table up front, and decodes only the blocks a read touches, verifying both
// block checksums and the token range. Thread-safe: pread, a thread-local zstd context and
// a mutex-guarded one-block cache. Layout: lib/data/shard_format.hpp, docs/formats.md.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/data/shard.hpp"
#include "shard_format.hpp"

namespace ds::data {

using namespace detail;

namespace {

// Fuzzing builds (DS_FUZZ=ON defines FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) accept any
// stored checksum so that mutated inputs reach the structural checks behind them.
inline bool checksum_ok(uint64_t computed, uint64_t stored) {
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  (void)computed; (void)stored;
  return true;
#else
  return computed == stored;
#endif
}

ZSTD_DCtx* thread_dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx{ZSTD_createDCtx(),
                                                                      ZSTD_freeDCtx};
  DS_CHECK(ctx != nullptr, "ZSTD_createDCtx failed");
  return ctx.get();
}

// Decompresses one zstd frame that must hold exactly `expect` bytes, growing the output
// only as data actually arrives (a corrupt size field cannot force a huge allocation).
bool decompress_exact(const void* src, size_t n, size_t expect, std::vector<unsigned char>& out) {
  ZSTD_DCtx* d = thread_dctx();
  ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
  const unsigned long long fcs = ZSTD_getFrameContentSize(src, n);
  if (fcs != expect) return false;
  if (ZSTD_findFrameCompressedSize(src, n) != n) return false;   // one frame, nothing after
  out.clear();
  ZSTD_inBuffer in{src, n, 0};
  constexpr size_t kStep = size_t(1) << 20;
  while (true) {
    const size_t have = out.size();
    const size_t want = std::min(expect + 1, have + kStep);   // +1 detects overlong output
    if (want == have) return false;
    out.resize(want);
    ZSTD_outBuffer ob{out.data() + have, want - have, 0};
    const size_t in_before = in.pos;
    const size_t r = ZSTD_decompressStream(d, &ob, &in);
    out.resize(have + ob.pos);
    if (ZSTD_isError(r)) return false;
    if (r != 0 && ob.pos == 0 && in.pos == in_before) return false;   // no progress
    if (r == 0) break;                                  // frame complete
    if (in.pos == in.size && ob.pos < want - have) return false;   // input ran out
  }
  return out.size() == expect && in.pos == in.size;
}

}  // namespace

struct ShardReader::Impl {
  fs::path path;
  int fd = -1;
  ShardHeaderInfo info;
  ShardHeader header{};
  std::vector<IndexEntry> index;
  std::vector<uint64_t> doc_offsets;
  mutable std::mutex cache_mu;
  mutable int64_t cached_block = -1;
  mutable std::vector<TokenId> cached;

  ~Impl() { if (fd >= 0) ::close(fd); }
  std::string name() const { return path.string(); }
  void pread_exact(void* dst, size_t n, uint64_t off) const;
  void open_and_check_header(uint64_t* file_size);
  void load_index();
  void load_documents();
  void decode_block(uint64_t b, std::vector<TokenId>& out) const;
};

void ShardReader::Impl::pread_exact(void* dst, size_t n, uint64_t off) const {
  auto p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, off_t(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      DS_THROW(IoError, "{}: read failed at offset {}: {}", name(), off, std::strerror(errno));
    }
    if (r == 0) DS_THROW(FormatError, "{}: truncated (end of file at offset {})", name(), off);
    p += r; n -= size_t(r); off += uint64_t(r);
  }
}

void ShardReader::Impl::open_and_check_header(uint64_t* file_size) {
  fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) DS_THROW(IoError, "{}: cannot open: {}", name(), std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0)
    DS_THROW(IoError, "{}: cannot stat: {}", name(), std::strerror(errno));
  if (!S_ISREG(st.st_mode)) DS_THROW(FormatError, "{}: not a regular file", name());
  const uint64_t size = uint64_t(st.st_size);
  *file_size = size;
  char magic[8] = {};
  pread_exact(magic, std::min<uint64_t>(size, 8), 0);
  if (std::memcmp(magic, kShardMagic, std::min<uint64_t>(size, 8)) != 0)
    DS_THROW(FormatError, "{}: not a token shard (bad magic)", name());
  if (size < kHeaderBytes)
    DS_THROW(FormatError, "{}: truncated ({} bytes, the header alone is {})", name(), size,
             kHeaderBytes);
  ShardHeader& h = header;
  pread_exact(&h, sizeof h, 0);
  if (h.version != kShardVersion)
    DS_THROW(FormatError, "{}: unsupported shard version {} (this build reads {})", name(),
             h.version, kShardVersion);
  if (!checksum_ok(checksum(&h, offsetof(ShardHeader, header_xxh64)), h.header_xxh64))
    DS_THROW(FormatError, "{}: header checksum mismatch (corrupt header)", name());
  if (size < h.file_size)
    DS_THROW(FormatError, "{}: truncated ({} bytes, header says {})", name(), size, h.file_size);
  if (size > h.file_size)
    DS_THROW(FormatError, "{}: {} trailing bytes after the footer", name(), size - h.file_size);
  if (h.token_width != token_width_for(h.vocab_size) || h.vocab_size == 0)
    DS_THROW(FormatError, "{}: token width {} does not fit vocab_size {}", name(), h.token_width,
             h.vocab_size);
  if (h.block_tokens == 0 || h.block_tokens > kMaxBlockTokens)
    DS_THROW(FormatError, "{}: block_tokens {} out of range", name(), h.block_tokens);
  if (h.reserved[0] != 0 || h.reserved[1] != 0)
    DS_THROW(FormatError, "{}: reserved header bytes are not zero", name());
  ShardFooter f{};
  pread_exact(&f, sizeof f, size - kFooterBytes);
  if (std::memcmp(f.magic, kShardMagic, 8) != 0 || f.index_offset != h.index_offset ||
      f.header_xxh64 != h.header_xxh64)
    DS_THROW(FormatError, "{}: footer does not match the header (truncated or corrupt)", name());
}

// Checks the section offsets against each other and the block index against the header.
void ShardReader::Impl::load_index() {
  const ShardHeader& h = header;
  const uint64_t want_blocks = h.n_tokens / h.block_tokens + (h.n_tokens % h.block_tokens != 0);
  if (h.n_blocks != want_blocks)
    DS_THROW(FormatError, "{}: {} blocks cannot hold {} tokens of {} per block", name(),
             h.n_blocks, h.n_tokens, h.block_tokens);
  const uint64_t size = h.file_size;
  const bool layout_ok = h.index_offset >= kHeaderBytes && h.index_offset <= size &&
                         h.n_blocks <= (size - h.index_offset) / kIndexEntryBytes &&
                         h.doc_table_offset == h.index_offset + h.n_blocks * kIndexEntryBytes &&
                         h.doc_table_bytes <= size - h.doc_table_offset &&
                         h.doc_table_offset + h.doc_table_bytes + kFooterBytes == size;
  if (!layout_ok) DS_THROW(FormatError, "{}: section offsets are inconsistent", name());
  index.resize(h.n_blocks);
  pread_exact(index.data(), h.n_blocks * kIndexEntryBytes, h.index_offset);
  if (!checksum_ok(checksum(index.data(), h.n_blocks * kIndexEntryBytes), h.index_xxh64))
    DS_THROW(FormatError, "{}: block index checksum mismatch (corrupt index)", name());
  uint64_t pos = kHeaderBytes;
  for (uint64_t b = 0; b < h.n_blocks; ++b) {
    const IndexEntry& e = index[b];
    const uint64_t first = b * h.block_tokens;
    const uint64_t count = std::min<uint64_t>(h.block_tokens, h.n_tokens - first);
    if (e.offset != pos || e.first_token != first || e.n_tokens != count ||
        e.compressed_bytes == 0 || e.compressed_bytes > h.index_offset - pos)
      DS_THROW(FormatError, "{}: block index entry {} is inconsistent", name(), b);
    pos += e.compressed_bytes;
  }
  if (pos != h.index_offset)
    DS_THROW(FormatError, "{}: blocks end at {} but the index starts at {}", name(), pos,
             h.index_offset);
}

void ShardReader::Impl::load_documents() {
  const ShardHeader& h = header;
  std::vector<unsigned char> comp(h.doc_table_bytes), raw;
  pread_exact(comp.data(), comp.size(), h.doc_table_offset);
  if (!checksum_ok(checksum(comp.data(), comp.size()), h.doc_table_xxh64))
    DS_THROW(FormatError, "{}: document table checksum mismatch (corrupt)", name());
  if (h.n_documents > (uint64_t(1) << 40) ||
      !decompress_exact(comp.data(), comp.size(), h.n_documents * 8, raw))
    DS_THROW(FormatError, "{}: document table does not decode to {} entries", name(),
             h.n_documents);
  doc_offsets.resize(h.n_documents + 1);
  uint64_t pos = 0;
  for (uint64_t i = 0; i < h.n_documents; ++i) {
    uint64_t len;
    std::memcpy(&len, raw.data() + 8 * i, 8);
    doc_offsets[i] = pos;
    if (len > h.n_tokens - pos)
      DS_THROW(FormatError, "{}: document {} runs past the last token", name(), i);
    pos += len;
  }
  if (pos != h.n_tokens)
    DS_THROW(FormatError, "{}: documents cover {} of {} tokens", name(), pos, h.n_tokens);
  doc_offsets[h.n_documents] = pos;
}

// Reads, checks and decodes block `b` into `out` (resized to the block's token count).
void ShardReader::Impl::decode_block(uint64_t b, std::vector<TokenId>& out) const {
  const IndexEntry& e = index[b];
  const uint32_t w = header.token_width;
  thread_local std::vector<unsigned char> comp, raw;
  comp.resize(e.compressed_bytes);
  pread_exact(comp.data(), comp.size(), e.offset);
  if (!checksum_ok(checksum(comp.data(), comp.size()), e.compressed_xxh64))
    DS_THROW(FormatError, "{}: block {} (tokens {}..{}): checksum mismatch (corrupt data)",
             name(), b, e.first_token, e.first_token + e.n_tokens);
  if (!decompress_exact(comp.data(), comp.size(), size_t(e.n_tokens) * w, raw))
    DS_THROW(FormatError, "{}: block {}: zstd frame does not decode to {} tokens", name(), b,
             e.n_tokens);
  if (!checksum_ok(checksum(raw.data(), raw.size()), e.raw_xxh64))
    DS_THROW(FormatError, "{}: block {}: checksum of decoded tokens mismatch", name(), b);
  out.resize(e.n_tokens);
  if (w == 4) {
    std::memcpy(out.data(), raw.data(), raw.size());
  } else {
    for (size_t i = 0; i < e.n_tokens; ++i) {
      uint16_t t;
      std::memcpy(&t, raw.data() + 2 * i, 2);
      out[i] = t;
    }
  }
  const TokenId vocab = header.vocab_size;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] >= vocab)
      DS_THROW(FormatError, "{}: block {}: token id {} >= vocab_size {}", name(), b, out[i],
               vocab);
  }
}

ShardReader::ShardReader(const fs::path& path, std::optional<std::string> expected_fingerprint)
    : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.path = path;
  uint64_t size = 0;
  s.open_and_check_header(&size);
  s.load_index();
  s.load_documents();
  const ShardHeader& h = s.header;
  s.info.version = h.version;
  s.info.token_width = h.token_width;
  s.info.vocab_size = h.vocab_size;
  s.info.tokenizer_fingerprint = hex64(h.fingerprint);
  s.info.n_tokens = h.n_tokens;
  s.info.n_documents = h.n_documents;
  s.info.n_blocks = h.n_blocks;
  s.info.block_tokens = h.block_tokens;
  if (expected_fingerprint) {
    uint64_t want = 0;
    if (!parse_fingerprint(*expected_fingerprint, &want) || want != h.fingerprint)
      DS_THROW(FormatError,
               "{}: made with another tokenizer (shard fingerprint {}, expected {})", s.name(),
               s.info.tokenizer_fingerprint, *expected_fingerprint);
  }
}

ShardReader::~ShardReader() = default;
ShardReader::ShardReader(ShardReader&&) noexcept = default;
const ShardHeaderInfo& ShardReader::info() const { return impl_->info; }
const fs::path& ShardReader::path() const { return impl_->path; }
const std::vector<uint64_t>& ShardReader::document_offsets() const {
  return impl_->doc_offsets;
}

void ShardReader::read(uint64_t start, std::span<TokenId> out) const {
  const auto& s = *impl_;
  const uint64_t n = s.header.n_tokens;
  if (start > n || out.size() > n - start)
    DS_THROW(FormatError, "{}: read of tokens [{}, {}) is out of range (shard holds {})",
             s.name(), start, start + out.size(), n);
  const uint64_t bt = s.header.block_tokens;
  uint64_t pos = start;
  size_t done = 0;
  std::vector<TokenId> block;
  while (done < out.size()) {
    const uint64_t b = pos / bt;
    const uint64_t in_block = pos - b * bt;
    bool hit = false;
    {
      std::lock_guard<std::mutex> lock(s.cache_mu);
      if (s.cached_block == int64_t(b)) {
        const size_t take = std::min<uint64_t>(out.size() - done, s.cached.size() - in_block);
        std::copy_n(s.cached.begin() + in_block, take, out.begin() + done);
        done += take; pos += take;
        hit = true;
      }
    }
    if (hit) continue;
    s.decode_block(b, block);
    const size_t take = std::min<uint64_t>(out.size() - done, block.size() - in_block);
    std::copy_n(block.begin() + in_block, take, out.begin() + done);
    done += take; pos += take;
    std::lock_guard<std::mutex> lock(s.cache_mu);
    s.cached.swap(block);
    s.cached_block = int64_t(b);
  }
}

std::vector<TokenId> ShardReader::read(uint64_t start, uint64_t count) const {
  const uint64_t n = impl_->header.n_tokens;
  if (start > n || count > n - start)
    DS_THROW(FormatError, "{}: read of tokens [{}, {}) is out of range (shard holds {})",
             impl_->name(), start, start + count, n);
  std::vector<TokenId> out(count);
  read(start, out);
  return out;
}

uint64_t ShardReader::verify(std::vector<std::string>* problems) const {
  uint64_t bad = 0;
  std::vector<TokenId> block;
  for (uint64_t b = 0; b < impl_->header.n_blocks; ++b) {
    try {
      impl_->decode_block(b, block);
    } catch (const FormatError& e) {
      ++bad;
      if (problems) problems->push_back(e.what());
    }
  }
  return bad;
}

}  // namespace ds::data
