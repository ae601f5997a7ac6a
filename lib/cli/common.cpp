// Shared CLI conventions (see include/ds/cli/common.hpp). This is the only library
// translation unit that includes CLI11 (it is slow to compile).
#include "ds/cli/common.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/core/log.hpp"
#include "ds/core/env.hpp"
#include "ds/core/version.hpp"
#include "ds/dist/topology.hpp"
#include "ds/tokenizer/utf8.hpp"

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
  check_environment();   // the DS_* variables the tool's libraries read (DS_CPU_CACHE_MB, ...)
}

namespace {

// An error message as one bounded line of valid UTF-8: control characters from the input a
// message quotes (a role "a\nb", a tokenizer type) are written as \n, \t or \xNN, so are bytes
// that are not UTF-8 (a JSON parser's "last read" of a bad byte), and a message quoting a huge
// value is cut at 2000 bytes (between characters), saying how much was left out.
std::string printable(std::string_view msg) {
  constexpr size_t kMax = 2000;
  std::string out;
  size_t i = 0;
  while (i < msg.size() && out.size() < kMax) {
    const auto c = static_cast<unsigned char>(msg[i]);
    char32_t cp = 0;
    const size_t len = c < 0x80 ? 1 : tok::utf8_decode(msg, i, cp);
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7f || len == 0) out += fmt::format("\\x{:02x}", c);
    else out.append(msg.substr(i, len));
    i += std::max<size_t>(len, 1);
  }
  if (i < msg.size()) out += fmt::format("... ({} more bytes)", msg.size() - i);
  return out;
}

// "" when `s` is a number (the whole string) for which `ok` holds, else the message.
std::string number_check(const std::string& s, bool (*ok)(double), const char* what) {
  char* end = nullptr;
  errno = 0;
  const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !ok(v))
    return fmt::format("expected {}, got '{}'", what, s);
  return {};
}

// A UINT option's text: decimal digits, or hex after 0x, at most 2^64-1; rewritten in decimal
// (so that CLI11 cannot read a leading 0 as octal).
std::string unsigned_check(std::string& s) {
  const bool hex = s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
  const std::string digits = hex ? s.substr(2) : s;
  if (digits.empty() ||
      digits.find_first_not_of(hex ? "0123456789abcdefABCDEF" : "0123456789") != std::string::npos)
    return fmt::format("expected a non-negative integer, got '{}'", s);
  errno = 0;
  const unsigned long long v = std::strtoull(digits.c_str(), nullptr, hex ? 16 : 10);
  if (errno == ERANGE)
    return fmt::format("expected a non-negative integer at most {}, got '{}'", UINT64_MAX, s);
  s = std::to_string(v);
  return {};
}

// An INT option's text: an optional sign, then decimal digits or hex after 0x, within 64 bits
// (CLI11 alone clamps 10^20 to 2^63-1 and reads a leading 0 as octal); rewritten in decimal.
// Narrower targets (int) are range-checked by CLI11's conversion itself.
std::string signed_check(std::string& s) {
  const bool neg = !s.empty() && s[0] == '-';
  std::string body = !s.empty() && (s[0] == '-' || s[0] == '+') ? s.substr(1) : s;
  const bool hex = body.size() > 2 && body[0] == '0' && (body[1] == 'x' || body[1] == 'X');
  if (hex) body = body.substr(2);
  if (body.empty() ||
      body.find_first_not_of(hex ? "0123456789abcdefABCDEF" : "0123456789") != std::string::npos)
    return fmt::format("expected an integer, got '{}'", s);
  errno = 0;
  const unsigned long long m = std::strtoull(body.c_str(), nullptr, hex ? 16 : 10);
  if (errno == ERANGE || m > uint64_t(INT64_MAX) + (neg ? 1 : 0))
    return fmt::format("expected an integer in [{}, {}], got '{}'", INT64_MIN, INT64_MAX, s);
  s = neg ? (m == uint64_t(INT64_MAX) + 1 ? std::to_string(INT64_MIN)
                                          : std::to_string(-int64_t(m)))
          : std::to_string(m);
  return {};
}

// A switch's value (`--jsonl=VALUE`, `jsonl = VALUE` in --config): a yes or a no. CLI11 alone
// reads any integer as a count, so `fp32-moments = 7` was on and a typo'd `= 0.5` an error
// far from its cause. `negated`: a switch with a --no-... name, whose value CLI11 has already
// negated ("1" to "-1", "7" to "-7") when it names that form.
std::string switch_check(std::string& s, bool negated) {
  static const std::set<std::string> words = {"true", "false", "yes", "no", "on", "off", "1", "0"};
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  const bool minus = negated && lower.starts_with('-');
  if (words.count(minus ? lower.substr(1) : lower) == 0)
    return fmt::format("expected true or false (yes/no, on/off, 1/0), got '{}'",
                       minus ? s.substr(1) : s);
  return {};
}

