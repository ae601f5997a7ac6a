// Names for staged outputs (a directory written under a temporary name, then renamed into
// place) that say which process wrote them, and the removal of those whose writer is gone.
// A staged name ends in ".tmp.HOST.PID". A run killed outright (SIGKILL, a second Ctrl-C,
// the OOM killer, Slurm past its grace time) leaves its staging directory behind; the next
// writer into the same directory removes every one of this host whose process no longer
// runs. Those of other hosts (a shared filesystem) and of live processes are kept.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace ds::io {

namespace fs = std::filesystem;

// ".tmp.HOST.PID" for this process (HOST: the host name, '/' and control characters
// replaced; "localhost" when it has none).
std::string staging_suffix();

// Removes the entries of `dir` named PREFIX...SUFFIX where PREFIX is `prefix`, SUFFIX is
// ".tmp.<this host>.<pid>" and no process <pid> runs (kill(pid, 0) fails with ESRCH).
// Returns what it removed; errors (a vanished entry, no permission) leave an entry in place.
std::vector<fs::path> remove_stale_staging(const fs::path& dir, const std::string& prefix);

}  // namespace ds::io
