// Hopper probes (kernels/sm90_probe.cu): what the next kernels would build on, settled on the
// card before any kernel depends on it. Skipped without an sm_90a device.
//   * TMA: a 64 x 64 BF16 box with the 128-byte swizzle must land as the K-major layout the
//     wgmma kernels read (fa90::swizzled: row r's 16-byte unit u at r * 128 + (u ^ r % 8) *
//     16), with zeros for elements past the matrix;
//   * wgmma with MN-major operands: one m64n128k16 on operand images laid out here. The
//     K-major images the kernels use are the control (the harness itself must be right); B
//     MN-major is read with the canonical layout of the 128-byte swizzle as CUTLASS documents
//     it (8 K-rows of 128 bytes per 1024-byte atom; LBO = the stride between 64-element
//     atoms along N, SBO = the stride between 8-row groups along K); should that fail, the
//     swapped offsets are tried and the message says which the card took. A MN-major is one
//     atom along M (64), so only its SBO matters.
// Integer operands (|x| <= 4): every product and sum is exact in FP32.
#include <cstring>
#include <string>
#include <vector>

#include "gpu_harness.hpp"
#include "kernels/sm90_probe.cuh"
#include "sm90_probe_images.hpp"

namespace {

using namespace ds;
using namespace ds::gpu_test;
using ds::test::probe::Probe;
using ds::test::probe::sw128;

Tensor host_u8(const std::vector<uint8_t>& v) {
  Tensor t = Tensor::empty({int64_t(v.size())}, DType::u8);
  std::memcpy(t.raw(), v.data(), v.size());
  return t;
}

// Runs one probe; returns the number of wrong elements of d (and d's first one in `first`).
int run_probe(const Probe& p, const std::vector<uint8_t>& ai, uint32_t albo, uint32_t asbo,
              bool amn, const std::vector<uint8_t>& bi, uint32_t blbo, uint32_t bsbo, bool bmn,
              std::string* first) {
  Arena ar;
  Tensor ga = ar.upload(host_u8(ai)), gb = ar.upload(host_u8(bi));
  Tensor d = ar.empty({64, 128});
  ds::cuda::wgmma_probe({ga.data<uint8_t>(), int(ai.size()), albo, asbo, amn},
                        {gb.data<uint8_t>(), int(bi.size()), blbo, bsbo, bmn}, d.f32());
  const Tensor h = download(d);
  int bad = 0;
  for (int i = 0; i < 64 * 128; ++i)
    if (h.f32()[i] != p.want[size_t(i)]) {
      if (bad++ == 0 && first)
        *first = "d[" + std::to_string(i / 128) + "][" + std::to_string(i % 128) + "] = " +
                 std::to_string(h.f32()[i]) + ", want " + std::to_string(p.want[size_t(i)]);
    }
  CHECK(ar.check());
  return bad;
}

}  // namespace

TEST_CASE("gpu sm90 probe: a TMA box with the 128-byte swizzle lands as the K-major layout") {
  if (!ds::cuda::tma_probe_supported()) {
    MESSAGE("skipped: not an sm_90a device, or no tensor-map encoder in the driver");
    return;
  }
  const int rows = 200, cols = 192;
  Tensor x = Tensor::empty({rows, cols}, DType::u16);
  for (int i = 0; i < rows * cols; ++i) x.data<uint16_t>()[i] = uint16_t(1 + i % 65521);
  Arena ar;
  Tensor gx = ar.upload(x);
  // inside, the last full box, rows past the end, columns past the end
  const int boxes[][2] = {{0, 0}, {64, 64}, {136, 128}, {160, 136}};
  for (const auto& bx : boxes) {
    const int r0 = bx[0], c0 = bx[1];
    CAPTURE(r0);
    CAPTURE(c0);
    Tensor out = ar.empty({64 * 64}, DType::u16);
    ds::cuda::tma_probe_box(gx.data<uint16_t>(), rows, cols, r0, c0, out.data<uint16_t>());
    const Tensor h = download(out);
    int bad = 0;
    for (int r = 0; r < 64; ++r)
      for (int c = 0; c < 64; ++c) {
        const int gr = r0 + r, gc = c0 + c;
        const uint16_t want = gr < rows && gc < cols ? x.data<uint16_t>()[gr * cols + gc] : 0;
        bad += h.data<uint16_t>()[sw128(r, c) / 2] != want;
      }
    CHECK_MESSAGE(bad == 0, bad << " of 4096 elements not where the K-major swizzle puts them");
  }
  CHECK(ar.check());
}

TEST_CASE("gpu sm90 probe: wgmma reads MN-major operands with the canonical 128-byte swizzle") {
  if (!ds::cuda::sm90_probes_supported()) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  const Probe p;
  std::string first;
  // control: both K-major, as every wgmma kernel here (LBO unused: 16; SBO 1024)
  const int control = run_probe(p, p.a_kmajor(), 16, 1024, false, p.b_kmajor(), 16, 1024,
                                false, &first);
  REQUIRE_MESSAGE(control == 0, "K-major control: " << control << " wrong, first " << first);
  // B MN-major: LBO 2048 (the next 64 n), SBO 1024 (the next 8 k)
  first.clear();
  const int bmn = run_probe(p, p.a_kmajor(), 16, 1024, false, p.b_mnmajor(), 2048, 1024, true,
                            &first);
  if (bmn != 0) {
    const int swapped = run_probe(p, p.a_kmajor(), 16, 1024, false, p.b_mnmajor(), 1024, 2048,
                                  true, nullptr);
    MESSAGE("B MN-major with LBO 2048, SBO 1024: " << bmn << " wrong (first " << first
            << "); with the offsets swapped: " << swapped << " wrong");
  }
  CHECK(bmn == 0);
  // A MN-major (one atom along m: LBO never used), B K-major
  first.clear();
  const int amn = run_probe(p, p.a_mnmajor(), 4096, 1024, true, p.b_kmajor(), 16, 1024, false,
                            &first);
  CHECK_MESSAGE(amn == 0, "A MN-major: " << amn << " wrong, first " << first);
  // both MN-major
  first.clear();
  const int both = run_probe(p, p.a_mnmajor(), 4096, 1024, true, p.b_mnmajor(), 2048, 1024,
                             true, &first);
  CHECK_MESSAGE(both == 0, "A and B MN-major: " << both << " wrong, first " << first);
}
