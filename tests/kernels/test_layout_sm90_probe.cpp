// The wgmma probe's operand images (sm90_probe_images.hpp), read back on the CPU through the
// emulator's model of the descriptors (warp_emu.hpp: K-major, checked against the H200-run FP8
// GEMM's layout; MN-major, the canonical layout CUTLASS documents) with the offsets the GPU
// test passes, and multiplied: every product must come out as the reference. This checks the
// GPU test's own construction (images, offsets), so that a failure there is about the card.
// The K-major probe images are also the kernels' tiles: the first 32 bytes of each row.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "sm90_probe_images.hpp"
#include "warp_emu.hpp"

namespace emu = ds::test::emu;
using ds::test::probe::Probe;

namespace {

// The image at a 1024-aligned address of a fresh CTA's shared memory, landed and published.
struct Staged {
  emu::Cta cta;
  uint32_t at;
  Staged(const std::vector<uint8_t>& img) : cta(uint32_t(img.size()) + 2048, 1, 0), at(1024) {
    const emu::GlobalSpan g{img.data(), img.size()};
    for (size_t o = 0; o < img.size(); o += 16) cta.cp_async16(0, at + uint32_t(o), g, o, 16);
    cta.commit_group(0);
    cta.wait_group(0, 0);
    cta.bar_sync();
  }
};

// d = a b from the values the descriptors read: a [m][k] (64 x 16), b [n][k] (128 x 16).
int wrong(const Probe& p, const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  auto val = [](uint16_t code) {
    const uint32_t u = uint32_t(code) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  int bad = 0;
  for (int m = 0; m < 64; ++m)
    for (int n = 0; n < 128; ++n) {
      float d = 0.f;
      for (int k = 0; k < 16; ++k) d += val(a[size_t(m * 16 + k)]) * val(b[size_t(n * 16 + k)]);
      bad += d != p.want[size_t(m * 128 + n)];
    }
  return bad;
}

}  // namespace

TEST_CASE("wgmma probe images: the descriptors' reads give the reference product") {
  const Probe p;
  Staged ak(p.a_kmajor()), am(p.a_mnmajor()), bk(p.b_kmajor()), bm(p.b_mnmajor());
  const std::vector<uint16_t> a_k = ak.cta.wgmma_kmajor_sw128(ak.at, 64, 1024);
  const std::vector<uint16_t> a_m = am.cta.wgmma_mnmajor_sw128(am.at, 64, 4096, 1024);
  const std::vector<uint16_t> b_k = bk.cta.wgmma_kmajor_sw128(bk.at, 128, 1024);
  const std::vector<uint16_t> b_m = bm.cta.wgmma_mnmajor_sw128(bm.at, 128, 2048, 1024);
  CHECK(wrong(p, a_k, b_k) == 0);   // the control
  CHECK(wrong(p, a_k, b_m) == 0);   // B MN-major, LBO 2048, SBO 1024
  CHECK(wrong(p, a_m, b_k) == 0);   // A MN-major
  CHECK(wrong(p, a_m, b_m) == 0);
  // the swapped offsets the GPU test tries next read other elements: it can tell them apart
  const std::vector<uint16_t> b_sw = bm.cta.wgmma_mnmajor_sw128(bm.at, 128, 1024, 2048);
  CHECK(wrong(p, a_k, b_sw) > 0);
  // and the MN-major images differ from the K-major ones as bytes (not the same tile twice)
  const std::vector<uint8_t> bk_img = p.b_kmajor();
  CHECK(p.b_mnmajor() != std::vector<uint8_t>(bk_img.begin(), bk_img.begin() + 4096));
}
