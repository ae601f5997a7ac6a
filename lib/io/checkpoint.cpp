// Checkpoint directory publishing (temp dir + fsync + rename), listing, pruning and tokenizer
// file copies. See include/ds/io/checkpoint.hpp for the completeness rule.
// reference: rename(2), renameat2(2) RENAME_EXCHANGE; docs/model.md.
#include "ds/io/checkpoint.hpp"

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/staging.hpp"

namespace ds::io {

namespace {

void fsync_file(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) DS_THROW(IoError, "{}: cannot open for fsync: {}", p.string(), std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) DS_THROW(IoError, "{}: fsync failed: {}", p.string(), std::strerror(err));
}

// fsyncs every regular file and every directory below (and including) root.
void fsync_tree(const fs::path& root) {
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_regular_file()) fsync_file(e.path());
    else if (e.is_directory()) fsync_dir(e.path());
  }
  fsync_dir(root);
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

}  // namespace

CheckpointWriter::CheckpointWriter(fs::path final_dir) : final_(std::move(final_dir)) {
  if (final_.filename().empty()) final_ = final_.parent_path();   // trailing slash
  DS_CHECK_AS(UsageError, !final_.filename().empty(), "checkpoint path '{}' has no name",
              final_.string());
  fs::path parent = final_.parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) DS_THROW(IoError, "{}: cannot create directory: {}", parent.string(), ec.message());
  // Hidden staging directories of writers that are gone (any checkpoint name).
  const auto hidden = [](std::string_view n) { return n.size() > 1 && n[0] == '.'; };
  for (const fs::path& p : remove_stale_staging(parent, hidden))
    spdlog::info("removed {}, left by a process that no longer runs", p.string());
  temp_ = parent / fmt::format(".{}{}", final_.filename().string(), staging_suffix());
  remove_quietly(temp_);   // a leftover from an earlier writer in this process
  fs::create_directory(temp_, ec);
  if (ec) DS_THROW(IoError, "{}: cannot create directory: {}", temp_.string(), ec.message());
  try {
    lock_ = std::make_unique<StagingLock>(temp_);
  } catch (...) {
    remove_quietly(temp_);
    throw;
  }
}

CheckpointWriter::~CheckpointWriter() {
  if (committed_) return;
  if (lock_) lock_->release();   // first: an open file can make an NFS rmdir fail
  remove_quietly(temp_);
}

void CheckpointWriter::commit() {
  DS_CHECK(!committed_, "{}: checkpoint committed twice", final_.string());
  // The lock is held over the long fsync: a writer killed there leaves a staging directory
  // whose lock is free, which a later writer removes (one without its lock file is kept).
  fsync_tree(temp_);
  lock_->release();   // not part of the checkpoint
  fsync_dir(temp_);
  fs::path parent = temp_.parent_path();
  std::error_code ec;
  if (!fs::exists(final_, ec)) {
    if (::rename(temp_.c_str(), final_.c_str()) != 0)
      DS_THROW(IoError, "{}: rename from {} failed: {}", final_.string(), temp_.string(),
               std::strerror(errno));
  } else if (::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, final_.c_str(),
                         RENAME_EXCHANGE) == 0) {
    // temp_ now holds the old checkpoint.
    fsync_dir(parent);
    remove_quietly(temp_);
  } else {
    fs::path old = parent / fmt::format(".{}.old.{}", final_.filename().string(), ::getpid());
    remove_quietly(old);
    if (::rename(final_.c_str(), old.c_str()) != 0)
      DS_THROW(IoError, "{}: cannot move the old checkpoint away: {}", final_.string(),
               std::strerror(errno));
    if (::rename(temp_.c_str(), final_.c_str()) != 0) {
      int err = errno;
      (void)::rename(old.c_str(), final_.c_str());   // put the old one back
      DS_THROW(IoError, "{}: rename from {} failed: {}", final_.string(), temp_.string(),
               std::strerror(err));
    }
    fsync_dir(parent);
    remove_quietly(old);
  }
  fsync_dir(parent);
  committed_ = true;
}

