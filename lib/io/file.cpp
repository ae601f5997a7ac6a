// Whole-file reads and atomic writes (see include/ds/io/file.hpp).
#include "ds/io/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/io/staging.hpp"

namespace ds::io {

fs::path resolved_path(const fs::path& p, std::error_code& ec) {
  // absolute first: weakly_canonical leaves a path none of whose parts exist relative
  fs::path r = fs::weakly_canonical(fs::absolute(p, ec), ec).lexically_normal();
  if (!r.has_filename() && r.has_parent_path() && r != r.root_path()) r = r.parent_path();
  return r;   // (no trailing empty element: "run/" is "run")
}

bool is_inside(const fs::path& p, const fs::path& dir) {
  if (p.empty() || dir.empty()) return false;
  std::error_code ec;
  const fs::path a = resolved_path(p, ec), d = resolved_path(dir, ec);
  if (ec) return false;
  return std::mismatch(d.begin(), d.end(), a.begin(), a.end()).first == d.end();
}

void check_output_dir(const fs::path& dir, std::string_view flag, bool replaced) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  if (ec) p = dir;
  if (fs::exists(p, ec)) {
    if (!fs::is_directory(p, ec))
      DS_THROW(UsageError, "{} {}: exists and is not a directory", flag, dir.string());
    // written in, or (replaced) renamed over in the directory holding it (a link's target's)
    const fs::path w = replaced ? write_target(p).parent_path() : p;
    if (::access(w.c_str(), W_OK) != 0)   // EROFS for a read-only file system, root or not
      DS_THROW(UsageError, "{} {}: cannot write {} ({})", flag, dir.string(),
               replaced ? "beside it, in " + w.string() : std::string("there"),
               std::strerror(errno));
    return;
  }
  fs::path a = p.parent_path();
  while (!a.empty() && !fs::exists(a, ec) && a != a.parent_path()) a = a.parent_path();
  if (!fs::is_directory(a, ec))
    DS_THROW(UsageError, "{} {}: {} is not a directory", flag, dir.string(), a.string());
  if (::access(a.c_str(), W_OK) != 0)
    DS_THROW(UsageError, "{} {}: cannot create it in {} ({})", flag, dir.string(), a.string(),
             std::strerror(errno));
}

std::string read_file(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) DS_THROW(IoError, "{}: cannot open: {}", path.string(), std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      DS_THROW(IoError, "{}: read failed: {}", path.string(), std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

namespace {
fs::file_status status_of(const fs::path& p) {
  std::error_code ec;
  const fs::file_status st = fs::status(p, ec);
  if (ec && st.type() == fs::file_type::none)
    DS_THROW(IoError, "{}: {}", p.string(), ec.message());
  return st;
}
}  // namespace

bool exists(const fs::path& p) { return fs::exists(status_of(p)); }
bool is_directory(const fs::path& p) { return fs::is_directory(status_of(p)); }
bool is_regular_file(const fs::path& p) { return fs::is_regular_file(status_of(p)); }

void copy_file(const fs::path& src, const fs::path& dst) {
  const int fd = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) DS_THROW(IoError, "{}: cannot open: {}", src.string(), std::strerror(errno));
  try {
    AtomicFile out(dst);
    struct stat st {};
    if (::fstat(fd, &st) == 0) out.set_mode(st.st_mode & 07777);   // as fs::copy_file did
    std::vector<char> buf(size_t(1) << 20);
    for (;;) {
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) DS_THROW(IoError, "{}: read failed: {}", src.string(), std::strerror(errno));
      if (n == 0) break;
      out.write(buf.data(), size_t(n));
    }
    out.commit();
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

std::string read_input(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode)) return read_file(path);
  static std::mutex mu;
  // non-regular inputs read so far, by device and inode: /dev/stdin, /dev/fd/0 and a link to
  // a FIFO name the same one
  static std::map<std::pair<dev_t, ino_t>, std::string> kept;
  const std::lock_guard<std::mutex> lock(mu);
  const auto key = std::pair(st.st_dev, st.st_ino);
  const auto it = kept.find(key);
  if (it != kept.end()) return it->second;
  return kept.emplace(key, read_file(path)).first->second;
}

std::optional<int> open_fd_link(const fs::path& p) {
  const auto fd_number = [](const std::string& s) -> std::optional<int> {
    const std::string self = "/proc/self/fd/", dev = "/dev/fd/";
    const std::string mine = fmt::format("/proc/{}/fd/", ::getpid());
    for (const std::string& lead : {self, dev, mine}) {
      if (s.rfind(lead, 0) != 0) continue;
      const std::string n = s.substr(lead.size());
      if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string::npos)
        return std::nullopt;
      return std::stoi(n);
    }
    return std::nullopt;
  };
  std::error_code ec;
  fs::path cur = fs::absolute(p, ec).lexically_normal();
  for (int hops = 0; hops < 40; ++hops) {
    if (const auto n = fd_number(cur.string()))
      return ::fcntl(*n, F_GETFD) != -1 ? n : std::nullopt;
    if (!fs::is_symlink(cur, ec)) return std::nullopt;
    const fs::path to = fs::read_symlink(cur, ec);
    if (ec) return std::nullopt;
    cur = (to.is_absolute() ? to : cur.parent_path() / to).lexically_normal();
  }
  return std::nullopt;
}

