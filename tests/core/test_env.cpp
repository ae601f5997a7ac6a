// Strict environment variables (ds/core/env.hpp).
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "ds/core/env.hpp"
#include "ds/core/error.hpp"

namespace {

constexpr const char* kVar = "DS_TEST_ENV_VALUE";

struct EnvValue {   // sets kVar for one scope
  explicit EnvValue(const char* v) { ::setenv(kVar, v, 1); }
  ~EnvValue() { ::unsetenv(kVar); }
};

std::string usage_message(const auto& f) {
  try {
    f();
  } catch (const ds::UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("env_int: unset or empty is nothing, a decimal in range is read") {
  ::unsetenv(kVar);
  CHECK_FALSE(ds::env_int(kVar, 0, 10).has_value());
  {
    EnvValue e("");
    CHECK_FALSE(ds::env_int(kVar, 0, 10).has_value());
  }
  EnvValue e("10");
  CHECK(ds::env_int(kVar, 0, 10) == 10);
  CHECK(ds::env_int(kVar, 10, 10) == 10);
}

TEST_CASE("env_int: garbage, units, signs out of range and overflow are usage errors") {
  for (const char* v :
       {"64M", " 5", "5 ", "x", "-1", "11", "1e3", "0x10", "99999999999999999999"}) {
    EnvValue e(v);
    const std::string m = usage_message([] { (void)ds::env_int(kVar, 0, 10); });
    INFO(v);
    CHECK(m.find(kVar) != std::string::npos);
    CHECK(m.find("expected an integer in [0, 10]") != std::string::npos);
  }
}

TEST_CASE("check_environment: every registered read runs") {
  static int reads = 0;
  static const ds::EnvCheck counted([] { ++reads; });
  const int before = reads;
  ds::check_environment();
  CHECK(reads == before + 1);
}

TEST_CASE("env_choice: the first choice when unset, a listed value, or a usage error") {
  ::unsetenv(kVar);
  CHECK(ds::env_choice(kVar, {"native", "blas"}) == "native");
  {
    EnvValue e("blas");
    CHECK(ds::env_choice(kVar, {"native", "blas"}) == "blas");
  }
  EnvValue e("BLAS");
  const std::string m = usage_message([] { (void)ds::env_choice(kVar, {"native", "blas"}); });
  CHECK(m.find("DS_TEST_ENV_VALUE='BLAS': expected one of native, blas") != std::string::npos);
}
