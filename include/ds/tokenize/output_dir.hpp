// Output plumbing for `ds-tokenize encode`: a dataset sink that accepts documents in
// pieces (so one huge document never has to sit in memory), and a staging directory
// OUT.tmp.HOST.PID that is renamed to OUT only on success and removed on any error.
// reference: include/ds/data/shard.hpp (ShardWriter, Manifest; same naming as DatasetWriter).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ds/data/shard.hpp"
#include "ds/io/staging.hpp"

namespace ds::tokenize {

namespace fs = std::filesystem;

// Shards shard-00000.dst, ... rolled over (between documents) once a shard's compressed
// size reaches max_shard_bytes, then manifest.json.
class ShardSink {
 public:
  ShardSink(fs::path dir, uint32_t vocab_size, std::string fingerprint,
            uint64_t max_shard_bytes);
  ~ShardSink();
  void append(std::span<const uint32_t> tokens);
  void end_document();
  data::Manifest finish(const std::string& extra_json);

 private:
  void close_current();
  fs::path dir_;
  uint32_t vocab_size_;
  std::string fingerprint_;
  uint64_t max_shard_bytes_;
  std::unique_ptr<data::ShardWriter> current_;
  std::string current_file_;
  data::Manifest manifest_;
};

// Stages OUT as OUT.tmp.HOST.PID (io::staging_suffix, locked by an io::StagingLock), after
// removing OUT's stale ones (io::remove_stale_staging). Construction refuses an existing
// non-empty OUT unless `force` (IoError), and, forced, an OUT that holds one of the files the
// run `reads` (UsageError: replacing OUT would delete it); commit() renames the staging
// directory to OUT (replacing OUT when forced); destruction without commit() removes the
// staging directory.
class StagedDir {
 public:
  StagedDir(fs::path out, bool force, const std::vector<std::string>& reads = {});
  ~StagedDir();
  StagedDir(const StagedDir&) = delete;
  StagedDir& operator=(const StagedDir&) = delete;
  const fs::path& path() const { return tmp_; }
  void commit();

 private:
  fs::path out_, tmp_;
  std::unique_ptr<io::StagingLock> lock_;
  bool force_, committed_ = false;
};

}  // namespace ds::tokenize
