// Staged-output names, their locks, and the removal of stale ones (see
// include/ds/io/staging.hpp).
// reference: kill(2) (signal 0 probes a process: ESRCH when none has that id); fcntl(2)
// F_OFD_SETLK (open file description locks: released when the last descriptor closes).
#include "ds/io/staging.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "ds/core/error.hpp"

namespace ds::io {

namespace {

const std::string& host_name() {
  static const std::string name = [] {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return std::string("localhost");
    std::string s(buf);
    for (char& c : s)
      if (c == '/' || static_cast<unsigned char>(c) < 0x20) c = '_';
    return s;
  }();
  return name;
}

bool process_is_gone(long pid) {
  if (pid <= 0 || pid > INT_MAX) return false;
  return ::kill(pid_t(pid), 0) != 0 && errno == ESRCH;
}

// A write lock on the whole file; false when another open file description holds one.
bool try_lock(int fd) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  return ::fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

// True when dir holds a lock file that nobody holds. (No lock file: the writer was killed
// between creating the directory and locking, or is releasing it now; kept either way.)
bool lock_is_free(const fs::path& dir) {
  const int fd = ::open((dir / kStagingLockFile).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  const bool free = try_lock(fd);
  ::close(fd);
  return free;
}

}  // namespace

std::string staging_suffix() { return fmt::format(".tmp.{}.{}", host_name(), ::getpid()); }

StagingLock::StagingLock(const fs::path& dir) : file_(dir / kStagingLockFile) {
  fd_ = ::open(file_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0) DS_THROW(IoError, "{}: cannot create: {}", file_.string(), std::strerror(errno));
  if (!try_lock(fd_)) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    DS_THROW(IoError, "{}: cannot lock: {}", file_.string(), std::strerror(err));
  }
}

StagingLock::~StagingLock() {
  if (fd_ >= 0) ::close(fd_);
}

void StagingLock::release() {
  if (fd_ < 0) return;
  ::unlink(file_.c_str());
  ::close(fd_);
  fd_ = -1;
}

std::vector<fs::path> remove_stale_staging(const fs::path& dir,
                                           const std::function<bool(std::string_view)>& is_ours) {
  std::vector<fs::path> stale, removed;
  const std::string mark = ".tmp." + host_name() + ".";
  std::error_code ec;
  fs::directory_iterator it(dir.empty() ? fs::path(".") : dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const size_t at = name.rfind(mark);
    if (at == std::string::npos || at == 0) continue;
    const std::string digits = name.substr(at + mark.size());
    if (digits.empty() || digits.size() > 9 ||
        digits.find_first_not_of("0123456789") != std::string::npos)
      continue;
    if (!is_ours(std::string_view(name).substr(0, at))) continue;
    if (process_is_gone(std::stol(digits)) && lock_is_free(it->path()))
      stale.push_back(it->path());
  }
  for (const fs::path& p : stale) {   // not while the directory is being read
    std::error_code rm;
    fs::remove_all(p, rm);
    if (!rm) removed.push_back(p);
  }
  return removed;
}

}  // namespace ds::io