std::string checkpoint_dir_name(uint64_t step, const std::string& prefix) {
  return fmt::format("{}{:08d}", prefix, step);
}

std::optional<uint64_t> checkpoint_step(const fs::path& dir, const std::string& prefix) {
  std::string n = dir.filename().string();
  if (n.empty()) n = dir.parent_path().filename().string();
  if (n.size() <= prefix.size() || n.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  std::string digits = n.substr(prefix.size());
  if (digits.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + uint64_t(c - '0');
  }
  return v;
}

std::vector<fs::path> list_checkpoints(const fs::path& run_dir, const std::string& prefix) {
  std::vector<std::pair<uint64_t, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return {};
  for (const auto& e : fs::directory_iterator(run_dir)) {
    if (!e.is_directory()) continue;
    if (auto s = checkpoint_step(e.path(), prefix)) found.emplace_back(*s, e.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

std::optional<fs::path> find_latest_checkpoint(const fs::path& run_dir,
                                               const std::string& prefix) {
  auto all = list_checkpoints(run_dir, prefix);
  if (all.empty()) return std::nullopt;
  return all.back();
}

std::optional<fs::path> checkpoint_in(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / "config.json", ec)) return dir;
  return find_latest_checkpoint(dir);
}

std::vector<fs::path> prune_checkpoints(const fs::path& run_dir, int keep_last,
                                        const std::string& prefix) {
  DS_CHECK_AS(UsageError, keep_last >= 1, "keep_last must be at least 1 (got {})", keep_last);
  auto all = list_checkpoints(run_dir, prefix);
  std::vector<fs::path> removed;
  if (all.size() <= size_t(keep_last)) return removed;
  for (size_t i = 0; i + size_t(keep_last) < all.size(); ++i) {
    std::error_code ec;
    fs::remove_all(all[i], ec);
    if (ec) DS_THROW(IoError, "{}: cannot delete: {}", all[i].string(), ec.message());
    removed.push_back(all[i]);
  }
  fsync_dir(run_dir);
  return removed;
}

std::optional<bool> add_bos_token_in(const fs::path& tokenizer_config) {
  if (!io::is_regular_file(tokenizer_config)) return std::nullopt;
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(read_file(tokenizer_config));
  } catch (const nlohmann::json::parse_error& e) {
    DS_THROW(FormatError, "{}: invalid JSON at byte {}", tokenizer_config.string(), e.byte);
  }
  if (!j.is_object())
    DS_THROW(FormatError, "{}: not a JSON object (a tokenizer_config.json)",
             tokenizer_config.string());
  const auto it = j.find("add_bos_token");
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean())
    DS_THROW(FormatError, "{}: add_bos_token must be true or false", tokenizer_config.string());
  return it->get<bool>();
}

int copy_tokenizer_files(const TokenizerFiles& src, const fs::path& dst_dir) {
  const fs::path src_dir_or_file = src.source;
  std::error_code ec;
  DS_CHECK_AS(IoError, fs::exists(src_dir_or_file, ec), "{}: tokenizer source does not exist",
              src_dir_or_file.string());
  fs::path dir = src_dir_or_file;
  fs::path tok = dir / "tokenizer.json";
  if (!io::is_directory(src_dir_or_file)) {
    tok = src_dir_or_file;
    dir = src_dir_or_file.parent_path();
    if (dir.empty()) dir = ".";
  }
  int n = 0;
  if (io::is_regular_file(tok)) {
    write_file_atomic(dst_dir / "tokenizer.json", read_file(tok));
    ++n;
  }
  const fs::path tc = dir / "tokenizer_config.json";
  if (io::is_regular_file(tc)) {
    std::string text = read_file(tc);
    if (src.add_bos_token && add_bos_token_in(tc).value_or(true) != *src.add_bos_token) {
      auto j = nlohmann::ordered_json::parse(text);   // an object: add_bos_token_in checked
      j["add_bos_token"] = *src.add_bos_token;
      text = j.dump(2) + "\n";
    }
    write_file_atomic(dst_dir / "tokenizer_config.json", text);
    ++n;
  }
  return n;
}

}  // namespace ds::io
