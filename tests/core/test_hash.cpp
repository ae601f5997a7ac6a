// XXH64 against published test vectors; streaming equals one-shot for any split.
#include <doctest/doctest.h>

#include <random>
#include <string>

#include "ds/core/hash.hpp"

TEST_CASE("xxh64 known vectors") {
  CHECK(ds::xxh64("") == 0xEF46DB3751D8E999ull);
  CHECK(ds::xxh64("abc") == 0x44BC2CF5AD770999ull);
  CHECK(ds::xxh64("Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1ull);
  CHECK(ds::hex64(0xEF46DB3751D8E999ull) == "ef46db3751d8e999");
}

TEST_CASE("xxh64 streaming equals one-shot") {
  std::mt19937 rng(7);
  std::string s(1000, '\0');
  for (auto& c : s) c = char(rng());
  for (size_t len : {0u, 1u, 31u, 32u, 33u, 64u, 100u, 999u, 1000u}) {
    uint64_t want = ds::xxh64(s.data(), len, 42);
    for (int trial = 0; trial < 20; ++trial) {
      ds::Xxh64Stream st(42);
      size_t pos = 0;
      while (pos < len) {
        size_t n = std::min<size_t>(len - pos, rng() % 40);
        st.update(s.data() + pos, n);
        pos += n;
      }
      REQUIRE(st.digest() == want);
    }
  }
}
