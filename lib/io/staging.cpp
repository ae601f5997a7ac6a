// Staged-output names and the removal of stale ones (see include/ds/io/staging.hpp).
// reference: kill(2) (signal 0 probes a process: ESRCH when none has that id).
#include "ds/io/staging.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

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

}  // namespace

std::string staging_suffix() { return fmt::format(".tmp.{}.{}", host_name(), ::getpid()); }

std::vector<fs::path> remove_stale_staging(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> stale, removed;
  const std::string mark = ".tmp." + host_name() + ".";
  std::error_code ec;
  fs::directory_iterator it(dir.empty() ? fs::path(".") : dir, ec);
  if (ec) return removed;
  for (const fs::directory_entry& e : it) {
    const std::string name = e.path().filename().string();
    if (name.size() <= prefix.size() + mark.size() || name.compare(0, prefix.size(), prefix) != 0)
      continue;
    const size_t at = name.rfind(mark);
    if (at == std::string::npos || at < prefix.size()) continue;
    const std::string digits = name.substr(at + mark.size());
    if (digits.empty() || digits.size() > 9 ||
        digits.find_first_not_of("0123456789") != std::string::npos)
      continue;
    if (process_is_gone(std::stol(digits))) stale.push_back(e.path());
  }
  for (const fs::path& p : stale) {   // not while the directory is being read
    std::error_code rm;
    fs::remove_all(p, rm);
    if (!rm) removed.push_back(p);
  }
  return removed;
}

}  // namespace ds::io
