// Helpers shared by the lib/data doctest suites: a self-removing temporary directory,
// random documents, byte-level file edits, and "throws FormatError whose message contains".
#pragma once
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/data/shard.hpp"
#include "ds/io/file.hpp"

namespace ds_test {

namespace fs = std::filesystem;
using ds::data::TokenId;

inline constexpr const char* kFp = "0123456789abcdef";
inline constexpr const char* kOtherFp = "fedcba9876543210";

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("ds_test_data_" + tag + "_" + std::to_string(::getpid()) + "_" +
            std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  size_t count_entries() const {
    size_t n = 0;
    for (auto& e : fs::directory_iterator(path)) { (void)e; ++n; }
    return n;
  }
};

// n_docs documents with lengths uniform in [0, max_len], tokens uniform in [0, vocab).
inline std::vector<std::vector<TokenId>> random_docs(uint64_t seed, size_t n_docs,
                                                     size_t max_len, uint32_t vocab) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<TokenId>> docs(n_docs);
  for (auto& d : docs) {
    d.resize(rng() % (max_len + 1));
    // Mostly small ids (compressible, like real text) with some spread up to vocab - 1.
    for (auto& t : d) t = TokenId(rng() % 8 == 0 ? rng() % vocab : rng() % std::min(vocab, 300u));
  }
  return docs;
}

inline std::string read_bytes(const fs::path& p) { return ds::io::read_file(p); }
inline void write_bytes(const fs::path& p, const std::string& s) {
  ds::io::write_file_atomic(p, s);
}

// Runs `fn`, requires a ds::FormatError whose message contains every string in `parts`.
template <class Fn>
void require_format_error(Fn&& fn, std::initializer_list<std::string> parts) {
  bool threw = false;
  try {
    fn();
  } catch (const ds::FormatError& e) {
    threw = true;
    const std::string msg = e.what();
    for (const auto& p : parts) {
      INFO("message: " << msg);
      CHECK(msg.find(p) != std::string::npos);
    }
  }
  CHECK_MESSAGE(threw, "expected ds::FormatError");
}

}  // namespace ds_test
