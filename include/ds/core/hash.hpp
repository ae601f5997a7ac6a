// XXH64 (Yann Collet's xxHash, 64-bit variant), written from the published algorithm.
// Used for shard block checksums and tokenizer fingerprints.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ds {

uint64_t xxh64(const void* data, size_t len, uint64_t seed = 0);
inline uint64_t xxh64(std::string_view s, uint64_t seed = 0) {
  return xxh64(s.data(), s.size(), seed);
}
std::string hex64(uint64_t v);   // 16 lowercase hex digits

// Streaming XXH64 for data that arrives in pieces.
class Xxh64Stream {
 public:
  explicit Xxh64Stream(uint64_t seed = 0);
  void update(const void* data, size_t len);
  uint64_t digest() const;

 private:
  uint64_t v_[4];
  uint64_t seed_;
  uint64_t total_ = 0;
  unsigned char buf_[32];
  size_t buf_len_ = 0;
};

}  // namespace ds
