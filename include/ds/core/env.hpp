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

}  // namespace ds
