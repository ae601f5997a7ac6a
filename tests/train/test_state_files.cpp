// The run files a resume reads back: trainer_state.json (parse_trainer_state) and the metrics
// JSONL cut back to the checkpoint's step (MetricsWriter::open). Malformed values are a
// FormatError naming the file and field, never truncated, wrapped or left to nlohmann.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "../temp_dir.hpp"
#include "ds/core/error.hpp"
#include "ds/train/metrics.hpp"
#include "ds/train/state.hpp"

using ds::testing::TempDir;
using ds::train::parse_trainer_state;

namespace {

// A valid state, with the member of `key` replaced by `member` ("" leaves it out).
std::string state_with(const std::string& key = "", const std::string& member = "") {
  const std::pair<const char*, const char*> fields[] = {
      {"format", R"("format":"ds-trainer-state")"}, {"version", R"("version":2)"},
      {"kind", R"("kind":"sft")"}, {"step", R"("step":12)"},
      {"tokens_seen", R"("tokens_seen":3072)"},
      {"data", R"("data":{"epoch":1,"position":4})"},
      {"nonfinite_skipped", R"("nonfinite_skipped":1)"},
      {"optimizer_steps", R"("optimizer_steps":11)"}, {"seed", R"("seed":18446744073709551615)"},
      {"seq_len", R"("seq_len":256)"}, {"total_steps", R"("total_steps":100)"},
      {"total_tokens", R"("total_tokens":0)"},
      {"data_fingerprint", R"("data_fingerprint":"0123456789abcdef")"},
      {"packing", R"("packing":"best-fit")"}};
  std::string s = "{";
  for (const auto& [k, m] : fields) {
    const std::string v = k == key ? member : m;
    if (v.empty()) continue;   // the field left out
    s += (s.size() > 1 ? "," : "") + v;
  }
  return s + "}";
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("trainer state: every field read back") {
  const auto st = parse_trainer_state(state_with(), "state.json");
  CHECK(st.kind == "sft");
  CHECK(st.step == 12);
  CHECK(st.tokens_seen == 3072);
  CHECK(st.data.epoch == 1);
  CHECK(st.data.position == 4);
  CHECK(st.nonfinite_skipped == 1);
  CHECK(st.optimizer_steps == 11);
  CHECK(st.seed == 18446744073709551615ull);
  CHECK(st.seq_len == 256);
  CHECK(st.total_steps == 100);
  CHECK(st.total_tokens == 0);
  CHECK(st.data_fingerprint == "0123456789abcdef");
  CHECK(st.packing == "best-fit");
  CHECK(parse_trainer_state(state_with("data_fingerprint", ""), "s").data_fingerprint.empty());
  // version 1 without the field: stride rows; version 2 needs best-fit
  std::string v1 = state_with("packing", "");
  v1.replace(v1.find(R"("version":2)"), 11, R"("version":1)");
  CHECK(parse_trainer_state(v1, "s").packing.empty());
  CHECK_THROWS_WITH_AS(parse_trainer_state(state_with("packing", ""), "s"),
                       doctest::Contains("version 2 with packing"), ds::FormatError);
}

TEST_CASE("trainer state: a data mixture's positions, version 3") {
  const char* three = R"("data":{"epoch":1,"position":4,"sources":[{"epoch":1,"position":4},)"
                      R"({"epoch":0,"position":9},{"epoch":2,"position":0}]})";
  std::string v3 = state_with("data", three);
  v3.replace(v3.find(R"("version":2)"), 11, R"("version":3)");
  const auto st = parse_trainer_state(v3, "s");
  REQUIRE(st.data_sources.size() == 3);
  CHECK(st.data_sources[1].epoch == 0);
  CHECK(st.data_sources[1].position == 9);
  CHECK(st.data_sources[2].epoch == 2);
  CHECK(st.data.position == 4);
  // the sources need version 3, version 3 needs them; the first is `data` itself; two or more
  CHECK_THROWS_WITH_AS(parse_trainer_state(state_with("data", three), "s"),
                       doctest::Contains("version 2 with packing \"best-fit\", 3 data"),
                       ds::FormatError);
  std::string v3_plain = state_with();
  v3_plain.replace(v3_plain.find(R"("version":2)"), 11, R"("version":3)");
  CHECK_THROWS_WITH_AS(parse_trainer_state(v3_plain, "s"), doctest::Contains("version 3 with"),
                       ds::FormatError);
  const std::pair<const char*, const char*> bad[] = {
      {R"("data":{"epoch":1,"position":4,"sources":[{"epoch":1,"position":4}]})",
       "holds 1 position(s)"},
      {R"("data":{"epoch":1,"position":4,"sources":[{"epoch":1,"position":5},)"
       R"({"epoch":0,"position":9}]})", "'data.sources[0]' is not 'data'"},
      {R"("data":{"epoch":1,"position":4,"sources":[{"epoch":1,"position":4},)"
       R"({"epoch":0,"position":-9}]})", "field 'data.sources[1].position'"},
      {R"("data":{"epoch":1,"position":4,"sources":{"epoch":1}})", "field 'data.sources'"},
  };
  for (const auto& [data, says] : bad) {
    std::string s = state_with("data", data);
    s.replace(s.find(R"("version":2)"), 11, R"("version":3)");
    CHECK_THROWS_WITH_AS(parse_trainer_state(s, "s"), doctest::Contains(says), ds::FormatError);
  }
}

TEST_CASE("trainer state: a data seed of its own, version 4") {
  // state_with's seed is 2^64-1
  std::string v4 = state_with("packing", R"("packing":"best-fit","data_seed":8)");
  v4.replace(v4.find(R"("version":2)"), 11, R"("version":4)");
  const auto st = parse_trainer_state(v4, "s");
  CHECK(st.data_seed == std::optional<uint64_t>(8));
  CHECK(st.packing == "best-fit");
  CHECK_FALSE(parse_trainer_state(state_with(), "s").data_seed.has_value());
  // a data_seed of its own needs version 4, version 4 needs one; equal to seed it is none
  CHECK_THROWS_WITH_AS(
      parse_trainer_state(state_with("packing", R"("packing":"best-fit","data_seed":8)"), "s"),
      doctest::Contains("a data_seed of its own"), ds::FormatError);
  std::string same = state_with("packing", R"("packing":"best-fit",)"
                                           R"("data_seed":18446744073709551615)");
  CHECK(parse_trainer_state(same, "s").data_seed.has_value());
  same.replace(same.find(R"("version":2)"), 11, R"("version":4)");
  CHECK_THROWS_WITH_AS(parse_trainer_state(same, "s"), doctest::Contains("version 4 with"),
                       ds::FormatError);
  std::string neg = state_with("packing", R"("packing":"best-fit","data_seed":-8)");
  neg.replace(neg.find(R"("version":2)"), 11, R"("version":4)");
  CHECK_THROWS_WITH_AS(parse_trainer_state(neg, "s"), doctest::Contains("field 'data_seed'"),
                       ds::FormatError);
}

TEST_CASE("trainer state: an evaluation left pending, the metrics line of its step") {
  const auto st = parse_trainer_state(
      state_with("packing", R"("packing":"best-fit","pending_metrics":{"step":12,"loss":2.5})"),
      "s");
  CHECK(nlohmann::json::parse(st.pending_metrics) ==
        nlohmann::json{{"step", 12}, {"loss", 2.5}});
  CHECK(parse_trainer_state(state_with(), "s").pending_metrics.empty());
  CHECK_THROWS_WITH_AS(
      parse_trainer_state(state_with("packing", R"("packing":"best-fit","pending_metrics":3)"),
                          "s"),
      doctest::Contains("field 'pending_metrics' must be an object"), ds::FormatError);
  CHECK_THROWS_WITH_AS(
      parse_trainer_state(
          state_with("packing", R"("packing":"best-fit","pending_metrics":{"step":11})"), "s"),
      doctest::Contains("'pending_metrics.step' is not the state's step 12"), ds::FormatError);
}

TEST_CASE("trainer state: malformed values are format errors naming the field") {
  struct Bad { const char* key; const char* member; const char* says; };
  const Bad bad[] = {
      {"format", R"("format":7)", "field 'format'"},
      {"format", "", "field 'format'"},
      {"version", R"("version":3)", "version 3"},
      {"version", R"("version":4)", "version 4"},
      {"version", R"("version":5)", "unsupported trainer state version 5"},
      {"version", R"("version":1)", "version 1 with packing \"best-fit\""},
      {"version", "", "missing field 'version'"},
      {"step", R"("step":1.5)", "field 'step'"},
      {"step", R"("step":1e30)", "field 'step'"},
      {"step", R"("step":-3)", "field 'step'"},
      {"step", R"("step":9223372036854775808)", "field 'step'"},
      {"step", R"("step":"12")", "field 'step'"},
      {"step", "", "missing field 'step'"},
      {"seed", R"("seed":-1)", "field 'seed'"},
      {"kind", R"("kind":null)", "field 'kind'"},
      {"data_fingerprint", R"("data_fingerprint":5)", "field 'data_fingerprint'"},
      {"packing", R"("packing":"first-fit")", "field 'packing'"},
      {"packing", R"("packing":1)", "field 'packing'"},
      {"data", R"("data":[1,4])", "field 'data'"},
      {"data", R"("data":{"epoch":"1","position":4})", "field 'data.epoch'"},
      {"data", R"("data":{"epoch":1})", "missing field 'data.position'"},
      {"data", R"("data":{"epoch":1,"position":-4})", "field 'data.position'"},
  };
  for (const auto& b : bad) {
    INFO(std::string(b.member));
    CHECK_THROWS_WITH_AS(parse_trainer_state(state_with(b.key, b.member), "dir/state.json"),
                         doctest::Contains("dir/state.json: "),
                         ds::FormatError);
    CHECK_THROWS_WITH_AS(parse_trainer_state(state_with(b.key, b.member), "dir/state.json"),
                         doctest::Contains(b.says), ds::FormatError);
  }
  for (const char* text : {"", "[]", "{", "12", R"({"format":"ds-trainer-state")"})
    CHECK_THROWS_AS(parse_trainer_state(text, "s"), ds::FormatError);
}

TEST_CASE("metrics file: a resume keeps the lines up to its step") {
  TempDir d("metrics");
  const std::string lines = "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2}\n\n"
                            "{\"step\":3,\"loss\":1}\n{\"step\":18446744073709551615}\n";
  const auto p = d.write("m.jsonl", lines);
  {
    ds::train::MetricsWriter w;
    w.open(p.string(), 2);
    w.write("{\"step\":3,\"loss\":0.5}");
  }
  CHECK(slurp(p) ==
        "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2}\n{\"step\":3,\"loss\":0.5}\n");
}

TEST_CASE("metrics file: one a failed run created and left empty is removed, no other") {
  TempDir d("metrics");
  const std::filesystem::path p = d.path() / "sub" / "m.jsonl";
  auto fail_after = [&](bool write_one) {
    try {
      ds::train::MetricsWriter w;
      w.open(p.string());
      if (write_one) w.write("{\"step\":1}");
      throw ds::NumericsError("step 1: loss is NaN");
    } catch (const ds::NumericsError&) {
    }
  };
  fail_after(false);
  CHECK_FALSE(std::filesystem::exists(p));   // created by the run, nothing written: gone
  fail_after(true);
  CHECK(slurp(p) == "{\"step\":1}\n");    // a line written: kept
  std::filesystem::resize_file(p, 0);
  fail_after(false);
  CHECK(std::filesystem::exists(p));         // there before the run: kept, empty or not
  std::filesystem::remove(p);
  {
    ds::train::MetricsWriter w;               // a run that ends normally keeps its empty file
    w.open(p.string());
  }
  CHECK(std::filesystem::exists(p));
  // a dangling symbolic link: its target is created (O_EXCL refuses the link itself)
  const std::filesystem::path link = d.path() / "link.jsonl";
  std::filesystem::create_symlink(d.path() / "target.jsonl", link);
  {
    ds::train::MetricsWriter w;
    w.open(link.string());
    w.write("{\"step\":1}");
  }
  CHECK(slurp(d.path() / "target.jsonl") == "{\"step\":1}\n");
  CHECK(std::filesystem::is_symlink(link));
}

TEST_CASE("metrics file: a line without an integer step stops the resume, file untouched") {
  TempDir d("metrics");
  for (const char* line : {"{\"step\":\"2\"}", "{\"step\":2.5}", "[1,2]", "{\"loss\":1}",
                           "{\"step\":", "7"}) {
    const std::string text = std::string("{\"step\":1}\n") + line + "\n{\"step\":3}\n";
    const auto p = d.write("m.jsonl", text);
    ds::train::MetricsWriter w;
    INFO(std::string(line));
    CHECK_THROWS_WITH_AS(w.open(p.string(), 1),
                         doctest::Contains("m.jsonl:2: not a metrics line"), ds::FormatError);
    CHECK(slurp(p) == text);
  }
}

TEST_CASE("metrics file: blank lines and a missing last newline are mended, nothing dropped") {
  TempDir d("metrics");
  // A blank line alone, blank lines between kept lines, and a last line cut before its
  // newline (the next append would otherwise join it): all come back as whole lines.
  const std::pair<const char*, const char*> cases[] = {
      {"\n", ""},
      {"{\"step\":1}\n\n\n{\"step\":2}\n", "{\"step\":1}\n{\"step\":2}\n"},
      {"{\"step\":1}\n{\"step\":2}", "{\"step\":1}\n{\"step\":2}\n"},
      {"{\"step\":1}\n", "{\"step\":1}\n"}};
  for (const auto& c : cases) {
    const auto p = d.write("m.jsonl", c.first);
    {
      ds::train::MetricsWriter w;
      w.open(p.string(), 5);
      w.write("{\"step\":6}");
    }
    INFO(std::string(c.first));
    CHECK(slurp(p) == std::string(c.second) + "{\"step\":6}\n");
  }
}

TEST_CASE("metrics file: a torn last line (a write cut short) is dropped, not a stop") {
  TempDir d("metrics");
  const auto p = d.write("m.jsonl", "{\"step\":1}\n{\"step\":2,\"lo");
  {
    ds::train::MetricsWriter w;
    w.open(p.string(), 1);
    w.write("{\"step\":2}");
  }
  CHECK(slurp(p) == "{\"step\":1}\n{\"step\":2}\n");
  // the same line inside the file is no torn write: the resume stops
  const auto q = d.write("n.jsonl", "{\"step\":1}\n{\"step\":2,\"lo\n");
  ds::train::MetricsWriter w;
  CHECK_THROWS_WITH_AS(w.open(q.string(), 1), doctest::Contains("n.jsonl:2: not a metrics line"),
                       ds::FormatError);
}

TEST_CASE("metrics file: a write to a full device fails naming the file") {
  if (!std::filesystem::exists("/dev/full")) {
    MESSAGE("skipped: no /dev/full");
    return;
  }
  ds::train::MetricsWriter w;
  w.open("/dev/full", 0);   // a device: appended to as it is, never read or rewritten
  CHECK_THROWS_WITH_AS(w.write("{\"step\":1}"), doctest::Contains("/dev/full: write failed"),
                       ds::IoError);
}

TEST_CASE("metrics file: a failed write is cut back off a regular file (file size limit)") {
  TempDir d("metrics");
  const auto p = d.write("m.jsonl", "{\"step\":1}\n");
  ds::train::MetricsWriter w;
  w.open(p.string(), 1);
  // RLIMIT_FSIZE stands in for a full disk: the line's first bytes are written, then EFBIG
  struct rlimit old {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 16;   // 11 bytes held: 5 more fit
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
  bool threw = false;
  try {
    w.write("{\"step\":2,\"loss\":1.5}");
  } catch (const ds::IoError& e) {
    threw = std::string(e.what()).find("m.jsonl: write failed") != std::string::npos;
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  CHECK(threw);
  CHECK(slurp(p) == "{\"step\":1}\n");   // not "{\"step\":1}\n{\"ste"
}

TEST_CASE("metrics file: /proc/self/fd/N (/dev/stdout) is written at its offset, not rewritten") {
  TempDir d("metrics");
  const auto p = d.write("out.log", "{\"step\":1}\n{\"step\":9}\n");   // `> out.log`, resumed
  const int fd = ::open(p.c_str(), O_WRONLY | O_APPEND);
  REQUIRE(fd >= 0);
  {
    ds::train::MetricsWriter w;
    w.open("/proc/self/fd/" + std::to_string(fd), 1);   // was: rewritten through the link
    w.write("{\"step\":2}");
  }
  ::close(fd);
  CHECK(slurp(p) == "{\"step\":1}\n{\"step\":9}\n{\"step\":2}\n");
}
