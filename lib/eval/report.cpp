// Evaluation report JSON and --log-samples records (see include/ds/eval/report.hpp).
// reference: spec §6.
#include "ds/eval/report.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/io/file.hpp"
#include "ds/io/staging.hpp"

namespace ds::eval {

using nlohmann::json;

json EvalReport::to_json() const {
  json j;
  j["ds_eval_report_version"] = kReportVersion;
  j["task"] = task;
  j["task_file"] = task_file;
  j["task_fingerprint"] = task_fingerprint;
  j["checkpoint_fingerprint"] = checkpoint_fingerprint;
  j["settings"] = settings;
  json m = json::object();
  for (const Metric& x : metrics) {
    json v;
    v["value"] = x.value;
    v["stderr"] = x.stderr_ ? json(*x.stderr_) : json(nullptr);
    m[x.name] = v;
  }
  j["metrics"] = m;
  json c = json::object();
  for (const auto& [k, v] : counts) c[k] = v;
  j["counts"] = c;
  if (!samples_fingerprint.empty()) j["samples_fingerprint"] = samples_fingerprint;
  return j;
}

std::string EvalReport::dump() const {
  // NaN is not JSON: nlohmann writes null for it.
  return to_json().dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string file_fingerprint(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    return hex64(xxh64(io::read_input(path)));   // the bytes the task was read from
  std::ifstream f(path, std::ios::binary);
  if (!f) DS_THROW(IoError, "{}: cannot open: {}", path.string(), std::strerror(errno));
  Xxh64Stream h;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    h.update(buf.data(), size_t(f.gcount()));
  }
  if (f.bad()) DS_THROW(IoError, "{}: read error", path.string());
  return hex64(h.digest());
}

json mc_sample_record(size_t index, const McItem& item, const McRequest& request,
                      std::span<const double> loglik, const McOutcome& outcome) {
  json j;
  j["index"] = index;
  j["line"] = item.line;
  j["prompt"] = request.prompt;
  j["continuations"] = request.continuations;
  j["loglik"] = std::vector<double>(loglik.begin(), loglik.end());
  j["gold"] = item.gold;
  j["pred"] = outcome.pred;
  j["pred_norm"] = outcome.pred_norm;
  j["acc"] = outcome.correct ? 1 : 0;
  j["acc_norm"] = outcome.correct_norm ? 1 : 0;
  return j;
}

json gen_sample_record(size_t index, const GenItem& item, const std::string& prompt,
                       const std::string& completion,
                       const std::optional<std::string>& prediction, bool correct,
                       const std::string& finish_reason) {
  json j;
  j["index"] = index;
  j["line"] = item.line;
  j["prompt"] = prompt;
  j["completion"] = completion;
  j["prediction"] = prediction ? json(*prediction) : json(nullptr);
  j["gold"] = item.gold;
  j["exact_match"] = correct ? 1 : 0;
  j["finish_reason"] = finish_reason;
  return j;
}

// The file is opened at the first record (or at close), not at construction: records come at
// the end of an evaluation, and a run killed while it scores leaves no temporary file behind.
struct SampleLog::Impl {
  std::filesystem::path path;
  std::optional<io::AtomicFile> file;
  Xxh64Stream hash;
  bool open = true;
  io::AtomicFile& get() {
    if (!file) file.emplace(path);
    return *file;
  }
};

SampleLog::SampleLog(const std::filesystem::path& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  io::remove_stale_temp_files(path);   // a killed run's temporary sample log
}
SampleLog::~SampleLog() = default;

void SampleLog::write(const json& record) {
  DS_CHECK(impl_->open, "SampleLog::write after close");
  // Invalid UTF-8 in model output is replaced rather than aborting the run.
  const std::string line = record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  impl_->get().write(line);
  impl_->hash.update(line.data(), line.size());
}

std::string SampleLog::fingerprint() const { return hex64(impl_->hash.digest()); }

void SampleLog::close() {
  if (!impl_->open) return;
  impl_->get().commit();
  impl_->open = false;
}

void SampleLog::withdraw() noexcept {
  if (impl_->open) return;   // nothing published (the temporary file goes with the object)
  std::error_code ec;
  std::filesystem::remove(impl_->path, ec);
}

}  // namespace ds::eval
