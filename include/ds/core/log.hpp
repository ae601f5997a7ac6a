// Logging: spdlog to stderr, one pattern for every tool, rank-aware ([rank r/w] once the
// distributed layer sets it). Results go to stdout, metrics to JSONL files, never to the log.
#pragma once
#include <spdlog/spdlog.h>

#include <string>

namespace ds::log {

// Parses "trace|debug|info|warn|error|critical|off"; throws UsageError otherwise.
spdlog::level::level_enum parse_level(const std::string& name);
// Sets up the stderr logger. `verbosity` > 0 lowers the level, < 0 raises it.
// SPDLOG_LEVEL in the environment overrides both (spdlog's own convention).
void init(const std::string& level, int verbosity = 0);
// Adds "[rank r/w] " to every line; only rank 0 logs below `warn` unless all_ranks.
void set_rank(int rank, int world_size, bool all_ranks = false);
// "[rank r/w] " once set_rank has run with a world of several ranks, else "" (for the tools'
// one-line error messages, printed outside the logger).
const std::string& rank_tag();
// True when stderr is a terminal (progress bars are drawn only then).
bool stderr_is_tty();

}  // namespace ds::log
