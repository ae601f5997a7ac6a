// Small file helpers shared by every area: whole-file reads with clear errors, and
// atomic writes (temporary file in the same directory, fsync, rename, fsync directory)
// so that an interrupted run never leaves a file that looks complete.
#pragma once
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace ds::io {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path);                 // IoError naming the path
// An input file that may be read twice (parsed, then fingerprinted). A regular file is read
// anew each time; anything else (a FIFO, a pipe such as /dev/stdin or <(zcat f.gz), a device)
// can be read only once, so its bytes are kept (by device and inode) for the life of the
// process and every later read of it returns them: such an input costs its size in memory.
std::string read_input(const fs::path& path);
// N when `p` reaches one of this process's open descriptors through /proc/self/fd/N,
// /proc/<pid>/fd/N or /dev/fd/N (/dev/stdout and /dev/stderr are links to them): a write to it
// belongs at that descriptor's offset (dup), not in a file renamed over its target.
std::optional<int> open_fd_link(const fs::path& p);
// The path a write to `p` replaces: `p`, or for a symbolic link its target (a dangling link's
// included, the end of its chain).
fs::path write_target(const fs::path& p);
// Writes `data` to `path` atomically (AtomicFile: through a symbolic link, and straight into a
// FIFO, a character device or this process's own stream).
void write_file_atomic(const fs::path& path, std::string_view data);
// Copies the regular file `src` to `dst` through an AtomicFile, in 1 MiB pieces: an IoError
// names the file and the real cause (a full disk is ENOSPC, not the EIO of a short sendfile).
void copy_file(const fs::path& src, const fs::path& dst);
void fsync_dir(const fs::path& dir);
// fs::exists / is_directory / is_regular_file (symbolic links followed) without the
// std::filesystem_error they throw when the status cannot be read for another reason than a
// missing path (a name too long, a loop of links, a directory without search permission): an
// IoError naming the path instead, as from any other reader.
bool exists(const fs::path& p);
bool is_directory(const fs::path& p);
bool is_regular_file(const fs::path& p);
// UsageError naming `flag` unless `dir` is a writable directory or could be created as one: its
// nearest existing ancestor is a writable directory. For a run's output, checked before the
// work that would otherwise only fail at its first write (a read-only file system included).
// `replaced`: the output is built beside `dir` and renamed over it (ds-tokenize encode), so it
// is the directory holding `dir` that must be writable, not `dir`.
void check_output_dir(const fs::path& dir, std::string_view flag, bool replaced = false);
// `p` absolute and normal, symbolic links resolved as far as it exists, without a trailing
// "/" or "/.": one spelling per file. ec reports a path that cannot be resolved.
fs::path resolved_path(const fs::path& p, std::error_code& ec);
// Whether `p` is `dir` or lies inside it, symbolic links resolved (the paths need not exist).
bool is_inside(const fs::path& p, const fs::path& dir);

// A file being written under a temporary name; commit() publishes it atomically.
// If the object is destroyed without commit() the temporary file is removed.
// A final path that is a symbolic link is written through: the link's target is replaced (a
// dangling link's target created) and the link kept. A final path that is this process's own
// stream (/dev/stdout, /proc/self/fd/N: open_fd_link) is written at that descriptor's offset,
// one that is a FIFO or character device (/dev/null, a terminal) straight into, as a shell
// redirection would: there is nothing to rename and nothing to take back. A block device is
// refused.
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
  void sync();                        // fsync: the bytes so far are on disk (or failed)
  void set_mode(unsigned mode);       // the permission bits of the file (default 0644)
  void commit();                      // flush, fsync, rename, fsync dir
  void abort();                       // remove the temporary file
  const fs::path& final_path() const { return final_; }
  const fs::path& temp_path() const { return temp_; }

 private:
  fs::path final_, temp_;
  int fd_ = -1;
  bool direct_ = false;   // writing straight into a FIFO or device (temp_ == final_)
  uint64_t offset_ = 0;
};

}  // namespace ds::io
