// Shared CLI conventions (see include/ds/cli/common.hpp). This is the only library
// translation unit that includes CLI11 (it is slow to compile).
#include "ds/cli/common.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>

#include "ds/core/error.hpp"
#include "ds/core/log.hpp"
#include "ds/core/version.hpp"
#include "ds/dist/topology.hpp"

namespace ds::cli {

std::string version_string(const std::string& tool_name) {
  return fmt::format("{} {} ({})", tool_name, DS_VERSION, DS_GIT_SHA);
}

void add_common_options(CLI::App& app, CommonOptions& opts, const std::string& tool_name) {
  app.set_version_flag("--version", version_string(tool_name));
  app.set_config("--config", "", "Read flags from a TOML/INI file (keys = long flag names)");
  app.allow_config_extras(CLI::config_extras_mode::error);   // an unknown key is an error
  app.add_option("--log-level", opts.log_level,
                 "Log level on stderr: trace, debug, info, warn, error, critical, off")
      ->capture_default_str();
  app.add_flag("-v,--verbose", opts.verbose, "More log output (repeatable)");
  app.add_flag("-q,--quiet", opts.quiet, "Less log output (repeatable)");
  app.footer("Exit status: 0 ok, 1 runtime error, 2 usage error. See man " + tool_name + ".");
}

void apply_common_options(const CommonOptions& opts) {
  ds::log::init(opts.log_level, opts.verbose - opts.quiet);
}

int run_tool(CLI::App& app, int argc, char** argv, const CommonOptions& opts,
             const std::function<void()>& body) {
  const std::string name = app.get_name();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: error: %s (see '%s --help')\n", name.c_str(), e.what(), name.c_str());
    return kExitUsage;
  }
  try {
    apply_common_options(opts);
    body();
    return kExitOk;
  } catch (const ds::Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", name.c_str(), e.what());
    SPDLOG_DEBUG("raised at {}:{} ({})", e.src_file(), e.src_line(), e.subsystem());
    // one failing rank must not leave the others waiting in a collective
    dist::abort_world(e.exit_code());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: error: out of memory\n", name.c_str());
    dist::abort_world(kExitRuntime);
    return kExitRuntime;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name.c_str(), e.what());
    dist::abort_world(kExitRuntime);
    return kExitRuntime;
  }
}

}  // namespace ds::cli
