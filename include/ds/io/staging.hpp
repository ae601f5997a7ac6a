// Staged outputs: a directory written under a temporary name beside its final place, then
// renamed into place. Its name ends in ".tmp.HOST.PID" (staging_suffix), and while its writer
// runs it holds a lock on a file inside it (StagingLock: an open-file-description lock, which
// the kernel drops when the process ends however it ends). A run killed outright (SIGKILL, a
// second Ctrl-C, the OOM killer, Slurm past its grace time) leaves its staging directory
// behind; a later writer of the same output removes it (remove_stale_staging) when all three
// say its writer is gone: the name is this host's, no process of that id runs here, and the
// lock can be taken, or there is no lock file and the directory has not changed for 30 s (a
// writer killed before it locked, just before its rename, or while it deleted the old output
// it had swapped under that name). A live writer in another PID namespace or on another host
// sharing the filesystem keeps its lock, so its directory is kept.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::io {

namespace fs = std::filesystem;

// ".tmp.HOST.PID" for this process (HOST: the host name, '/' and control characters
// replaced; "localhost" when it has none).
std::string staging_suffix();

// The lock file's name inside a staging directory.
inline constexpr const char* kStagingLockFile = ".ds-staging-lock";

// Creates dir/.ds-staging-lock and holds a write lock on it until release() or destruction.
// release() removes the file first (call it just before the directory is renamed into place).
class StagingLock {
 public:
  explicit StagingLock(const fs::path& dir);   // IoError naming the file on failure
  ~StagingLock();
  StagingLock(const StagingLock&) = delete;
  StagingLock& operator=(const StagingLock&) = delete;
  void release();

 private:
  fs::path file_;
  int fd_ = -1;
};

// The lock file's name inside a run directory (RunDirLock).
inline constexpr const char* kRunLockFile = ".ds-run-lock";

// Held by the one process that trains into a run directory (--out of ds-pretrain, ds-sft and
// ds-rl; rank 0 of a distributed run): a write lock on dir/.ds-run-lock for the object's life,
// the holder ("HOST pid N") written in the file. A second process given the same directory (a
// requeued job while the first still runs) gets a UsageError naming the directory and the
// holder instead of mixing two runs' checkpoints and metrics. The directory is created when
// missing, and removed again (lock file and all) on destruction when nothing else was written
// into it. On a filesystem without locks: a warning, no lock.
class RunDirLock {
 public:
  RunDirLock(const fs::path& dir, std::string_view flag);   // flag: "--out", for the message
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  fs::path dir_;
  int fd_ = -1;
  bool created_ = false;
};

// Removes the entries of `dir` named NAME.tmp.<this host>.<pid> for which `is_ours(NAME)`
// holds, no process <pid> runs (kill(pid, 0) fails with ESRCH) and the lock in them can be
// taken. Returns what it removed; an error (a vanished entry, no permission) keeps an entry.
std::vector<fs::path> remove_stale_staging(const fs::path& dir,
                                           const std::function<bool(std::string_view)>& is_ours);

// Removes the temporary files an AtomicFile of `final_path` left beside it
// (FINAL.tmp.<this host>.<pid>.<n>) when no process <pid> runs here and the file has not
// changed for 30 s (a writer killed outright). For outputs a tool rewrites in place (ds-eval's
// report and sample log, ds-tokenize train's files), called before they are written.
std::vector<fs::path> remove_stale_temp_files(const fs::path& final_path);

}  // namespace ds::io
