// The replay driver of the fuzz targets in an ordinary (test) build: linked with one target's
// LLVMFuzzerTestOneInput, it runs every file named on the command line, or found under a
// directory named there, once through it, in name order. A broken promise traps and a non-ds
// exception escapes, so the process dies and CTest reports the failure; the input that did it
// is printed first. CTest runs each target over its generated seeds and its committed
// regressions (fuzz/regressions/TARGET/, the inputs on which fuzzing once failed). Unlike the
// fuzz build, the test build keeps the shard reader's checksum checks, so a shard regression
// must carry valid checksums to reach the code it once broke.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
    return 2;
  }
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const fs::path p = argv[i];
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file()) inputs.push_back(e.path());
    } else if (fs::is_regular_file(p, ec)) {
      inputs.push_back(p);
    } else {
      std::fprintf(stderr, "%s: %s: no such file or directory\n", argv[0], p.c_str());
      return 2;
    }
  }
  std::sort(inputs.begin(), inputs.end());
  if (inputs.empty()) {
    std::fprintf(stderr, "%s: no inputs under the paths given\n", argv[0]);
    return 2;
  }
  for (const auto& p : inputs) {
    std::ifstream f(p, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (!f.good() && !f.eof()) {
      std::fprintf(stderr, "%s: %s: cannot read\n", argv[0], p.c_str());
      return 2;
    }
    std::fprintf(stderr, "replay %s (%zu bytes)\n", p.c_str(), bytes.size());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  // the targets' scratch files (fuzz_scratch.hpp: temp dir, ds_fuzz_<tag>_<pid><suffix>)
  const std::string mine = "_" + std::to_string(::getpid());
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::temp_directory_path(), ec)) {
    const std::string n = e.path().filename().string();
    const size_t at = n.find(mine);   // this pid exactly: not another replay's longer one
    if (n.rfind("ds_fuzz_", 0) == 0 && at != std::string::npos &&
        (at + mine.size() == n.size() || !std::isdigit(uint8_t(n[at + mine.size()]))))
      fs::remove_all(e.path(), ec);
  }
  std::printf("%zu inputs replayed\n", inputs.size());
  return 0;
}
