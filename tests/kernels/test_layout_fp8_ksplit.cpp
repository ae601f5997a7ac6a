// The split-K plan of the k-grouped FP8 GEMM (kernels/fp8_ksplit.hpp), checked on the CPU: the
// parts of a group's K blocks cover them exactly once, in order, as many as the plan says;
// the plan fills the SMs in one wave without a part below the minimum length, and leaves
// alone what needs no split. The GPU test (test_ops_fp8.cpp, "fp8 grouped: k-split*") checks
// the sums.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/fp8_ksplit.hpp"

namespace S = ds::cuda::ksplit;

TEST_CASE("fp8 k-split: the parts cover the K blocks once, in order") {
  for (int64_t kb0 : {0, 3, 128})
    for (int64_t n : {1, 4, 5, 17, 128, 129, 1000})
      for (int s = 1; s <= S::kMaxSplits; ++s) {
        CAPTURE(kb0);
        CAPTURE(n);
        CAPTURE(s);
        std::vector<int> seen(std::size_t(n), 0);
        int64_t next = kb0, nonempty = 0;
        for (int i = 0; i < s; ++i) {
          const S::Part p = S::part(kb0, kb0 + n, s, i);
          REQUIRE(p.kb0 <= p.kb1);
          if (p.kb1 == p.kb0) continue;
          CHECK(p.kb0 == next);   // consecutive, ascending
          next = p.kb1;
          ++nonempty;
          for (int64_t k = p.kb0; k < p.kb1; ++k) ++seen[std::size_t(k - kb0)];
        }
        CHECK(next == kb0 + n);
        bool once = true;
        for (int c : seen) once = once && c == 1;
        CHECK(once);
        CHECK(nonempty == (s <= n ? s : n));   // none empty while there are blocks enough
        for (int i = 0; i < s; ++i) {          // floor(n / s) or ceil(n / s) blocks each
          const S::Part p = S::part(kb0, kb0 + n, s, i);
          CHECK(p.kb1 - p.kb0 >= n / s);
          CHECK(p.kb1 - p.kb0 <= (n + s - 1) / s);
        }
      }
}

TEST_CASE("fp8 k-split: the plan") {
  // the `1b` preset's FP8 Wgrads on 132 SMs: 16,384 tokens = 128 K blocks
  CHECK(S::splits(24, 128, 132) == 5);    // q_a, kv_a (1024 x 384, 1024 x 288): 120 blocks
  CHECK(S::splits(36, 128, 132) == 3);    // q_b (1536 x 384): 108
  CHECK(S::splits(64, 128, 132) == 2);    // o (1024 x 1024): 128
  CHECK(S::splits(67, 128, 132) == 1);    // more than half the SMs: left alone
  CHECK(S::splits(1, 128, 132) == 16);    // capped
  CHECK(S::splits(1, 20, 132) == 5);      // parts of at least 4 K blocks
  CHECK(S::splits(4, 3, 132) == 1);       // too short to split
  CHECK(S::splits(0, 128, 132) == 1);
  CHECK(S::splits(24, 128, 0) == 1);      // no SM count: no split
  for (int64_t tiles = 1; tiles <= 200; ++tiles)
    for (int64_t nkb : {1, 7, 64, 128, 1024}) {
      const int s = S::splits(tiles, nkb, 132);
      CHECK(s >= 1);
      CHECK(s <= S::kMaxSplits);
      if (s > 1) {
        CHECK(tiles * s <= 132);   // one wave
        for (int i = 0; i < s; ++i) {   // no part too short
          const S::Part p = S::part(5, 5 + nkb, s, i);
          CHECK(p.kb1 - p.kb0 >= S::kMinBlocks);
        }
      }
    }
}
