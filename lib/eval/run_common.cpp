// Shared ds-eval plumbing (see run_internal.hpp).
// reference: include/ds/eval/run.hpp.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>
#include <utility>

#include "ds/core/error.hpp"
#include "ds/core/log.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"
#include "ds/io/staging.hpp"
#include "run_internal.hpp"

namespace ds::eval::detail {

namespace fs = std::filesystem;

namespace {

// Both name one file: the same existing file, or the same path once made absolute and normal.
bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  if (fs::equivalent(a, b, ec)) return true;
  return fs::absolute(a, ec).lexically_normal() == fs::absolute(b, ec).lexically_normal();
}

// Whether a file of this name is read from a checkpoint or dataset directory.
bool read_from_dir(const fs::path& file) {
  const std::string n = file.filename().string();
  return n == "config.json" || n == "tokenizer.json" || n == "tokenizer_config.json" ||
         n == "generation_config.json" || n == "manifest.json" || n.ends_with(".safetensors") ||
         n.ends_with(".safetensors.index.json") || n.ends_with(".dst");
}

}  // namespace

void check_common(const CommonEvalOptions& o) {
  if (o.device != "cpu" && o.device != "cuda")
    DS_THROW(UsageError, "--device {}: unknown device (cpu, cuda)", o.device);
  DS_CHECK_AS(UsageError, o.batch_size >= 1, "--batch-size must be >= 1 (got {})", o.batch_size);
  check_threads(o.threads);
  DS_CHECK_AS(UsageError, o.limit >= 0, "--limit must be >= 0 (got {})", o.limit);
  DS_CHECK_AS(UsageError, !o.model.empty(), "--model DIR is required");
  // the files written at the end: their directories must exist before the evaluation runs
  for (const auto& [path, flag] : {std::pair{o.out, "--out"}, {o.log_samples, "--log-samples"}}) {
    if (path.empty()) continue;
    const fs::path dir = fs::path(path).parent_path();
    std::error_code ec;
    DS_CHECK_AS(UsageError, !fs::is_directory(path, ec),
                "{} {}: is a directory (expected a file name)", flag, path);
    DS_CHECK_AS(UsageError, dir.empty() || fs::exists(dir, ec),
                "{} {}: directory {} does not exist", flag, path, dir.string());
    DS_CHECK_AS(UsageError, dir.empty() || fs::is_directory(dir, ec),
                "{} {}: {} is not a directory", flag, path, dir.string());
    // this process's stream (/dev/stdout), a FIFO or a device is written as it is; anything
    // else is renamed into place in its directory (through a link: the target's), which must
    // then be writable (a read-only file system too), or the whole evaluation would run
    // before the write fails
    if (io::open_fd_link(path) || (fs::exists(path, ec) && !fs::is_regular_file(path, ec)))
      continue;
    const fs::path real = io::write_target(path);
    const fs::path in = real.parent_path().empty() ? fs::path(".") : real.parent_path();
    DS_CHECK_AS(UsageError, ::access(in.c_str(), W_OK) == 0, "{} {}: cannot write in {} ({})",
                flag, path, in.string(), std::strerror(errno));
  }
  if (!o.out.empty() && !o.log_samples.empty())
    DS_CHECK_AS(UsageError, !same_file(o.out, o.log_samples),
                "--out {} and --log-samples {}: the same file", o.out, o.log_samples);
}

void check_outputs_not_inputs(const CommonEvalOptions& o, std::vector<std::string> inputs) {
  std::error_code ec;
  // the checkpoint directory the model is loaded from (a run directory's latest step)
  inputs.push_back(io::checkpoint_in(o.model).value_or(o.model).string());
  for (const auto& [path, flag] : {std::pair{o.out, "--out"}, {o.log_samples, "--log-samples"}}) {
    if (path.empty()) continue;
    // the name given and, through a symbolic link, the file the write replaces
    const fs::path real = io::write_target(path);
    for (const std::string& in : inputs) {
      if (in.empty()) continue;
      DS_CHECK_AS(UsageError, !same_file(path, in),
                  "{} {}: is the input file {} (it would be overwritten)", flag, path, in);
      for (const fs::path& p : {fs::path(path), real}) {
        const fs::path parent = fs::absolute(p, ec).parent_path();
        DS_CHECK_AS(UsageError, !(fs::is_directory(in, ec) && same_file(parent, in) &&
                                  read_from_dir(p)),
                    "{} {}: would overwrite {} of the input directory {}{}", flag, path,
                    p.filename().string(), in,
                    p == fs::path(path) ? "" : " (through a symbolic link)");
      }
    }
  }
}

