// Staged-output names, their locks, and the removal of stale ones (see
// include/ds/io/staging.hpp).
// reference: kill(2) (signal 0 probes a process: ESRCH when none has that id); fcntl(2)
// F_OFD_SETLK (open file description locks: released when the last descriptor closes).
#include "ds/io/staging.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
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

// Whether dir's writer is gone by its lock: a lock file that nobody holds; or no lock file and
// no change to the directory for kLockless (a writer killed before locking, between releasing
// and renaming, or while deleting the old output it swapped under the staging name: a live
// writer in another PID namespace is in those windows for milliseconds, and its directory
// changes as it goes).
constexpr auto kLockless = std::chrono::seconds(30);

bool writer_gone(const fs::path& dir) {
  const int fd = ::open((dir / kStagingLockFile).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno != ENOENT) return false;
    std::error_code ec;
    const auto t = fs::last_write_time(dir, ec);
    return !ec && fs::file_time_type::clock::now() - t > kLockless;
  }
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

RunDirLock::RunDirLock(const fs::path& dir, std::string_view flag) : dir_(dir) {
  std::error_code ec;
  created_ = !fs::exists(dir, ec);
  if (created_ && !fs::create_directories(dir, ec) && ec)
    DS_THROW(IoError, "{} {}: cannot create: {}", flag, dir.string(), ec.message());
  const fs::path file = dir / kRunLockFile;
  fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0) DS_THROW(IoError, "{}: cannot create: {}", file.string(), std::strerror(errno));
  if (try_lock(fd_)) {
    const std::string me = fmt::format("{} pid {}\n", host_name(), ::getpid());
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != ssize_t(me.size()))
      DS_THROW(IoError, "{}: cannot write: {}", file.string(), std::strerror(errno));
    return;
  }
  const int err = errno;
  if (err != EAGAIN && err != EACCES) {   // no locks here (some network filesystems)
    spdlog::warn("{} {}: cannot lock {} ({}): nothing stops a second run from writing there",
                 flag, dir.string(), file.string(), std::strerror(err));
    return;
  }
  char buf[256] = {};
  const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
  std::string holder = n > 0 ? std::string(buf, size_t(n)) : std::string("another process");
  while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\r')) holder.pop_back();
  ::close(fd_);
  fd_ = -1;
  DS_THROW(UsageError, "{} {}: another run is writing there ({}); two runs in one directory "
           "would mix their checkpoints and metrics", flag, dir.string(), holder);
}

RunDirLock::~RunDirLock() {
  if (fd_ < 0) return;
  if (created_) {   // nothing written but the lock file: leave no directory behind
    std::error_code ec;
    bool only_lock = true;
    for (fs::directory_iterator it(dir_, ec); !ec && it != fs::directory_iterator();
         it.increment(ec))
      only_lock = only_lock && it->path().filename() == kRunLockFile;
    if (!ec && only_lock) {
      ::unlink((dir_ / kRunLockFile).c_str());
      fs::remove(dir_, ec);
    }
  }
  ::close(fd_);
}

std::vector<fs::path> remove_stale_temp_files(const fs::path& final_path) {
  std::vector<fs::path> stale, removed;
  const fs::path dir = final_path.parent_path().empty() ? fs::path(".") : final_path.parent_path();
  const std::string prefix = final_path.filename().string() + ".tmp." + host_name() + ".";
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());   // PID.N
    const size_t dot = rest.find('.');
    const std::string pid = rest.substr(0, dot);
    const std::string n = dot == std::string::npos ? "" : rest.substr(dot + 1);
    const auto digits = [](const std::string& s) {
      return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
    };
    if (!digits(pid) || !digits(n) || !it->is_regular_file(ec)) continue;
    const auto t = fs::last_write_time(it->path(), ec);
    if (!ec && process_is_gone(std::stol(pid)) && fs::file_time_type::clock::now() - t > kLockless)
      stale.push_back(it->path());
  }
  for (const fs::path& p : stale)
    if (std::error_code rm; fs::remove(p, rm)) removed.push_back(p);
  return removed;
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
    if (process_is_gone(std::stol(digits)) && writer_gone(it->path()))
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
