// Strict environment variables (see include/ds/core/env.hpp).
#include "ds/core/env.hpp"

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ds/core/error.hpp"

namespace ds {

namespace {
std::vector<void (*)()>& env_checks() {   // a function-local static: safe at static init
  static std::vector<void (*)()> v;
  return v;
}
}  // namespace

EnvCheck::EnvCheck(void (*read)()) { env_checks().push_back(read); }

void check_environment() {
  for (void (*read)() : env_checks()) read();
}

std::optional<int64_t> env_int(const char* name, int64_t lo, int64_t hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  int64_t out = 0;
  const char* end = v + std::strlen(v);
  const auto [p, ec] = std::from_chars(v, end, out);
  if (ec != std::errc() || p != end || out < lo || out > hi)
    DS_THROW(UsageError, "environment variable {}='{}': expected an integer in [{}, {}]", name, v,
             lo, hi);
  return out;
}

std::string env_choice(const char* name, std::initializer_list<const char*> choices) {
  const char* v = std::getenv(name);
  if (!v || !*v) return *choices.begin();
  std::string list;
  for (const char* c : choices) {
    if (std::strcmp(v, c) == 0) return c;
    list += (list.empty() ? "" : ", ") + std::string(c);
  }
  DS_THROW(UsageError, "environment variable {}='{}': expected one of {}", name, v, list);
}

}  // namespace ds
