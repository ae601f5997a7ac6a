// libFuzzer target for the small JSON files a run reads back: the first input byte picks the
// reader, the rest is the file:
//   0: training_state/trainer_state.json through train::parse_trainer_state;
//   1: a metrics JSONL file cut back by MetricsWriter::open on resume (the step from byte 2);
//   2: a dataset's manifest.json through data::Manifest::load.
// A malformed file may only ever raise ds::Error; an accepted one must keep the reader's
// promises (checked below). Formats: docs/formats.md ("Training checkpoints", "Metrics",
// "Dataset manifest").
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "ds/core/error.hpp"
#include "ds/data/shard.hpp"
#include "ds/train/metrics.hpp"
#include "ds/train/state.hpp"
#include "fuzz_scratch.hpp"

namespace {

const std::filesystem::path& scratch_path() {
  static const std::filesystem::path p = ds_fuzz::scratch_path("run_file", ".json");
  return p;
}

std::string read_back(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void check_state(std::string_view text) {
  const auto st = ds::train::parse_trainer_state(std::string(text), "fuzz.json");
  if (st.step < 0 || st.tokens_seen < 0 || st.nonfinite_skipped < 0 || st.optimizer_steps < 0 ||
      st.seq_len < 0 || st.total_steps < 0 || st.total_tokens < 0 || st.data.epoch < 0 ||
      st.data.position < 0)
    __builtin_trap();   // counters are never negative
}

// An accepted metrics file keeps exactly its lines up to the step, each unchanged.
void check_metrics(std::string_view text, int64_t step) {
  const auto& p = scratch_path();
  ds_fuzz::write_file(p, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  {
    ds::train::MetricsWriter w;
    w.open(p.string(), step);
  }
  const std::string kept = read_back(p);
  if (kept.size() > text.size() + 1) __builtin_trap();   // only ever drops lines (+ final \n)
  if (!kept.empty() && kept.back() != '\n') __builtin_trap();   // the next append starts a line
  std::istringstream lines(kept);
  for (std::string line; std::getline(lines, line);)
    if (line.empty() || text.find(line) == std::string_view::npos) __builtin_trap();
}

void check_manifest(std::string_view text) {
  const auto& p = scratch_path();
  ds_fuzz::write_file(p, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  const auto m = ds::data::Manifest::load(p);
  uint64_t tokens = 0, documents = 0;
  for (const auto& s : m.shards) {
    if (s.file.empty() || s.file.front() == '/') __builtin_trap();   // stays in the directory
    tokens += s.tokens;
    documents += s.documents;
  }
  if (tokens != m.tokens || documents != m.documents) __builtin_trap();
  m.save(p);                                   // an accepted manifest writes back to itself
  const auto again = ds::data::Manifest::load(p);
  if (again.tokens != m.tokens || again.shards.size() != m.shards.size() ||
      again.tokenizer_fingerprint != m.tokenizer_fingerprint || again.extra_json != m.extra_json)
    __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 2, size - 2);
  try {
    switch (data[0] % 3) {
      case 0: check_state(text); break;
      case 1: check_metrics(text, int64_t(data[1] % 8)); break;
      default: check_manifest(text); break;
    }
  } catch (const ds::Error&) {
    // expected for malformed input; anything else propagates and crashes the fuzzer
  }
  return 0;
}
