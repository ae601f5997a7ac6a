// Scratch files of the file-format fuzz targets: one per fuzzing process (the pid in its
// name), rewritten for every input. A failure to write traps: it is the harness's, not the
// reader's.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace ds_fuzz {

// temp_directory_path()/ds_fuzz_<tag>_<pid><suffix>
inline std::filesystem::path scratch_path(const std::string& tag, const std::string& suffix) {
  return std::filesystem::temp_directory_path() /
         ("ds_fuzz_" + tag + "_" + std::to_string(::getpid()) + suffix);
}

inline void write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
}

}  // namespace ds_fuzz
