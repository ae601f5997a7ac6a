// Encode throughput of ds::tok::Tokenizer on a text file, single-threaded and with a
// thread pool. The file is cut into documents after every "\n\n" (bench_encode_vs_hf.py
// cuts the same way for HF tokenizers). Prints MB/s (1e6 bytes/s), median of N runs.
// Usage: ds_bench_encode TOKENIZER_JSON CORPUS [runs=5] [threads=2]
// reference: docs/benchmarks.md conventions; spec §8.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/io/file.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace {

std::vector<std::string_view> split_documents(std::string_view text) {
  std::vector<std::string_view> docs;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t cut = text.find("\n\n", pos);
    cut = cut == std::string_view::npos ? text.size() : cut + 2;
    docs.push_back(text.substr(pos, cut - pos));
    pos = cut;
  }
  return docs;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Encodes every document with `threads` threads (1 = the calling thread only); returns
// seconds and the total token count.
double run_once(const ds::tok::Tokenizer& tok, const std::vector<std::string_view>& docs,
                ds::ThreadPool* pool, size_t& n_tokens) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!pool) {
    std::vector<ds::tok::TokenId> ids;
    n_tokens = 0;
    for (auto d : docs) {
      ids.clear();
      tok.encode(d, ids);
      n_tokens += ids.size();
    }
  } else {
    std::vector<size_t> counts(docs.size());
    pool->parallel_for(docs.size(), [&](size_t b, size_t e, int) {
      std::vector<ds::tok::TokenId> ids;
      for (size_t i = b; i < e; ++i) {
        ids.clear();
        tok.encode(docs[i], ids);
        counts[i] = ids.size();
      }
    }, 64);
    n_tokens = 0;
    for (size_t c : counts) n_tokens += c;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_JSON CORPUS [runs=5] [threads=2]\n", argv[0]);
    return 2;
  }
  try {
    const int runs = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;
    const int threads = argc > 4 ? std::max(2, std::atoi(argv[4])) : 2;
    const auto tok = ds::tok::Tokenizer::from_file(argv[1]);
    const std::string text = ds::io::read_file(argv[2]);
    const auto docs = split_documents(text);
    const double mb = double(text.size()) / 1e6;
    std::printf("corpus: %.2f MB, %zu documents\n", mb, docs.size());
    ds::ThreadPool pool(threads);
    for (int t : {1, threads}) {
      std::vector<double> secs;
      size_t n_tokens = 0;
      for (int r = 0; r < runs; ++r)
        secs.push_back(run_once(tok, docs, t == 1 ? nullptr : &pool, n_tokens));
      std::printf("ds threads=%d tokens=%zu first_mbps=%.2f median_mbps=%.2f\n", t, n_tokens,
                  mb / secs.front(), mb / median(secs));
    }
    return 0;
  } catch (const ds::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.exit_code();
  }
}
