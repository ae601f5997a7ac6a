// Small file helpers shared by every area: whole-file reads with clear errors, and
// atomic writes (temporary file in the same directory, fsync, rename, fsync directory)
// so that an interrupted run never leaves a file that looks complete.
#pragma once
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

namespace ds::io {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path);                 // IoError naming the path
void write_file_atomic(const fs::path& path, std::string_view data);
void fsync_dir(const fs::path& dir);
// UsageError naming `flag` unless `dir` is a directory or could be created as one: its nearest
// existing ancestor is a writable directory. For a run's output, checked before the work that
// would otherwise only fail at its first write.
void check_output_dir(const fs::path& dir, std::string_view flag);
// Whether `p` is `dir` or lies inside it, symbolic links resolved (the paths need not exist).
bool is_inside(const fs::path& p, const fs::path& dir);

// A file being written under a temporary name; commit() publishes it atomically.
// If the object is destroyed without commit() the temporary file is removed.
class AtomicFile {
 public:
  explicit AtomicFile(fs::path final_path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void pwrite(const void* data, size_t n, uint64_t offset);  // patch earlier bytes
  uint64_t offset() const { return offset_; }
  void commit();                      // flush, fsync, rename, fsync dir
  void abort();                       // remove the temporary file
  const fs::path& final_path() const { return final_; }
  const fs::path& temp_path() const { return temp_; }

 private:
  fs::path final_, temp_;
  int fd_ = -1;
  uint64_t offset_ = 0;
};

}  // namespace ds::io
