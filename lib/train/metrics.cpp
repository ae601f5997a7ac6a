// Metrics JSONL writer and the progress line (see include/ds/train/metrics.hpp).
#include "ds/train/metrics.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ds/core/error.hpp"
#include "ds/core/log.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_depth.hpp"

namespace ds::train {

void MetricsWriter::open(const std::string& path, int64_t truncate_after_step) {
  if (path.empty()) return;
  path_ = path;
  // This process's own stream (/dev/stdout, /proc/self/fd/N, even when it is a regular file):
  // written at its offset, as the shell opened it, never read back or rewritten.
  if (const auto n = io::open_fd_link(path)) {
    fd_ = ::fcntl(*n, F_DUPFD_CLOEXEC, 0);
    if (fd_ < 0) DS_THROW(IoError, "{}: cannot write: {}", path, std::strerror(errno));
    return;
  }
  // Only a regular file (through a symbolic link: its target) is read and rewritten: a FIFO
  // or /dev/null is appended to as it is.
  std::error_code ec;
  std::filesystem::path real = std::filesystem::canonical(path, ec);
  if (ec) real = path;
  if (truncate_after_step >= 0 && std::filesystem::is_regular_file(real, ec)) {
    std::ifstream file(real, std::ios::binary);
    std::ostringstream whole;
    whole << file.rdbuf();
    const std::string text = whole.str();
    std::string kept;
    int64_t n = 0;
    for (size_t pos = 0; pos < text.size();) {
      size_t nl = text.find('\n', pos);
      const bool torn = nl == std::string::npos;   // the last line, without its newline
      if (torn) nl = text.size();
      const std::string line = text.substr(pos, nl - pos);
      pos = nl + 1;
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      io::check_json_depth(line, fmt::format("{}:{}", path, n));
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (torn && j.is_discarded()) {
        spdlog::info("{}:{}: dropped a last line cut short (a write that did not finish)", path,
                     n);
        continue;
      }
      if (j.is_discarded() || !j.is_object() || !j.contains("step") ||
          !j["step"].is_number_integer())
        DS_THROW(FormatError, "{}:{}: not a metrics line (a JSON object with an integer 'step')",
                 path, n);
      const auto& step = j["step"];
      const bool keep = step.is_number_unsigned()
                            ? step.get<uint64_t>() <= uint64_t(truncate_after_step)
                            : step.get<int64_t>() <= truncate_after_step;
      if (keep) kept += line + "\n";
    }
    // Rewritten when it loses a line past the step, a blank or torn line, or a last line's
    // missing newline (the next append would join it); an unchanged file keeps its inode.
    if (kept != text) io::write_file_atomic(real, kept);
  }
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
    std::filesystem::create_directories(parent, ec);
    if (ec)
      DS_THROW(IoError, "{}: cannot create its directory {}: {}", path, parent.string(),
               ec.message());
  }
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  created_ = fd_ >= 0;
  // (a path that exists, or a symbolic link: O_EXCL refuses even a dangling one, whose
  // target is then created)
  if (fd_ < 0 && errno == EEXIST)
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) DS_THROW(IoError, "{}: cannot open for appending: {}", path, std::strerror(errno));
  exceptions_at_open_ = std::uncaught_exceptions();
}

MetricsWriter::~MetricsWriter() {
  if (fd_ < 0) return;
  // A run that fails before its first line leaves no file it created (an empty file would pass
  // for a run that logged nothing); a run that ends normally keeps it, empty or not.
  struct stat st {};
  if (created_ && std::uncaught_exceptions() > exceptions_at_open_ && ::fstat(fd_, &st) == 0 &&
      st.st_size == 0 && ::unlink(path_.c_str()) != 0)
    spdlog::debug("{}: cannot remove the empty file: {}", path_, std::strerror(errno));
  ::close(fd_);
}

void MetricsWriter::write(const std::string& json_line) {
  if (fd_ < 0) return;
  const std::string line = json_line + "\n";
  struct stat st {};
  const bool regular = ::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t w = ::write(fd_, line.data() + done, line.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = w < 0 ? errno : ENOSPC;
      // cut back to the size before the line, unless another writer appended meanwhile
      // (then the torn line stays, and a resume drops it only when it is the last)
      struct stat now {};
      if (regular && done > 0 && ::fstat(fd_, &now) == 0 &&
          now.st_size == st.st_size + off_t(done) && ::ftruncate(fd_, st.st_size) != 0)
        spdlog::debug("{}: cannot cut back the partial line: {}", path_, std::strerror(errno));
      DS_THROW(IoError, "{}: write failed: {}", path_, std::strerror(err));
    }
    done += size_t(w);
  }
}

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  int64_t t = int64_t(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600),
                  (long long)(t % 3600 / 60));
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else std::snprintf(buf, sizeof buf, "%llds", (long long)t);
  return buf;
}

Progress::Progress(int64_t total_steps, int64_t log_every)
    : total_(total_steps), log_every_(log_every > 0 ? log_every : 10),
      tty_(ds::log::stderr_is_tty() && spdlog::get_level() <= spdlog::level::info),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t step, double loss, double lr, double tokens_per_s) {
  if (first_step_ < 0) {
    first_step_ = step - 1;
    start_ = std::chrono::steady_clock::now();
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double per_step = elapsed / double(std::max<int64_t>(1, step - first_step_));
  double eta = per_step * double(total_ - step);
  std::string line = fmt::format("step {}/{} loss {:.4f} lr {:.3g} {:.0f} tok/s ETA {}", step,
                                 total_, loss, lr, tokens_per_s, format_duration(eta));
  if (tty_) {
    int width = 30;
    int filled = total_ > 0 ? int(width * step / total_) : 0;
    std::string bar = std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.');
    std::fprintf(stderr, "\r[%s] %s\x1b[K", bar.c_str(), line.c_str());
    std::fflush(stderr);
  } else if (step % log_every_ == 0 || step == total_) {
    spdlog::info("{}", line);
  }
}

void Progress::finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace ds::train