ops::Context make_context(const CommonEvalOptions& o) {
  ops::Context ctx;
  ctx.device = o.device == "cuda" ? Device::cuda : Device::cpu;
  ops::init_device(ctx.device);
  ctx.threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  ops::set_cpu_threads(ctx.threads);
  return ctx;
}

model::Pretrained load_model_for_eval(const CommonEvalOptions& o) {
  model::PretrainedOptions po;
  po.load_mtp = false;   // evaluation uses the main model only
  po.device = o.device == "cuda" ? Device::cuda : Device::cpu;
  ops::init_device(po.device);
  return model::load_pretrained(o.model, po);
}

const tok::Tokenizer& tokenizer_of(const model::Pretrained& pt) {
  if (!pt.tokenizer)
    DS_THROW(FormatError, "{}: no tokenizer.json in the checkpoint directory", pt.dir.string());
  return *pt.tokenizer;
}

tok::TokenId bos_of(const model::Pretrained& pt) {
  if (pt.tokenizer)
    if (auto b = pt.tokenizer->bos_id()) return *b;
  return tok::TokenId(pt.args.bos_token_id);
}

tok::TokenId eos_of(const model::Pretrained& pt) {
  if (pt.tokenizer)
    if (auto e = pt.tokenizer->eos_id()) return *e;
  return tok::TokenId(pt.args.eos_token_id);
}

std::optional<tok::TokenId> text_bos(const model::Pretrained& pt) {
  if (!pt.add_bos_token) return std::nullopt;
  return bos_of(pt);
}

tok::TokenId document_start(const model::Pretrained& pt) {
  return pt.add_bos_token ? bos_of(pt) : eos_of(pt);
}

size_t limited(size_t n, int64_t limit) { return limit > 0 ? std::min(n, size_t(limit)) : n; }

void write_report(const EvalReport& report, const CommonEvalOptions& o, SampleLog* log) {
  EvalReport r = report;
  if (log) r.samples_fingerprint = log->fingerprint();
  const std::string text = r.dump();
  if (o.out.empty()) {
    if (log) log->close();
    std::cout << text << std::flush;
  } else {
    // Both files' bytes are on disk before either is published; should the report's rename
    // still fail after the log's, the log is taken back: no log without its report.
    io::remove_stale_temp_files(o.out);   // a killed run's report.json.tmp.HOST.PID.N
    io::AtomicFile out(o.out);
    out.write(text);
    out.sync();
    if (log) log->close();
    try {
      out.commit();
    } catch (...) {
      if (log) log->withdraw();
      throw;
    }
  }
  std::string summary;
  for (const Metric& m : r.metrics)
    summary += fmt::format("{}{} {:.6g}{}", summary.empty() ? "" : ", ", m.name, m.value,
                           m.stderr_ ? fmt::format(" ± {:.4g}", *m.stderr_) : "");
  spdlog::info("{}: {}", r.task, summary);
}

Progress::Progress(std::string label, size_t total, bool enabled)
    : label_(std::move(label)), total_(total), on_(enabled && total > 0 && log::stderr_is_tty()) {}

Progress::~Progress() {
  if (on_) std::fputs("\n", stderr);
}

void Progress::update(size_t done) {
  if (!on_) return;
  const auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const int width = 30, fill = int(double(width) * double(std::min(done, total_)) / double(total_));
  std::fprintf(stderr, "\r%s [%s%s] %zu/%zu", label_.c_str(),
               std::string(size_t(fill), '#').c_str(),
               std::string(size_t(width - fill), '.').c_str(), done, total_);
  std::fflush(stderr);
}

}  // namespace ds::eval::detail
