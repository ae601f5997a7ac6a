// Private on-disk layout of a token shard (docs/formats.md, "Token shards") shared by the
// writer and the reader in lib/data. Little-endian throughout; the host must be too.
// Layout: [header 128 B][block 0]...[block n-1][block index n*40 B][document table][footer 24 B]
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "ds/core/hash.hpp"

namespace ds::data::detail {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian and are read by memcpy");

inline constexpr char kShardMagic[8] = {'D', 'S', 'T', 'O', 'K', 'S', 'H', '\0'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr uint32_t kMaxBlockTokens = 1u << 22;   // bounds a block's buffer (16 MiB)
inline constexpr uint64_t kHeaderBytes = 128;
inline constexpr uint64_t kIndexEntryBytes = 40;
inline constexpr uint64_t kFooterBytes = 24;

// Header, 128 bytes at offset 0. Written as zeros first, patched by pwrite at finish().
//   off size field
//     0    8 magic "DSTOKSH\0"
//     8    4 version (1)
//    12    4 token_width: bytes per token in a block, 2 (vocab_size <= 65536) or 4
//    16    4 vocab_size
//    20    4 block_tokens: tokens per block; every block but the last holds exactly this many
//    24    8 tokenizer fingerprint (the u64 whose 16 hex digits the tokenizer prints)
//    32    8 n_tokens
//    40    8 n_documents
//    48    8 n_blocks = ceil(n_tokens / block_tokens)
//    56    8 index_offset (= 128 + sum of compressed block sizes)
//    64    8 xxh64 of the block index bytes
//    72    8 doc_table_offset (= index_offset + 40 * n_blocks)
//    80    8 doc_table_bytes (compressed size)
//    88    8 xxh64 of the compressed document table
//    96    8 file_size (= doc_table_offset + doc_table_bytes + 24)
//   104   16 reserved, zero
//   120    8 xxh64 of header bytes [0, 120)
struct ShardHeader {
  char magic[8];
  uint32_t version;
  uint32_t token_width;
  uint32_t vocab_size;
  uint32_t block_tokens;
  uint64_t fingerprint;
  uint64_t n_tokens;
  uint64_t n_documents;
  uint64_t n_blocks;
  uint64_t index_offset;
  uint64_t index_xxh64;
  uint64_t doc_table_offset;
  uint64_t doc_table_bytes;
  uint64_t doc_table_xxh64;
  uint64_t file_size;
  uint64_t reserved[2];
  uint64_t header_xxh64;
};
static_assert(sizeof(ShardHeader) == kHeaderBytes, "shard header must be 128 bytes");
static_assert(offsetof(ShardHeader, fingerprint) == 24 && offsetof(ShardHeader, file_size) == 96 &&
              offsetof(ShardHeader, header_xxh64) == 120, "shard header layout");

// Block index entry, 40 bytes, one per block, in block order.
//   off size field
//     0    8 offset of the block's zstd frame in the file
//     8    8 first token (global index within the shard) = block * block_tokens
//    16    4 compressed size in bytes
//    20    4 token count
//    24    8 xxh64 of the compressed bytes (checked before zstd sees them)
//    32    8 xxh64 of the uncompressed little-endian token bytes (end-to-end check)
struct IndexEntry {
  uint64_t offset;
  uint64_t first_token;
  uint32_t compressed_bytes;
  uint32_t n_tokens;
  uint64_t compressed_xxh64;
  uint64_t raw_xxh64;
};
static_assert(sizeof(IndexEntry) == kIndexEntryBytes, "index entry must be 40 bytes");

// Footer, 24 bytes at file_size - 24: lets a reader see a cut-off file from its tail.
//   off size field
//     0    8 index_offset (same as the header)
//     8    8 header xxh64 (same as the header)
//    16    8 magic "DSTOKSH\0"
struct ShardFooter {
  uint64_t index_offset;
  uint64_t header_xxh64;
  char magic[8];
};
static_assert(sizeof(ShardFooter) == kFooterBytes, "footer must be 24 bytes");

// Document table: a single zstd frame holding n_documents u64 document lengths (the start
// offsets delta-coded; lengths sum to n_tokens; empty documents are allowed).

// xxh64 that never hands a null pointer to ds::xxh64 (an empty vector's data() may be
// null, and memcpy from null is undefined even for zero bytes).
inline uint64_t checksum(const void* p, size_t n) {
  static const unsigned char kEmpty = 0;
  return ds::xxh64(n ? p : &kEmpty, n);
}
inline uint64_t checksum(std::string_view s) { return checksum(s.data(), s.size()); }

inline uint32_t token_width_for(uint32_t vocab_size) { return vocab_size <= 65536u ? 2u : 4u; }

// Parses exactly 16 hex digits (either case); false otherwise.
inline bool parse_fingerprint(std::string_view s, uint64_t* out) {
  if (s.size() != 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return false;
    v = (v << 4) | uint64_t(d);
  }
  *out = v;
  return true;
}

}  // namespace ds::data::detail