fs::path write_target(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_symlink(p, ec)) return p;
  if (fs::exists(p, ec)) {
    fs::path real = fs::canonical(p, ec);
    return ec ? p : real;
  }
  fs::path cur = p;   // a dangling link: the end of its chain, to be created
  for (int hops = 0; hops < 40; ++hops) {   // as the kernel's ELOOP limit
    if (!fs::is_symlink(cur, ec)) return cur;
    const fs::path to = fs::read_symlink(cur, ec);
    if (ec) DS_THROW(IoError, "{}: cannot read the link: {}", cur.string(), ec.message());
    cur = to.is_absolute() ? to : cur.parent_path() / to;
  }
  DS_THROW(IoError, "{}: too many levels of symbolic links", p.string());
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;   // best effort: some filesystems do not allow it
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const fs::path& path, std::string_view data) {
  AtomicFile f(path);
  f.write(data);
  f.commit();
}

namespace {
std::atomic<uint64_t> g_counter{0};
}

AtomicFile::AtomicFile(fs::path final_path) : final_(std::move(final_path)) {
  if (const auto n = open_fd_link(final_)) {   // /dev/stdout, /proc/self/fd/N: this process's
    direct_ = true;                            // own stream, written at its offset
    temp_ = final_;
    fd_ = ::fcntl(*n, F_DUPFD_CLOEXEC, 0);
    if (fd_ < 0) DS_THROW(IoError, "{}: cannot write: {}", final_.string(), std::strerror(errno));
    return;
  }
  struct stat st {};
  if (::stat(final_.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
    if (S_ISBLK(st.st_mode))
      DS_THROW(IoError, "{}: a block device (refused: the write would overwrite it)",
               final_.string());
    direct_ = true;   // a FIFO or character device: written as it is
    temp_ = final_;
    fd_ = ::open(final_.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd_ < 0)
      DS_THROW(IoError, "{}: cannot open for writing: {}", final_.string(), std::strerror(errno));
    return;
  }
  final_ = write_target(final_);   // a link's target (created when the link dangles)
  temp_ = final_;
  temp_ += fmt::format("{}.{}", staging_suffix(), g_counter++);   // .tmp.HOST.PID.N
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) DS_THROW(IoError, "{}: cannot create: {}", temp_.string(), std::strerror(errno));
}

AtomicFile::~AtomicFile() { abort(); }

void AtomicFile::set_mode(unsigned mode) {
  if (direct_) return;   // a FIFO or device keeps its own
  if (::fchmod(fd_, mode_t(mode)) != 0)
    DS_THROW(IoError, "{}: chmod: {}", temp_.string(), std::strerror(errno));
}

void AtomicFile::write(const void* data, size_t n) {
  DS_CHECK(fd_ >= 0, "{}: write after commit/abort", final_.string());
  auto p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      DS_THROW(IoError, "{}: write failed: {}", temp_.string(), std::strerror(errno));
    }
    p += w; n -= size_t(w); offset_ += uint64_t(w);
  }
}

void AtomicFile::pwrite(const void* data, size_t n, uint64_t offset) {
  DS_CHECK(fd_ >= 0, "{}: write after commit/abort", final_.string());
  if (direct_)
    DS_THROW(IoError, "{}: not a regular file (this output is patched after it is written)",
             final_.string());
  auto p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd_, p, n, off_t(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      DS_THROW(IoError, "{}: write failed: {}", temp_.string(), std::strerror(errno));
    }
    p += w; n -= size_t(w); offset += uint64_t(w);
  }
}

void AtomicFile::sync() {
  DS_CHECK(fd_ >= 0, "{}: sync after commit/abort", final_.string());
  if (!direct_ && ::fsync(fd_) != 0)
    DS_THROW(IoError, "{}: fsync failed: {}", temp_.string(), std::strerror(errno));
}

void AtomicFile::commit() {
  DS_CHECK(fd_ >= 0, "{}: commit twice", final_.string());
  if (direct_) {   // nothing to sync (a device may refuse fsync) or rename
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) DS_THROW(IoError, "{}: close failed: {}", final_.string(), std::strerror(errno));
    return;
  }
  if (::fsync(fd_) != 0)
    DS_THROW(IoError, "{}: fsync failed: {}", temp_.string(), std::strerror(errno));
  if (::close(fd_) != 0) {
    fd_ = -1;
    DS_THROW(IoError, "{}: close failed: {}", temp_.string(), std::strerror(errno));
  }
  fd_ = -1;
  if (::rename(temp_.c_str(), final_.c_str()) != 0) {
    int err = errno;
    ::unlink(temp_.c_str());
    DS_THROW(IoError, "{}: rename failed: {}", final_.string(), std::strerror(err));
  }
  fsync_dir(final_.parent_path());
}

void AtomicFile::abort() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    if (!direct_) ::unlink(temp_.c_str());
  }
}

}  // namespace ds::io
