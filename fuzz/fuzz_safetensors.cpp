// libFuzzer target for the safetensors reader. The first input byte picks what the rest is:
//   even: a .safetensors file, opened by SafetensorsFile and by SafetensorsDir, every tensor
//         looked up and (when small and F32/BF16/F16) converted to F32;
//   odd:  a model.safetensors.index.json beside two valid shards, opened by SafetensorsDir.
// A malformed input may only ever raise ds::Error; any other exception escapes (and aborts),
// a broken promise of the reader traps, and memory errors are caught by the sanitizers.
// Format under test: docs/formats.md ("Checkpoints"), include/ds/io/safetensors.hpp.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/io/safetensors.hpp"
#include "fuzz_scratch.hpp"

namespace {

namespace fs = std::filesystem;

// One scratch directory per fuzzing process, reused for every input.
const fs::path& scratch_dir() {
  static const fs::path p = [] {
    fs::path d = ds_fuzz::scratch_path("st", "");
    fs::create_directories(d);
    return d;
  }();
  return p;
}

// The shards an index may name: "a" and "b" in the first, "c" in the second.
void write_shards_once(const fs::path& dir) {
  static bool done = false;
  if (done) return;
  const float v[4] = {1.0f, -2.0f, 0.5f, 3.0f};
  ds::io::write_safetensors(dir / "model-00001-of-00002.safetensors",
                            {ds::io::TensorSource::raw("a", ds::DType::f32, {2}, v),
                             ds::io::TensorSource::raw("b", ds::DType::f32, {1, 2}, v + 2)});
  ds::io::write_safetensors(dir / "model-00002-of-00002.safetensors",
                            {ds::io::TensorSource::raw("c", ds::DType::f32, {4}, v)});
  done = true;
}

void check_view(const ds::io::TensorView& t) {
  const int64_t n = t.numel();
  if (n < 0 || t.nbytes != size_t(n) * ds::dtype_size(t.dtype)) __builtin_trap();
  if (n > 0 && t.data == nullptr) __builtin_trap();
  const bool convertible = t.dtype == ds::DType::f32 || t.dtype == ds::DType::bf16 ||
                           t.dtype == ds::DType::f16;
  if (convertible && n <= (int64_t(1) << 20)) {
    const ds::Tensor f = ds::io::to_f32(t);
    if (f.numel() != n) __builtin_trap();
  }
}

void exercise_file(const fs::path& path) {
  const ds::io::SafetensorsFile f(path);
  for (const auto& name : f.names()) {
    if (!f.contains(name)) __builtin_trap();
    check_view(f.get(name));
  }
  const ds::io::SafetensorsDir d(path);
  if (d.names().size() != f.names().size()) __builtin_trap();
}

void exercise_index(const fs::path& dir) {
  const ds::io::SafetensorsDir d(dir);
  for (const auto& name : d.names()) {
    if (!d.contains(name)) __builtin_trap();
    check_view(d.get(name));
    (void)d.file_of(name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const fs::path& dir = scratch_dir();
  const bool index = (data[0] & 1) != 0;
  try {
    if (index) {
      write_shards_once(dir);
      ds_fuzz::write_file(dir / ds::io::kSafetensorsIndex, data + 1, size - 1);
      exercise_index(dir);
    } else {
      const fs::path path = dir / "fuzz.safetensors";
      ds_fuzz::write_file(path, data + 1, size - 1);
      exercise_file(path);
    }
  } catch (const ds::Error&) {
    // expected for malformed input; anything else propagates and crashes the fuzzer
  }
  return 0;
}
