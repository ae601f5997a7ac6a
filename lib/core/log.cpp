// Logging setup shared by every tool (see include/ds/core/log.hpp).
#include "ds/core/log.hpp"

#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <unistd.h>

#include "ds/core/error.hpp"

namespace ds::log {

spdlog::level::level_enum parse_level(const std::string& name) {
  static const char* names[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  for (int i = 0; i < 7; ++i)
    if (name == names[i]) return spdlog::level::level_enum(i);
  if (name == "warning") return spdlog::level::warn;
  DS_THROW(UsageError,
           "--log-level: unknown level '{}' (trace, debug, info, warn, error, critical, off)",
           name);
}

void init(const std::string& level, int verbosity) {
  auto logger = spdlog::stderr_color_mt("ds");
  logger->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  spdlog::set_default_logger(logger);
  int lv = int(parse_level(level)) - verbosity;
  if (lv < 0) lv = 0;
  if (lv > int(spdlog::level::off)) lv = int(spdlog::level::off);
  spdlog::set_level(spdlog::level::level_enum(lv));
  spdlog::cfg::load_env_levels();   // SPDLOG_LEVEL wins, as spdlog documents
}

namespace {
std::string g_rank_tag;
}

const std::string& rank_tag() { return g_rank_tag; }

void set_rank(int rank, int world_size, bool all_ranks) {
  if (world_size > 1) g_rank_tag = fmt::format("[rank {}/{}] ", rank, world_size);
  auto pattern = fmt::format("[%H:%M:%S.%e] [rank {}/{}] [%^%l%$] %v", rank, world_size);
  spdlog::set_pattern(pattern);
  if (rank != 0 && !all_ranks && spdlog::get_level() < spdlog::level::warn)
    spdlog::set_level(spdlog::level::warn);
}

bool stderr_is_tty() { return isatty(STDERR_FILENO) == 1; }

}  // namespace ds::log
