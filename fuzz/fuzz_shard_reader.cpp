// libFuzzer target for ShardReader: the input bytes become a shard file that is opened,
// verified and read end to end. A malformed file may only ever raise ds::Error; any other
// exception escapes (and aborts), and memory errors are caught by the sanitizers.
// Format under test: docs/formats.md ("Token shards").
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/data/shard.hpp"
#include "fuzz_scratch.hpp"

namespace {

const std::filesystem::path& scratch_path() {
  static const std::filesystem::path p = ds_fuzz::scratch_path("shard", ".dst");
  return p;
}

void exercise(const ds::data::ShardReader& r) {
  const auto& info = r.info();
  const auto& offsets = r.document_offsets();
  if (offsets.size() != info.n_documents + 1 || offsets.back() != info.n_tokens)
    __builtin_trap();   // the reader promised a consistent document table
  r.verify();
  // Read everything in bounded chunks (a corrupt header may claim many tokens).
  std::vector<ds::data::TokenId> buf(1 << 16);
  const uint64_t limit = std::min<uint64_t>(info.n_tokens, uint64_t(1) << 24);
  for (uint64_t pos = 0; pos < limit; pos += buf.size()) {
    const size_t n = size_t(std::min<uint64_t>(buf.size(), limit - pos));
    r.read(pos, std::span<ds::data::TokenId>(buf.data(), n));
    for (size_t i = 0; i < n; ++i)
      if (buf[i] >= info.vocab_size) __builtin_trap();
  }
  if (info.n_tokens > 0) r.read(info.n_tokens - 1, 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ds_fuzz::write_file(scratch_path(), data, size);
  try {
    ds::data::ShardReader r(scratch_path());
    exercise(r);
  } catch (const ds::Error&) {
    // expected for malformed input; anything else propagates and crashes the fuzzer
  }
  return 0;
}
