// Numeric flag checks of the training tools (see include/ds/train/flag_checks.hpp).
#include "ds/train/flag_checks.hpp"

#include <cmath>
#include <filesystem>

#include "ds/core/error.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"

namespace ds::train {

namespace fs = std::filesystem;

void check_flag_value(double v, const char* flag, bool positive) {
  if (!std::isfinite(v) || v < 0 || (positive && v == 0))
    DS_THROW(UsageError, "{} {}: expected a finite number {} 0", flag, v, positive ? ">" : ">=");
}

void check_flag_count(int64_t v, const char* flag, int64_t min) {
  if (v < min) DS_THROW(UsageError, "{} {}: expected an integer >= {}", flag, v, min);
}

void check_out_beside_init(const std::string& out, const std::string& init) {
  const fs::path ckpt = io::checkpoint_in(init).value_or(init);
  if (io::is_inside(out, ckpt))
    DS_THROW(UsageError, "--out {}: inside the --init checkpoint {} (write the run elsewhere)",
             out, ckpt.string());
  if (io::is_inside(ckpt, out))
    DS_THROW(UsageError, "--out {}: holds the --init checkpoint {} (write the run elsewhere)",
             out, ckpt.string());
}

void check_metrics_path(const std::string& metrics, const std::string& out,
                        const std::vector<std::pair<std::string, const char*>>& inputs) {
  if (metrics.empty()) return;
  std::error_code ec;
  if (fs::is_directory(metrics, ec))
    DS_THROW(UsageError, "--metrics {}: a directory (a JSONL file is written)", metrics);
  if (!out.empty() && io::is_inside(out, metrics))
    DS_THROW(UsageError, "--metrics {}: the --out directory {} (or holds it)", metrics, out);
  if (!out.empty() && io::is_inside(metrics, out)) {
    // where checkpoints (step-*) and their staging directories (.step-*.tmp.*) are published,
    // replaced and deleted by --keep-last, the file would go with them
    const fs::path rel =
        io::resolved_path(metrics, ec).lexically_relative(io::resolved_path(out, ec));
    const std::string first = rel.empty() ? std::string() : rel.begin()->string();
    if (io::checkpoint_step(first) ||
        (first.starts_with(".step-") && first.find(".tmp.") != std::string::npos))
      DS_THROW(UsageError, "--metrics {}: inside --out's checkpoint namespace ({}), where "
               "checkpoints are replaced and deleted; write it beside them (e.g. {})", metrics,
               first, (fs::path(out) / "metrics.jsonl").string());
  }
  for (const auto& [dir, flag] : inputs)
    if (!dir.empty() && io::is_inside(metrics, dir))
      DS_THROW(UsageError, "--metrics {}: inside the {} input {} (inputs are never written)",
               metrics, flag, dir);
}

}  // namespace ds::train
