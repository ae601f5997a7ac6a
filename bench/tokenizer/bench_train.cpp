// ds_bench_train: trains the byte-level BPE (BpeTrainer) on the given text files, writes
// tokenizer.json (+ tokenizer_config.json), and prints the wall-clock seconds of each run
// (add_text of every document + train(), files already in memory) and their median.
// Optionally encodes a held-out file with the trained tokenizer (ids to a file), which
// tests/tokenizer/hf_trainer_check.py compares with Hugging Face tokenizers.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/tokenizer/bpe_trainer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) DS_THROW(IoError, "{}: cannot open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  if (!out) DS_THROW(IoError, "{}: cannot write", path);
}

// Documents: whole files, or (--lines) every line with its '\n' (as HF's train() reads).
std::vector<std::string_view> documents(const std::vector<std::string>& texts, bool lines) {
  std::vector<std::string_view> docs;
  for (const auto& t : texts) {
    std::string_view s(t);
    if (!lines) { docs.push_back(s); continue; }
    while (!s.empty()) {
      size_t nl = s.find('\n');
      size_t n = nl == std::string_view::npos ? s.size() : nl + 1;
      docs.push_back(s.substr(0, n));
      s.remove_prefix(n);
    }
  }
  return docs;
}

int run(int argc, char** argv) {
  CLI::App app{"Time the ds byte-level BPE trainer"};
  size_t vocab = 32000;
  uint64_t min_freq = 2;
  int threads = 0, runs = 3;
  bool lines = false, progress = false;
  std::string out = "tokenizer.json", config_out, encode_in, encode_out;
  std::vector<std::string> files;
  app.add_option("--vocab-size", vocab, "total vocabulary size");
  app.add_option("--min-frequency", min_freq, "smallest pair count merged");
  app.add_option("--threads", threads, "counting threads (0 = all cores)");
  app.add_option("--runs", runs, "timed runs (the median is reported)")->check(CLI::PositiveNumber);
  app.add_flag("--lines", lines, "one document per line instead of per file");
  app.add_flag("--progress", progress, "progress on stderr (when it is a terminal)");
  app.add_option("--out", out, "tokenizer.json to write");
  app.add_option("--config-out", config_out, "tokenizer_config.json to write");
  app.add_option("--encode", encode_in, "held-out text to encode with the result");
  app.add_option("--encode-out", encode_out, "where the ids of --encode go (one line)");
  app.add_option("files", files, "training text files")->required()->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);

  std::vector<std::string> texts;
  size_t bytes = 0;
  for (const auto& f : files) { texts.push_back(read_file(f)); bytes += texts.back().size(); }
  auto docs = documents(texts, lines);

  std::vector<double> secs;
  std::string json, config;
  for (int r = 0; r < runs; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    ds::tok::BpeTrainerOptions opts;
    opts.vocab_size = vocab;
    opts.min_frequency = min_freq;
    opts.threads = threads;
    opts.progress = progress;
    ds::tok::BpeTrainer trainer(opts);
    for (auto d : docs) trainer.add_text(d);
    json = trainer.train();
    secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    config = trainer.tokenizer_config_json();
    std::printf("run %d: %.3f s\n", r + 1, secs.back());
  }
  std::vector<double> sorted = secs;
  std::sort(sorted.begin(), sorted.end());
  std::printf("bytes=%zu docs=%zu vocab=%zu threads=%d median_s=%.3f\n", bytes, docs.size(),
              vocab, threads, sorted[sorted.size() / 2]);
  write_file(out, json);
  if (!config_out.empty()) write_file(config_out, config);

  if (!encode_in.empty()) {
    auto tok = ds::tok::Tokenizer::from_json(json, out);
    auto ids = tok.encode(read_file(encode_in));
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    write_file(encode_out.empty() ? encode_in + ".ids" : encode_out, line + "\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const ds::Error& e) {
    std::fprintf(stderr, "ds_bench_train: %s\n", e.what());
    return e.exit_code();
  }
}