// Stricter readings of CLI11's options, added to every tool before parsing: integers (whole
// text, 64-bit range, no octal), and switches (a yes or a no; a counting flag such as -v,
// which takes every occurrence, is left alone).
void guard_options(CLI::App& app) {
  static const CLI::Validator guard_u(unsigned_check, "");   // no change to --help
  static const CLI::Validator guard_s(signed_check, "");
  static const CLI::Validator guard_b([](std::string& v) { return switch_check(v, false); }, "");
  static const CLI::Validator guard_nb([](std::string& v) { return switch_check(v, true); }, "");
  for (CLI::Option* o : app.get_options()) {
    const std::string t = o->get_type_name();
    if (o->get_expected_max() == 0) {
      if (o->get_multi_option_policy() != CLI::MultiOptionPolicy::TakeAll)
        o->transform(o->get_fnames().empty() ? guard_b : guard_nb);
    } else if (t.rfind("UINT", 0) == 0) {
      o->transform(guard_u);
    } else if (t.rfind("INT", 0) == 0) {
      o->transform(guard_s);
    }
  }
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) guard_options(*sub);
}

}  // namespace

const CLI::Validator& positive_number() {
  static const CLI::Validator v(
      [](std::string& s) {
        return number_check(s, [](double x) { return x > 0; }, "a positive number");
      },
      "POSITIVE");
  return v;
}

const CLI::Validator& non_negative_number() {
  static const CLI::Validator v(
      [](std::string& s) {
        return number_check(s, [](double x) { return x >= 0; }, "a non-negative number");
      },
      "NONNEGATIVE");
  return v;
}

namespace {

// CLI11's words for a key or section of a --config file that names no flag, said plainly.
// `first_sub`: the name of the tool's first subcommand, "" for a tool without.
std::string config_error_message(const std::string& msg, const std::string& first_sub) {
  const std::string_view lead = "INI was not able to parse ";
  if (msg.rfind(lead, 0) != 0) return msg;
  std::string key = msg.substr(lead.size());
  if (key.ends_with(".++"))
    return fmt::format("unknown section [{}]", key.substr(0, key.size() - 3));
  std::string section;
  if (const size_t dot = key.rfind('.'); dot != std::string::npos) {
    section = fmt::format(" in section [{}]", key.substr(0, dot));
    key = key.substr(dot + 1);
  }
  return fmt::format("unknown key '{}'{} (keys are long flag names without the dashes{})", key,
                     section,
                     first_sub.empty() || !section.empty()
                         ? std::string()
                         : fmt::format("; a subcommand's go in its section, as [{}]", first_sub));
}

// The --config file given, if any.
std::string config_file(const CLI::App& app) {
  try {
    if (const CLI::Option* c = app.get_config_ptr(); c != nullptr && c->count() > 0)
      return c->as<std::string>();
  } catch (const CLI::Error&) {
  }
  return "";
}

// " (set in --config FILE)" when the flag an error begins with ("--lr nan: ...", "Could not
// convert: --lr = x") is a key of the --config file and absent from the command line: the
// value the message quotes is the file's.
std::string config_origin(const CLI::App& app, std::string_view msg, int argc, char** argv) {
  const std::string file = config_file(app);
  if (file.empty()) return "";
  if (msg.starts_with("Could not convert: ")) msg.remove_prefix(19);
  if (!msg.starts_with("--")) return "";
  const std::string flag(msg.substr(0, msg.find_first_of(":= ")));
  const CLI::Option* opt = app.get_option_no_throw(flag);
  if (opt == nullptr) return "";
  // on the command line under any of its names: --name, --name=V, --negated-name, -s, -sV
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--") break;
    if (a.starts_with("--")) {
      if (opt->check_lname(std::string(a.substr(2, a.find('=') - 2)))) return "";
    } else if (a.size() >= 2 && a[0] == '-' && opt->check_sname(std::string(1, a[1]))) {
      return "";
    }
  }
  try {
    for (const CLI::ConfigItem& item : app.get_config_formatter_base()->from_file(file))
      if (item.parents.empty() && "--" + item.name == flag)
        return fmt::format(" (set in --config {})", file);
  } catch (const std::exception&) {   // the file was read once already; no annotation then
  }
  return "";
}

