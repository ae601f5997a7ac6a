// One error hierarchy for the whole project. lib/ throws, only a tool's main() turns an
// error into an exit code (0 ok, 1 runtime error, 2 usage error; see man/ds-*.1 EXIT STATUS).
// Messages are one line, name the file/field/tensor at fault, and may carry a hint.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ds {

enum ExitCode : int { kExitOk = 0, kExitRuntime = 1, kExitUsage = 2 };

class Error : public std::runtime_error {
 public:
  Error(std::string subsystem, const std::string& message, const char* src_file = nullptr,
        int src_line = 0)
      : std::runtime_error(message), subsystem_(std::move(subsystem)),
        src_file_(src_file ? src_file : ""), src_line_(src_line) {}
  const std::string& subsystem() const { return subsystem_; }
  const std::string& src_file() const { return src_file_; }
  int src_line() const { return src_line_; }
  virtual int exit_code() const { return kExitRuntime; }

 private:
  std::string subsystem_;
  std::string src_file_;
  int src_line_;
};

#define DS_DEFINE_ERROR(Name, subsys, code)                                          \
  class Name : public Error {                                                        \
   public:                                                                           \
    explicit Name(const std::string& m, const char* f = nullptr, int l = 0)          \
        : Error(subsys, m, f, l) {}                                                  \
    int exit_code() const override { return code; }                                  \
  };

DS_DEFINE_ERROR(UsageError, "usage", kExitUsage)        // bad flag value or combination
DS_DEFINE_ERROR(ConfigError, "config", kExitRuntime)    // inconsistent configuration file
DS_DEFINE_ERROR(IoError, "io", kExitRuntime)            // open/read/write/rename failures
DS_DEFINE_ERROR(FormatError, "format", kExitRuntime)    // malformed or corrupt file contents
DS_DEFINE_ERROR(NumericsError, "numerics", kExitRuntime)// non-finite values and the like
DS_DEFINE_ERROR(CudaError, "cuda", kExitRuntime)        // CUDA runtime / cuBLAS failures
DS_DEFINE_ERROR(NcclError, "nccl", kExitRuntime)        // collective failures
DS_DEFINE_ERROR(InternalError, "internal", kExitRuntime)// broken invariant (a bug)
#undef DS_DEFINE_ERROR

}  // namespace ds

// DS_THROW(FormatError, "{}: bad magic", path) -- throw with source location.
#define DS_THROW(Type, ...) throw ::ds::Type(::fmt::format(__VA_ARGS__), __FILE__, __LINE__)
// DS_CHECK(cond, "fmt", args...) -- an invariant of the code (InternalError).
#define DS_CHECK(cond, ...) \
  do { if (!(cond)) DS_THROW(InternalError, __VA_ARGS__); } while (0)
// DS_CHECK_AS(FormatError, cond, "fmt", args...) -- a check on user input.
#define DS_CHECK_AS(Type, cond, ...) \
  do { if (!(cond)) DS_THROW(Type, __VA_ARGS__); } while (0)
#define DS_UNREACHABLE(msg) DS_THROW(InternalError, "unreachable: {}", msg)
