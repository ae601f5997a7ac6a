// Metrics: one JSON object per line (JSONL) appended to --metrics, written only by rank 0;
// and the human progress line on stderr (redrawn in place on a TTY, a log line otherwise).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace ds::train {

class MetricsWriter {
 public:
  MetricsWriter() = default;
  // Opens `path` for appending ("" = disabled). If truncate_after_step >= 0, lines whose
  // "step" is greater are dropped first (a resumed run rewrites the steps it repeats), with
  // blank lines and a torn last line (no newline, not JSON: a write cut short by a crash; its
  // step can only be past the checkpoint's).
  void open(const std::string& path, int64_t truncate_after_step = -1);
  // Closes the file; one this writer created is removed when it is still empty and the writer
  // is destroyed by an exception (the run failed before its first line).
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  // One object, no newline; written with one write(2). IoError if it fails, a regular file
  // first cut back to its size before the line (a full disk leaves no torn line behind).
  void write(const std::string& json_line);
  bool enabled() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
  std::string path_;
  bool created_ = false;          // open() created the file
  int exceptions_at_open_ = 0;    // std::uncaught_exceptions() then
};

class Progress {
 public:
  Progress(int64_t total_steps, int64_t log_every);
  // Draws "step s/N loss L lr R tok/s ETA" (TTY: in place; else every log_every steps).
  void update(int64_t step, double loss, double lr, double tokens_per_s);
  void finish();

 private:
  int64_t total_, log_every_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = -1;
};

std::string format_duration(double seconds);   // "1h02m", "3m05s", "12s"

}  // namespace ds::train
