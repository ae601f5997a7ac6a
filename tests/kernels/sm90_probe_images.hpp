// The operand images of the wgmma probe (kernels/sm90_probe.cu): a (64 x 16) and b (16 x 128)
// of small integers, laid out in shared memory the way a descriptor with the 128-byte swizzle
// reads them, K-major (as every wgmma kernel here) and MN-major (the canonical layout CUTLASS
// documents: 8 rows along K of 128 bytes per 1024-byte atom, 64 elements along M or N per
// atom; LBO the stride between atoms along M/N, SBO between 8-row groups along K). Shared by
// the GPU test (test_ops_sm90_probe.cpp) and the CPU test that reads them back through the
// emulator's model of both descriptors (test_layout_sm90_probe.cpp). Plain C++.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/flash_attention_sm90_layout.hpp"

namespace ds::test::probe {

// BF16 code of a small integer (exact).
inline uint16_t bf16_int(int x) {
  const float f = float(x);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}

inline void put(std::vector<uint8_t>& img, size_t at, uint16_t code) {
  img[at] = uint8_t(code & 0xff);
  img[at + 1] = uint8_t(code >> 8);
}

// Byte offset of element (row, col) of a 128-byte-swizzled tile of rows x 64 two-byte
// elements (row-major within the swizzle atom).
inline size_t sw128(int row, int col) {
  return size_t(ds::cuda::fa90::swizzled(row, col / 8)) + size_t(col % 8) * 2;
}

struct Probe {
  std::vector<int> a, b;   // a (64 x 16), b (16 x 128), row-major
  std::vector<float> want;
  Probe() : a(64 * 16), b(16 * 128), want(64 * 128, 0.f) {
    for (int m = 0; m < 64; ++m)
      for (int k = 0; k < 16; ++k) a[size_t(m * 16 + k)] = (m * 7 + k * 3) % 9 - 4;
    for (int k = 0; k < 16; ++k)
      for (int n = 0; n < 128; ++n) b[size_t(k * 128 + n)] = (k * 5 + n * 11) % 9 - 4;
    for (int m = 0; m < 64; ++m)
      for (int n = 0; n < 128; ++n)
        for (int k = 0; k < 16; ++k)
          want[size_t(m * 128 + n)] += float(a[size_t(m * 16 + k)] * b[size_t(k * 128 + n)]);
  }
  // A K-major: 64 rows (m) of 128 bytes, k in the first 32 bytes. 8 KB.
  std::vector<uint8_t> a_kmajor() const {
    std::vector<uint8_t> img(64 * 128, 0);
    for (int m = 0; m < 64; ++m)
      for (int k = 0; k < 16; ++k) put(img, sw128(m, k), bf16_int(a[size_t(m * 16 + k)]));
    return img;
  }
  // A MN-major: 16 rows (k) of 64 elements (m). 2 KB: two 8-row groups 1024 bytes apart.
  std::vector<uint8_t> a_mnmajor() const {
    std::vector<uint8_t> img(16 * 128, 0);
    for (int k = 0; k < 16; ++k)
      for (int m = 0; m < 64; ++m) put(img, sw128(k, m), bf16_int(a[size_t(m * 16 + k)]));
    return img;
  }
  // B K-major: 128 rows (n) of 128 bytes, k in the first 32 bytes. 16 KB.
  std::vector<uint8_t> b_kmajor() const {
    std::vector<uint8_t> img(128 * 128, 0);
    for (int n = 0; n < 128; ++n)
      for (int k = 0; k < 16; ++k) put(img, sw128(n, k), bf16_int(b[size_t(k * 128 + n)]));
    return img;
  }
  // B MN-major: two atoms of 64 n, 2048 bytes apart, each 16 rows (k) of 64 elements (n).
  std::vector<uint8_t> b_mnmajor() const {
    std::vector<uint8_t> img(2 * 16 * 128, 0);
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 16; ++k)
        for (int n = 0; n < 64; ++n)
          put(img, size_t(j) * 2048 + sw128(k, n), bf16_int(b[size_t(k * 128 + 64 * j + n)]));
    return img;
  }
};

}  // namespace ds::test::probe
