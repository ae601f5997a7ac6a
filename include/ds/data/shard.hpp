// Token shards: compressed, checksummed, randomly addressable files of token ids, and the
// dataset manifest that lists them. Format: docs/formats.md ("Token shards").
// Writers publish atomically (temporary file, fsync, rename); readers verify checksums and
// reject truncated or corrupt files and files made with another tokenizer, naming the file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ds::data {

namespace fs = std::filesystem;
using TokenId = uint32_t;

struct ShardHeaderInfo {
  uint32_t version = 0;
  uint32_t token_width = 4;          // bytes per token on disk: 2 or 4
  uint32_t vocab_size = 0;
  std::string tokenizer_fingerprint; // 16 hex digits (ds::tok::Tokenizer::fingerprint)
  uint64_t n_tokens = 0;
  uint64_t n_documents = 0;
  uint64_t n_blocks = 0;
  uint32_t block_tokens = 0;         // tokens per block (the last may hold fewer)
};

// Writes one shard. Documents are appended whole or in parts (a document may be longer
// than a block); end_document() records a boundary after the last token written.
class ShardWriter {
 public:
  ShardWriter(const fs::path& path, uint32_t vocab_size, std::string tokenizer_fingerprint,
              uint32_t block_tokens = 1u << 16, int zstd_level = 3);
  ~ShardWriter();   // without finish(): the temporary file is removed, nothing published
  void append(std::span<const TokenId> tokens);
  void end_document();
  uint64_t n_tokens() const;
  uint64_t n_documents() const;
  uint64_t bytes_written() const;    // compressed bytes so far (for roll-over)
  ShardHeaderInfo finish();          // writes index + header, fsync, rename

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class ShardReader {
 public:
  // Opens and validates header, index and document table (FormatError naming the file).
  // If expected_fingerprint is set and differs: FormatError ("made with another tokenizer").
  explicit ShardReader(const fs::path& path,
                       std::optional<std::string> expected_fingerprint = std::nullopt);
  ~ShardReader();
  ShardReader(ShardReader&&) noexcept;
  const ShardHeaderInfo& info() const;
  const fs::path& path() const;
  // Reads tokens [start, start + out.size()) decompressing only the blocks involved;
  // verifies each block's checksum. Out of range: FormatError.
  void read(uint64_t start, std::span<TokenId> out) const;
  std::vector<TokenId> read(uint64_t start, uint64_t count) const;
  // Document start offsets (size n_documents + 1, last = n_tokens).
  const std::vector<uint64_t>& document_offsets() const;
  // Decompresses and checks every block; returns the number of bad blocks (0 = intact),
  // describing each in `problems`.
  uint64_t verify(std::vector<std::string>* problems = nullptr) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ShardEntry {
  std::string file;         // relative to the manifest's directory
  uint64_t tokens = 0;
  uint64_t documents = 0;
  uint64_t bytes = 0;
};

struct Manifest {
  uint32_t version = 1;
  std::string tokenizer_fingerprint;
  uint32_t vocab_size = 0;
  uint32_t token_width = 4;
  uint64_t tokens = 0;
  uint64_t documents = 0;
  std::vector<ShardEntry> shards;
  std::string extra_json = "{}";   // free-form provenance object ("source", "fim_rate", ...)

  static Manifest load(const fs::path& manifest_path);    // FormatError naming the file
  void save(const fs::path& manifest_path) const;          // atomic
};

// Writes a dataset directory: shards named shard-00000.dst, ... rolling over when a shard
// reaches max_shard_bytes (compressed), and manifest.json. Documents never span shards.
class DatasetWriter {
 public:
  DatasetWriter(const fs::path& dir, uint32_t vocab_size, std::string tokenizer_fingerprint,
                uint64_t max_shard_bytes = 256ull << 20, uint32_t block_tokens = 1u << 16);
  ~DatasetWriter();
  void add_document(std::span<const TokenId> tokens);
  Manifest finish(const std::string& extra_json = "{}");   // flushes, writes manifest

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A whole dataset opened for reading: a manifest (or a single shard file) and its shards.
class Dataset {
 public:
  // `path` is a dataset directory, a manifest.json, or one shard file.
  explicit Dataset(const fs::path& path,
                   std::optional<std::string> expected_fingerprint = std::nullopt);
  ~Dataset();
  const Manifest& manifest() const;
  size_t n_shards() const;
  const ShardReader& shard(size_t i) const;
  uint64_t n_tokens() const;
  // Reads global token range [start, start + out.size()) across shard boundaries.
  void read(uint64_t start, std::span<TokenId> out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ds::data
