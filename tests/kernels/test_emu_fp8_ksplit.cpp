// The split k-grouped FP8 GEMM's reduction (kernels/fp8_ksplit_reduce.cuh, `DS_FP8_KSPLIT=on`,
// not yet run on a GPU) run on the CPU by the host emulator (cuda_emu.hpp): c += the parts'
// slices added in part order, bit for bit, for 1 to 16 parts, n below, at and past a block,
// one block striding over all of n and a grid covering it, with NaN and infinities passing
// through and a case whose result depends on the order; then the plan of kernels/
// fp8_ksplit.hpp and the reduction together: each part's slice summed over its K blocks as
// the k-grouped kernel sums them, reduced by the kernel, equals the unsplit sum of every K
// block to rounding (a K block dropped or counted twice would not). Buffers sit between guard
// bytes.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "emu_buffers.hpp"
#include "kernels/fp8_ksplit.hpp"
#include "kernels/fp8_ksplit_reduce.cuh"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using ds::test::bit_mismatches;
using ds::test::EmuBuf;
using ds::test::cuda_emu::launch;
namespace ks = ds::cuda::ksplit;

// Runs the reduction of the s slices ws (s, n) into c (n) with `blocks` blocks of 256 threads;
// returns c after it, or an empty vector when a guard was overwritten.
std::vector<float> reduce(const std::vector<float>& ws, int s, const std::vector<float>& c,
                          unsigned blocks) {
  const int64_t n = int64_t(c.size());
  EmuBuf w(ws.size() * sizeof(float)), out(c.size() * sizeof(float));
  std::memcpy(w.ptr(), ws.data(), ws.size() * sizeof(float));
  std::memcpy(out.ptr(), c.data(), c.size() * sizeof(float));
  launch(ks::ksplit_reduce_kernel, dim3(blocks), dim3(256), static_cast<const float*>(w.f()), s,
         n, out.f());
  if (!w.ok() || !out.ok()) return {};
  return std::vector<float>(out.f(), out.f() + n);
}

// The reduction's definition: c[i] + (((ws[0][i] + ws[1][i]) + ...) + ws[s-1][i]).
std::vector<float> in_order(const std::vector<float>& ws, int s, const std::vector<float>& c) {
  const size_t n = c.size();
  std::vector<float> want(c);
  for (size_t i = 0; i < n; ++i) {
    float sum = ws[i];
    for (int j = 1; j < s; ++j) sum += ws[size_t(j) * n + i];
    want[i] += sum;
  }
  return want;
}

}  // namespace

TEST_CASE("emulated k-split reduction adds the parts' slices into c in part order") {
  std::mt19937_64 rng(21);
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  const float inf = std::numeric_limits<float>::infinity();
  for (const int s : {1, 2, 5, 16})
    for (const int64_t n : {int64_t(1), int64_t(256), int64_t(1000), int64_t(4099)})
      for (const unsigned blocks : {1u, unsigned((n + 255) / 256)}) {
        const std::string what = "s " + std::to_string(s) + " n " + std::to_string(n) +
                                 " blocks " + std::to_string(blocks);
        INFO(what);
        std::vector<float> ws(static_cast<size_t>(s * n)), c(static_cast<size_t>(n));
        for (float& v : ws) v = u(rng);
        for (float& v : c) v = u(rng);
        if (n > 3) {
          ws[size_t(s - 1) * size_t(n) + 1] = std::numeric_limits<float>::quiet_NaN();
          ws[2] = inf;
          c[3] = -inf;
        }
        const std::vector<float> got = reduce(ws, s, c, blocks);
        REQUIRE(got.size() == c.size());
        const std::vector<float> want = in_order(ws, s, c);
        CHECK(bit_mismatches(got.data(), want.data(), n, true) == 0);
      }
}

TEST_CASE("emulated k-split reduction keeps the part order where it decides the result") {
  // ((1e8 + -1e8) + 1) + 0 = 1; any other grouping of these three loses the 1.
  const std::vector<float> ws = {1e8f, -1e8f, 1.f}, c = {0.f};
  const std::vector<float> got = reduce(ws, 3, c, 1);
  REQUIRE(got.size() == 1);
  CHECK(got[0] == 1.f);
}

TEST_CASE("emulated k-split plan and reduction cover every K block once") {
  std::mt19937_64 rng(22);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);   // one sign: no cancellation
  struct Case {
    int64_t tiles, kb0, kb1;
    int sms;
  };
  // The 1b preset's Wgrads (24 and 64 tiles, 128 K blocks) on 132 SMs, a short K range and
  // one not starting at 0.
  for (const Case& k : {Case{24, 0, 128, 132}, Case{64, 0, 128, 132}, Case{2, 0, 19, 132},
                        Case{8, 5, 77, 100}}) {
    const int s = ks::splits(k.tiles, k.kb1 - k.kb0, k.sms);
    const std::string what = "tiles " + std::to_string(k.tiles) + " K blocks [" +
                             std::to_string(k.kb0) + ", " + std::to_string(k.kb1) + ") s " +
                             std::to_string(s);
    INFO(what);
    CHECK(s > 1);   // every case splits
    const int64_t n = 300, nkb = k.kb1;
    // block[kb][i]: K block kb's promoted contribution to element i.
    std::vector<float> block(static_cast<size_t>(nkb * n));
    for (float& v : block) v = u(rng);
    std::vector<float> ws(static_cast<size_t>(s * n), 0.f);   // the zeroed workspace
    for (int p = 0; p < s; ++p) {
      const ks::Part part = ks::part(k.kb0, k.kb1, s, p);
      for (int64_t i = 0; i < n; ++i) {
        float acc = 0.f;   // the k-grouped kernel's accumulator, added into the zeroed slice
        for (int64_t kb = part.kb0; kb < part.kb1; ++kb) acc += block[size_t(kb * n + i)];
        ws[size_t(p * n + i)] += acc;
      }
    }
    const std::vector<float> c(static_cast<size_t>(n), 0.25f);
    const std::vector<float> got = reduce(ws, s, c, 2);
    REQUIRE(got.size() == size_t(n));
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      double want = 0.25;
      for (int64_t kb = k.kb0; kb < k.kb1; ++kb) want += block[size_t(kb * n + i)];
      bad += std::fabs(got[size_t(i)] - want) > 1e-4 * want;   // a lost K block: >= 0.5
    }
    CHECK(bad == 0);
  }
}
