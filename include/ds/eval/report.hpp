// The machine-readable result of one ds-eval run: task, fingerprints of the task file and
// the checkpoint, settings, metrics with standard errors, counts; and the per-example JSONL
// records written with --log-samples.
// reference: spec §6 (metrics reported); lm-evaluation-harness results / samples layout.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ds/eval/gen_tasks.hpp"
#include "ds/eval/metrics.hpp"
#include "ds/eval/tasks.hpp"

namespace ds::eval {

inline constexpr int kReportVersion = 1;

struct Metric {
  std::string name;                  // "acc", "acc_norm", "exact_match", "bpb", ...
  double value = 0;
  std::optional<double> stderr_;     // absent where none is defined
};

struct EvalReport {
  std::string task;
  std::string task_file;
  std::string task_fingerprint;        // file_fingerprint(task_file)
  std::string checkpoint_fingerprint;  // passed in by the caller
  nlohmann::json settings = nlohmann::json::object();   // shots, seed, max_len, ...
  std::vector<Metric> metrics;
  std::vector<std::pair<std::string, uint64_t>> counts;  // "items", "tokens", ...
  // XXH64 of the --log-samples file's bytes ("" without one): a report and a sample log are
  // two files, so a run stopped between their two renames pairs a new log with an old report,
  // and this tells them apart
  std::string samples_fingerprint;

  void add(const std::string& name, const Estimate& e) {
    metrics.push_back({name, e.value, e.stderr_});
  }
  nlohmann::json to_json() const;
  std::string dump() const;   // to_json() pretty-printed, with a trailing newline
};

// XXH64 of the file bytes as 16 hex digits (streamed; IoError naming the path). A FIFO or pipe
// gives the bytes the task was read from (io::read_input), not a second, empty read.
std::string file_fingerprint(const std::filesystem::path& path);

// One --log-samples record per example.
nlohmann::json mc_sample_record(size_t index, const McItem& item, const McRequest& request,
                                std::span<const double> loglik, const McOutcome& outcome);
nlohmann::json gen_sample_record(size_t index, const GenItem& item, const std::string& prompt,
                                 const std::string& completion,
                                 const std::optional<std::string>& prediction, bool correct,
                                 const std::string& finish_reason);

// Writes records as JSON Lines, published atomically by close(); a writer destroyed
// without close() leaves no file.
class SampleLog {
 public:
  explicit SampleLog(const std::filesystem::path& path);
  ~SampleLog();
  SampleLog(const SampleLog&) = delete;
  SampleLog& operator=(const SampleLog&) = delete;
  void write(const nlohmann::json& record);
  void close();
  // Removes the file close() published (its report could not be): a log never stands alone.
  void withdraw() noexcept;
  // XXH64 of the bytes written so far (all of them once the last record is in), 16 hex digits.
  std::string fingerprint() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ds::eval
