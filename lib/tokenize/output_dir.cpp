// ShardSink (documents appended in pieces, shards rolled over by compressed size) and
// StagedDir (OUT.tmp.HOST.PID renamed to OUT on success, removed on failure) for ds-tokenize.
// reference: lib/data/dataset.cpp (DatasetWriter, whose naming and roll-over rule we keep).
#include "ds/tokenize/output_dir.hpp"

#include <fmt/format.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <system_error>

#include "ds/core/error.hpp"
#include "ds/core/log.hpp"
#include "ds/data/shard.hpp"
#include "ds/io/file.hpp"
#include "ds/io/staging.hpp"

namespace ds::tokenize {

ShardSink::ShardSink(fs::path dir, uint32_t vocab_size, std::string fingerprint,
                     uint64_t max_shard_bytes)
    : dir_(std::move(dir)), vocab_size_(vocab_size), fingerprint_(std::move(fingerprint)),
      max_shard_bytes_(max_shard_bytes) {
  manifest_.tokenizer_fingerprint = fingerprint_;
  manifest_.vocab_size = vocab_size_;
}

ShardSink::~ShardSink() = default;   // an unfinished shard's temporary file is removed

void ShardSink::append(std::span<const uint32_t> tokens) {
  if (!current_) {
    current_file_ = fmt::format("shard-{:05d}.dst", manifest_.shards.size());
    current_ = std::make_unique<data::ShardWriter>(dir_ / current_file_, vocab_size_,
                                                   fingerprint_);
  }
  if (!tokens.empty()) current_->append(tokens);
}

void ShardSink::end_document() {
  append({});
  current_->end_document();
  if (current_->bytes_written() >= max_shard_bytes_) close_current();
}

void ShardSink::close_current() {
  if (!current_) return;
  const data::ShardHeaderInfo info = current_->finish();
  current_.reset();
  data::ShardEntry e;
  e.file = current_file_;
  e.tokens = info.n_tokens;
  e.documents = info.n_documents;
  std::error_code ec;
  e.bytes = fs::file_size(dir_ / current_file_, ec);
  if (ec) DS_THROW(IoError, "{}: cannot stat: {}", (dir_ / current_file_).string(), ec.message());
  manifest_.token_width = info.token_width;
  manifest_.tokens += e.tokens;
  manifest_.documents += e.documents;
  manifest_.shards.push_back(std::move(e));
}

data::Manifest ShardSink::finish(const std::string& extra_json) {
  close_current();
  if (manifest_.shards.empty()) manifest_.token_width = vocab_size_ <= 65536 ? 2 : 4;
  manifest_.extra_json = extra_json;
  manifest_.save(dir_ / "manifest.json");
  return manifest_;
}

// ---------------------------------------------------------------------------------------

namespace {

bool non_empty_dir_or_file(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(p, ec)) return false;
  if (!fs::is_directory(p, ec)) return true;
  return fs::directory_iterator(p, ec) != fs::directory_iterator();
}

}  // namespace

StagedDir::StagedDir(fs::path out, bool force, const std::vector<std::string>& reads)
    : out_(std::move(out)), force_(force) {
  if (out_.empty()) DS_THROW(UsageError, "--out is required");
  while (out_.has_filename() == false && out_.has_parent_path() && out_ != out_.root_path())
    out_ = out_.parent_path();   // "dir/" -> "dir"
  std::error_code ec;
  if (fs::exists(out_, ec) && !fs::is_directory(out_, ec))
    DS_THROW(IoError, "{}: exists and is not a directory", out_.string());
  if (!force_ && non_empty_dir_or_file(out_))
    DS_THROW(IoError, "{}: output directory exists and is not empty (use --force to replace it)",
             out_.string());
  // (a symbolic link OUT is replaced by the rename, its target left alone)
  if (force_ && fs::is_directory(out_, ec) && !fs::is_symlink(out_, ec)) {
    for (const std::string& r : reads)
      if (!r.empty() && r != "-" && io::is_inside(r, out_))
        DS_THROW(UsageError, "--out {} holds {}, which this run reads (--force would delete it)",
                 out_.string(), r);
  }
  if (out_.has_parent_path()) fs::create_directories(out_.parent_path(), ec);
  const std::string name = out_.filename().string();
  const auto same = [&](std::string_view n) { return n == name; };
  for (const fs::path& p : io::remove_stale_staging(out_.parent_path(), same))
    spdlog::info("removed {}, left by a process that no longer runs", p.string());
  tmp_ = out_;
  tmp_ += io::staging_suffix();
  fs::remove_all(tmp_, ec);
  fs::create_directory(tmp_, ec);
  if (ec) DS_THROW(IoError, "{}: cannot create directory: {}", tmp_.string(), ec.message());
  try {
    lock_ = std::make_unique<io::StagingLock>(tmp_);
  } catch (...) {
    fs::remove_all(tmp_, ec);
    throw;
  }
}

StagedDir::~StagedDir() {
  if (committed_) return;
  if (lock_) lock_->release();
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void StagedDir::commit() {
  lock_->release();   // not part of the output
  std::error_code ec;
  fs::path old;
  if (non_empty_dir_or_file(out_)) {
    if (!force_)
      DS_THROW(IoError, "{}: output directory appeared while encoding (use --force)",
               out_.string());
    // One atomic swap: the new output in place, the old one under the staging name, then
    // deleted (a run killed while deleting leaves it there for a later run to remove). Moving
    // the old one aside first left no output at all when killed between the two renames.
    if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, out_.c_str(), RENAME_EXCHANGE) == 0) {
      committed_ = true;
      io::fsync_dir(out_.has_parent_path() ? out_.parent_path() : fs::path("."));
      fs::remove_all(tmp_, ec);
      return;
    }
    old = out_;   // (a file system without RENAME_EXCHANGE)
    old += fmt::format(".old.{}", ::getpid());
    fs::rename(out_, old, ec);
    if (ec) DS_THROW(IoError, "{}: cannot move aside: {}", out_.string(), ec.message());
  } else if (fs::exists(out_, ec)) {
    fs::remove(out_, ec);   // an empty directory
  }
  fs::rename(tmp_, out_, ec);
  if (ec) DS_THROW(IoError, "{}: cannot rename to {}: {}", tmp_.string(), out_.string(),
                   ec.message());
  committed_ = true;
  io::fsync_dir(out_.has_parent_path() ? out_.parent_path() : fs::path("."));
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace ds::tokenize
