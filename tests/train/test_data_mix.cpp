// The pre-training data mixture (train::MixedLoader): --data-weights parsing, one source being
// exactly the plain loader, rows dealt within one row of the weights at every prefix, each
// source's rows its own loader's in order (best-fit masks and lengths with them), and resume
// from the sources' positions.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "../temp_dir.hpp"
#include "ds/core/error.hpp"
#include "ds/data/shard.hpp"
#include "ds/train/data_loader.hpp"
#include "ds/train/data_mix.hpp"

using namespace ds::train;
using ds::testing::TempDir;

namespace {

// A dataset of `docs` documents of 3..40 tokens whose ids all lie in [base, base + 1e6): the
// source of a row is its first token / 1e6.
void write_source(const std::filesystem::path& dir, uint32_t base, int docs) {
  ds::data::DatasetWriter w(dir, 1u << 24, "0123456789abcdef", 1024, 64);
  uint32_t next = base;
  for (int d = 0; d < docs; ++d) {
    std::vector<uint32_t> doc(size_t(3 + (d * 7) % 38));
    for (uint32_t& t : doc) t = next++;
    w.add_document(doc);
  }
  w.finish();
}

std::vector<int32_t> row(const ds::model::Batch& b, int64_t r) {
  const int64_t W = b.tokens.size(1);
  return std::vector<int32_t>(b.tokens.i32() + r * W, b.tokens.i32() + (r + 1) * W);
}

}  // namespace

TEST_CASE("data mix: --data-weights") {
  CHECK(parse_data_weights("", 3) == std::vector<double>{1, 1, 1});
  CHECK(parse_data_weights("3,1", 2) == std::vector<double>{3, 1});
  CHECK(parse_data_weights("0.25", 1) == std::vector<double>{0.25});
  for (const char* bad : {"3", "3,1,1", "3,x", "3,-1", "3,0", "3,", ",3", "inf,1", "1e400,1",
                          "3 ,1", " 3,1", "nan,1", "1e308,1e308"})
    CHECK_THROWS_WITH_AS(parse_data_weights(bad, 2), doctest::Contains("--data-weights"),
                         ds::UsageError);
}

TEST_CASE("data mix: the dealing rule keeps every source near its share") {
  // two sources: within one row at every row; more: never a row ahead, at most 1.3 behind
  std::mt19937_64 rng(3);
  double ahead = -1e9, behind = 1e9;
  for (int trial = 0; trial < 400; ++trial) {
    const size_t S = 2 + size_t(rng() % 9);
    std::vector<double> w(S);
    double sum = 0;
    for (double& x : w) sum += x = std::pow(double(rng() % 1000 + 1) / 1000.0, 4.0) + 1e-4;
    for (double& x : w) x /= sum;
    std::vector<int64_t> n(S, 0);
    int64_t R = 0;
    for (int k = 0; k < 100; ++k) {
      const int64_t rows = 1 + int64_t(rng() % 20);
      const std::vector<int64_t> before = n;
      const std::vector<size_t> who = deal_rows(w, n, rows);
      REQUIRE(int64_t(who.size()) == rows);
      std::vector<int64_t> m = before;   // replay row by row
      for (size_t s : who) {
        m[s]++;
        R++;
        for (size_t i = 0; i < S; ++i) {
          const double d = double(m[i]) - w[i] * double(R);
          ahead = std::max(ahead, d);
          behind = std::min(behind, d);
          if (S == 2) CHECK(std::fabs(d) <= 1.0);
        }
      }
      CHECK(m == n);
    }
  }
  CHECK(ahead < 1.0);
  CHECK(behind > -1.3);
  // ties go to the first source; equal weights alternate
  std::vector<int64_t> n{0, 0, 0};
  CHECK(deal_rows({1.0 / 3, 1.0 / 3, 1.0 / 3}, n, 7) == std::vector<size_t>{0, 1, 2, 0, 1, 2, 0});
}

