// Token shard throughput: writes a synthetic dataset of text-like token ids with
// DatasetWriter, reads it back sequentially (M tokens/s), and times random-access reads of
// training-sized windows (latency percentiles). Prints figures; never a pass/fail test.
// Usage: ds_bench_shards [--tokens N] [--vocab V] [--window W] [--dir PATH]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/data/shard.hpp"

namespace fs = std::filesystem;
using ds::data::TokenId;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  uint64_t tokens = 50'000'000;
  uint32_t vocab = 129280;
  uint64_t window = 4097;     // one training sequence of 4096 plus the shifted target
  int random_reads = 2000;
  fs::path dir;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Zipf-like ids: a few very common tokens and a long tail, roughly like BPE output.
std::vector<TokenId> make_document(std::mt19937_64& rng, uint32_t vocab, size_t len) {
  std::vector<TokenId> d(len);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (auto& t : d) {
    const double x = u(rng);
    t = TokenId(std::min<double>(vocab - 1, std::pow(double(vocab), x * x * x)));
  }
  return d;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--tokens") a.tokens = std::stoull(argv[i + 1]);
    else if (k == "--vocab") a.vocab = uint32_t(std::stoul(argv[i + 1]));
    else if (k == "--window") a.window = std::stoull(argv[i + 1]);
    else if (k == "--dir") a.dir = argv[i + 1];
    else throw ds::UsageError("unknown flag " + k);
  }
  if (a.dir.empty())
    a.dir = fs::temp_directory_path() / ("ds_bench_shards_" + std::to_string(::getpid()));
  return a;
}

void run(const Args& a) {
  const std::string fp = "0123456789abcdef";
  std::mt19937_64 rng(42);
  // Pre-generate documents so that generation is not timed.
  std::vector<std::vector<TokenId>> docs;
  uint64_t total = 0;
  while (total < a.tokens) {
    docs.push_back(make_document(rng, a.vocab, 200 + rng() % 4000));
    total += docs.back().size();
  }
  fs::remove_all(a.dir);
  auto t0 = Clock::now();
  ds::data::DatasetWriter w(a.dir, a.vocab, fp, 64ull << 20);
  for (const auto& d : docs) w.add_document(d);
  const auto m = w.finish();
  const double tw = seconds_since(t0);
  uint64_t bytes = 0;
  for (const auto& s : m.shards) bytes += s.bytes;
  std::printf("tokens %llu, documents %zu, shards %zu, vocab %u (width %u B)\n",
              (unsigned long long)total, docs.size(), m.shards.size(), a.vocab, m.token_width);
  std::printf("on disk %.1f MiB, %.2f bytes/token (zstd level 3, 65536-token blocks)\n",
              double(bytes) / (1 << 20), double(bytes) / double(total));
  std::printf("write (incl. fsync): %.2f s, %.1f M tokens/s\n", tw, total / tw / 1e6);

  ds::data::Dataset ds(a.dir, fp);
  std::vector<TokenId> buf(1 << 20);
  t0 = Clock::now();
  uint64_t checksum = 0;
  for (uint64_t pos = 0; pos < total; pos += buf.size()) {
    const size_t n = size_t(std::min<uint64_t>(buf.size(), total - pos));
    ds.read(pos, std::span<TokenId>(buf.data(), n));
    checksum += buf[n - 1];
  }
  const double tr = seconds_since(t0);
  std::printf("sequential read: %.2f s, %.1f M tokens/s (checksum %llu)\n", tr,
              total / tr / 1e6, (unsigned long long)checksum);

  std::vector<TokenId> win(a.window);
  std::vector<double> lat;
  for (int i = 0; i < a.random_reads; ++i) {
    const uint64_t start = rng() % (total - a.window);
    const auto t = Clock::now();
    ds.read(start, win);
    lat.push_back(seconds_since(t) * 1e6);
  }
  std::sort(lat.begin(), lat.end());
  std::printf("random %llu-token reads (%d): p50 %.0f us, p90 %.0f us, p99 %.0f us\n",
              (unsigned long long)a.window, a.random_reads, lat[lat.size() / 2],
              lat[lat.size() * 9 / 10], lat[lat.size() * 99 / 100]);
  fs::remove_all(a.dir);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ds_bench_shards: %s\n", e.what());
    return 1;
  }
  return 0;
}
