// Options every tool shares, spelled the same everywhere: --log-level, -v/--verbose,
// -q/--quiet, --config FILE (TOML/INI with the same keys as the long flags), --version.
// Also run_tool(): the one place that maps exceptions to exit codes.
#pragma once
#include <functional>
#include <string>

namespace CLI {
class App;
class Validator;
}

namespace ds::cli {

struct CommonOptions {
  std::string log_level = "info";
  int verbose = 0;   // count of -v
  int quiet = 0;     // count of -q
};

// Adds --log-level, -v, -q, --config and --version to `app` (and its help footer).
void add_common_options(CLI::App& app, CommonOptions& opts, const std::string& tool_name);
// Call after parsing: sets up logging.
void apply_common_options(const CommonOptions& opts);

// Parses argv with `app`, applies the common options, then runs `body`. Returns the exit
// code: 0 ok, 1 runtime error (ds::Error and others), 2 usage error (CLI11 parse errors,
// ds::UsageError). Errors are printed as one line: "<tool>: error: <message>".
int run_tool(CLI::App& app, int argc, char** argv, const CommonOptions& opts,
             const std::function<void()>& body);

std::string version_string(const std::string& tool_name);   // "ds-x 0.1.0 (sha)"

// In place of CLI11's PositiveNumber / NonNegativeNumber (whose message spells out the range up
// to DBL_MAX): the same POSITIVE / NONNEGATIVE in --help, "expected a positive number, got
// '-5'" on error. run_tool also guards every integer option: CLI11 alone reads "-1" as 2^64-1
// for an unsigned one, clamps values past 64 bits and reads a leading 0 as octal; there they
// are usage errors (or read in decimal).
const CLI::Validator& positive_number();
const CLI::Validator& non_negative_number();

}  // namespace ds::cli