TEST_CASE("data mix: one source is the plain loader; two are dealt by weight, resumably") {
  TempDir tmp("mix");
  write_source(tmp / "a", 1000000, 300);
  write_source(tmp / "b", 2000000, 20);   // small: it wraps into new epochs
  const ds::data::Dataset a(tmp / "a"), b(tmp / "b");
  for (const Packing packing : {Packing::stride, Packing::best_fit}) {
    INFO(std::string(packing_name(packing)));
    const int64_t T = 16;
    // one source: the same rows as PackedLoader, batch after batch, across epochs
    {
      MixedLoader mix({&b}, {2.0}, T, 11, {3}, packing);
      PackedLoader plain(b, T, 11, 3, packing);
      for (int k = 0; k < 40; ++k) {
        const auto m = mix.next(7), p = plain.next(7);
        REQUIRE(m.tokens.numel() == p.tokens.numel());
        CHECK(std::memcmp(m.tokens.raw(), p.tokens.raw(), m.tokens.nbytes()) == 0);
        CHECK(m.lengths == p.lengths);
        CHECK(mix.rows_per_source() == std::vector<int64_t>{7});
      }
      CHECK(mix.state()[0].epoch > 0);
    }
    // two sources at 3:1
    MixedLoader mix({&a, &b}, {3.0, 1.0}, T, 11, {3, 2}, packing);
    CHECK(mix.weights() == std::vector<double>{0.75, 0.25});
    PackedLoader alone(a, T, 11, 3, packing);   // source 0 keeps the run's seed
    CHECK(mix.source(1).n_val() == 2);
    int64_t n0 = 0, n1 = 0;
    std::unique_ptr<MixedLoader> resumed;   // from mix's state after 12 batches
    for (int k = 0; k < 30; ++k) {
      const auto m = mix.next(5);
      REQUIRE(m.tokens.size(0) == 5);
      CHECK(int64_t(m.lengths.size()) == (packing == Packing::best_fit ? 5 : 0));
      if (resumed) {   // deals the same rows
        const auto x = resumed->next(5);
        CHECK(std::memcmp(x.tokens.raw(), m.tokens.raw(), m.tokens.nbytes()) == 0);
        CHECK(x.lengths == m.lengths);
      }
      int64_t here0 = 0;
      for (int64_t r = 0; r < 5; ++r) {
        const std::vector<int32_t> tokens = row(m, r);
        const int source = tokens[0] / 1000000 - 1;
        REQUIRE((source == 0 || source == 1));
        (source == 0 ? n0 : n1)++;
        here0 += source == 0;
        // within one row of the share after every row
        CHECK(std::fabs(double(n0) - 0.75 * double(n0 + n1)) <= 1.0);
        if (source == 0) {   // source 0's rows are the plain loader's, in order, with masks
          const auto p = alone.next(1);
          CHECK(tokens == row(p, 0));
          if (packing == Packing::best_fit) {
            CHECK(m.lengths[size_t(r)] == p.lengths[0]);
            CHECK(std::memcmp(m.loss_mask.f32() + r * T, p.loss_mask.f32(), size_t(T) * 4) == 0);
          }
        }
      }
      CHECK(mix.rows_per_source() == std::vector<int64_t>{here0, 5 - here0});
      CHECK(mix.rows_given(0) == n0);
      CHECK(mix.rows_given(1) == n1);
      if (k == 11) {
        resumed = std::make_unique<MixedLoader>(std::vector<const ds::data::Dataset*>{&a, &b},
                                                std::vector<double>{3.0, 1.0}, T, 11,
                                                std::vector<int64_t>{3, 2}, packing);
        resumed->set_state(mix.state());
      }
    }
    CHECK(mix.state()[1].epoch > 0);   // the smaller source wrapped into a new epoch
    // a state of another number of sources
    CHECK_THROWS_WITH_AS(mix.set_state({LoaderState{}}),
                         doctest::Contains("1 data source position(s) for 2"), ds::FormatError);
  }
}
