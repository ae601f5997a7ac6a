// Reading the DS_* and launcher environment variables strictly: a value that is set but not
// what the variable takes is a UsageError naming the variable, never read as a default.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>

namespace ds {

// The decimal integer in `name`, within [lo, hi]; nothing when it is unset or empty.
std::optional<int64_t> env_int(const char* name, int64_t lo, int64_t hi);

// The value of `name` when it is one of `choices`; the first choice when it is unset or empty.
std::string env_choice(const char* name, std::initializer_list<const char*> choices);

// A module that reads a variable on first use (a function-local static) registers that read
// with a namespace-scope EnvCheck, and run_tool calls check_environment() before any work: a
// bad value is then one usage error up front, never a throw on a pool thread or inside an
// OpenMP region (which would terminate the process).
struct EnvCheck {
  explicit EnvCheck(void (*read)());
};
void check_environment();

}  // namespace ds