// A tool that starts a world of ranks (its flags include add_dist_options' --pp).
bool starts_world(CLI::App& app) { return app.get_option_no_throw("--pp") != nullptr; }

// Every flag that must agree between the ranks, (name, value as given or its default), for
// dist::set_run_flags; the per-process ones are left out.
std::vector<std::pair<std::string, std::string>> run_flags(CLI::App& app) {
  static const std::set<std::string> per_process = {
      "--help", "--version", "--config", "--log-level", "--verbose", "--quiet",
      "--threads", "--rank", "--local-rank"};
  std::vector<std::pair<std::string, std::string>> out;
  for (const CLI::Option* opt : app.get_options()) {
    const std::string name = opt->get_name();
    if (per_process.count(name) != 0) continue;
    std::string value;
    if (opt->count() == 0) {
      value = opt->get_default_str();
    } else {
      for (const std::string& r : opt->results()) value += (value.empty() ? "" : ",") + r;
    }
    out.emplace_back(name, value);
  }
  return out;
}

// A multi-rank launch, before its world exists (MPI starts later, in the tool's body): the
// logs carry the rank the launcher gave and only rank 0 logs below warnings, as once the world
// is up, so that lines such as the --resume decision are not printed by every rank untagged.
// (An inconsistent launch environment is left for the world's start to report.)
void tag_rank_early() {
  try {
    const dist::LaunchInfo li = dist::detect_launch(dist::LaunchOptions{});
    if (li.world_size > 1) log::set_rank(li.rank, li.world_size);
  } catch (const ds::Error&) {
  }
}

// After an error: every rank of a multi-rank launch ends (dist::abort_world), including, for a
// tool that starts a world, the ranks already waiting in MPI_Init for this one.
void end_ranks(CLI::App& app, int exit_code) {
  if (starts_world(app)) dist::abort_launch(exit_code);
  else dist::abort_world(exit_code);
}

}  // namespace

int run_tool(CLI::App& app, int argc, char** argv, const CommonOptions& opts,
             const std::function<void()>& body) {
  const std::string name = app.get_name();
  guard_options(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ConfigError& e) {   // CLI11's message does not name the file
    const std::string file = config_file(app);
    const std::vector<CLI::App*> subs = app.get_subcommands({});
    const std::string msg =
        printable(config_error_message(e.what(), subs.empty() ? "" : subs[0]->get_name()));
    std::fprintf(stderr, "%s: error: --config %s: %s\n", name.c_str(),
                 file.empty() ? "?" : file.c_str(), msg.c_str());
    end_ranks(app, kExitUsage);
    return kExitUsage;
  } catch (const CLI::ParseError& e) {
    // a key twice in the config file reads as the flag given twice: say where to look
    const std::string file = config_file(app);
    const bool twice = std::string_view(e.what()).find("At Most 1 required") != std::string::npos;
    std::string where;
    if (!file.empty() && twice)
      where = fmt::format("; a flag given twice, on the command line or in --config {}", file);
    else
      where = config_origin(app, e.what(), argc, argv);
    std::fprintf(stderr, "%s: error: %s%s (see '%s --help')\n", name.c_str(),
                 printable(e.what()).c_str(), where.c_str(), name.c_str());
    end_ranks(app, kExitUsage);
    return kExitUsage;
  }
  try {
    if (starts_world(app)) dist::set_run_flags(run_flags(app));
    apply_common_options(opts);
    if (starts_world(app)) tag_rank_early();
    body();
    // Results written to a full disk or a broken file are lost: that is a failed run.
    std::cout.flush();
    errno = 0;
    if (std::fflush(stdout) != 0 || std::ferror(stdout) || !std::cout.good())
      DS_THROW(IoError, "stdout: write failed{}",
               errno ? ": " + std::string(std::strerror(errno)) : std::string());
    return kExitOk;
  } catch (const ds::Error& e) {
    const std::string origin =
        e.exit_code() == kExitUsage ? config_origin(app, e.what(), argc, argv) : std::string();
    std::fprintf(stderr, "%s: error: %s%s%s\n", name.c_str(), log::rank_tag().c_str(),
                 printable(e.what()).c_str(), origin.c_str());
    SPDLOG_DEBUG("raised at {}:{} ({})", e.src_file(), e.src_line(), e.subsystem());
    // one failing rank must not leave the others waiting in a collective (or in MPI_Init)
    end_ranks(app, e.exit_code());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: error: out of memory\n", name.c_str());
    end_ranks(app, kExitRuntime);
    return kExitRuntime;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name.c_str(), printable(e.what()).c_str());
    end_ranks(app, kExitRuntime);
    return kExitRuntime;
  }
}

}  // namespace ds::cli
