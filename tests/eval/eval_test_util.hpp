// Test helpers for tests/eval: a temporary directory removed on destruction, small file
// writers, and the shared-data location (tests skip with a MESSAGE without it).
#pragma once
#include <filesystem>

#include "../temp_dir.hpp"

namespace ds::eval::testing {

namespace fs = std::filesystem;

// A temporary directory (tests/temp_dir.hpp).
class TempDir : public ds::testing::TempDir {
 public:
  TempDir() : ds::testing::TempDir("eval") {}
};

inline fs::path shared_data() { return fs::path(DS_SHARED_DATA); }

}  // namespace ds::eval::testing
