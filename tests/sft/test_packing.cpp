// SFT packing: first-fit rows (every sample exactly once, capacity respected, deterministic),
// per-epoch seeded order, batches with segments / restarting positions / loss masks that never
// cross a sample boundary, the resumable row stream, and the SFT cosine schedule.
// reference: include/ds/sft/packing.hpp, include/ds/train/trainer.hpp (cosine_lr).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "ds/core/error.hpp"
#include "ds/sft/packing.hpp"
#include "ds/train/trainer.hpp"

using namespace ds::sft;

namespace {

// A sample of `len` tokens with ids base, base+1, ...; targets on the second half.
Sample make_sample(int64_t len, int32_t base) {
  Sample s;
  for (int64_t i = 0; i < len; ++i) {
    s.tokens.push_back(base + int32_t(i));
    s.target.push_back(i >= len / 2 && i > 0 ? 1 : 0);
    s.n_targets += s.target.back();
  }
  return s;
}

}  // namespace

TEST_CASE("first-fit packing: each sample once, rows within capacity, deterministic") {
  const std::vector<int64_t> len{5, 7, 3, 9, 2, 6, 4, 8};
  std::vector<int64_t> order(len.size());
  std::iota(order.begin(), order.end(), 0);
  auto rows = pack_rows(len, order, 10, true, 2);
  // open rows (at most 2): {5} {7} -> {5,3} {7} -> 9 opens a third row, {5,3} is emitted ->
  // {7,2} {9} -> 6 opens a row, {7,2} emitted -> {9} {6,4} full, emitted -> {9} {8} at the end
  std::vector<int64_t> seen;
  for (const Row& r : rows) {
    int64_t t = 0;
    for (int64_t s : r.samples) { t += len[size_t(s)]; seen.push_back(s); }
    CHECK(t == r.tokens);
    CHECK(r.tokens <= 10);
  }
  std::sort(seen.begin(), seen.end());
  CHECK(seen == order);
  std::vector<std::vector<int64_t>> want{{0, 2}, {1, 4}, {5, 6}, {3}, {7}};
  REQUIRE(rows.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) CHECK(rows[i].samples == want[i]);
  CHECK(pack_rows(len, order, 10, true, 2).size() == rows.size());
  // without packing: one sample per row, in order
  auto single = pack_rows(len, order, 10, false);
  REQUIRE(single.size() == len.size());
  for (size_t i = 0; i < len.size(); ++i)
    CHECK(single[i].samples == std::vector<int64_t>{int64_t(i)});
  CHECK_THROWS_AS(pack_rows(std::vector<int64_t>{11}, std::vector<int64_t>{0}, 10, true),
                  ds::UsageError);
}

TEST_CASE("epoch order: a permutation, a function of (seed, epoch)") {
  auto a = epoch_order(50, 7, 0), b = epoch_order(50, 7, 1), c = epoch_order(50, 7, 0);
  CHECK(a == c);
  CHECK(a != b);
  CHECK(a != epoch_order(50, 8, 0));
  std::sort(b.begin(), b.end());
  for (int64_t i = 0; i < 50; ++i) CHECK(b[size_t(i)] == i);
}

TEST_CASE("batch: segments, positions restart per sample, mask only inside a sample") {
  std::vector<Sample> samples{make_sample(4, 100), make_sample(6, 200), make_sample(3, 300)};
  std::vector<Row> rows{Row{{0, 1}, 10}, Row{{2}, 3}};
  const int64_t T = 11;   // rows of 12 tokens
  ds::model::Batch b = make_batch(samples, rows, T, /*pad_id=*/2);
  CHECK(b.tokens.shape() == std::vector<int64_t>{2, T + 1});
  const int32_t* tok = b.tokens.i32();
  const int32_t* seg = b.segments.i32();
  const int32_t* pos = b.positions.i32();
  const float* mask = b.loss_mask.f32();
  // row 0: [100..103][200..205][pad pad]
  std::vector<int32_t> want_tok{100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 2, 2};
  CHECK(std::vector<int32_t>(tok, tok + T + 1) == want_tok);
  CHECK(std::vector<int32_t>(seg, seg + T) ==
        std::vector<int32_t>{0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2});
  CHECK(std::vector<int32_t>(pos, pos + T) ==
        std::vector<int32_t>{0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 0});
  // mask[j] = target of token j+1 within the same sample: sample 0 targets tokens 2,3;
  // sample 1 targets tokens 3,4,5 (row 7,8,9); never the first token of the next sample
  CHECK(std::vector<float>(mask, mask + T) == std::vector<float>{0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0});
  float w = 0;
  for (int64_t i = 0; i < b.loss_mask.numel(); ++i) w += mask[i];
  CHECK(int64_t(w) == count_targets(samples, rows));
  // row 1: one sample then padding (its own segment, positions restarting)
  CHECK(std::vector<int32_t>(seg + T, seg + 2 * T) ==
        std::vector<int32_t>{0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1});
  CHECK(std::vector<int32_t>(pos + T, pos + T + 5) == std::vector<int32_t>{0, 1, 2, 0, 1});
  CHECK(std::vector<float>(mask + T, mask + T + 4) == std::vector<float>{1, 1, 0, 0});
}

TEST_CASE("row stream: epochs wrap, a restored state continues identically") {
  std::vector<Sample> samples;
  for (int i = 0; i < 23; ++i) samples.push_back(make_sample(2 + (i * 7) % 9, 10 * i));
  RowStream a(samples, 15, 3, true);
  const int64_t e0 = a.rows_in_epoch(0);
  std::vector<Row> first = a.next(e0 + 3);   // into epoch 1
  CHECK(a.state().epoch == 1);
  CHECK(a.state().position == 3);
  RowStream b(samples, 15, 3, true);
  b.set_state(a.state());
  auto x = a.next(e0), y = b.next(e0);
  REQUIRE(x.size() == y.size());
  for (size_t i = 0; i < x.size(); ++i) CHECK(x[i].samples == y[i].samples);
  // every sample once per epoch
  RowStream c(samples, 15, 3, true);
  std::vector<int64_t> seen;
  for (const Row& r : c.next(c.rows_in_epoch(0)))
    for (int64_t s : r.samples) seen.push_back(s);
  std::sort(seen.begin(), seen.end());
  CHECK(seen.size() == samples.size());
  CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end());
  CHECK_THROWS_AS(b.set_state({0, e0 + 1}), ds::FormatError);
}

TEST_CASE("SFT cosine: 5e-6 -> 1e-6, warm-up, exact end points") {
  using ds::train::cosine_lr;
  CHECK(cosine_lr(0, 100, 0, 5e-6, 1e-6) == doctest::Approx(5e-6));
  CHECK(cosine_lr(99, 100, 0, 5e-6, 1e-6) == doctest::Approx(1e-6));
  CHECK(cosine_lr(50, 101, 0, 5e-6, 1e-6) == doctest::Approx(3e-6));   // midpoint
  CHECK(cosine_lr(0, 100, 10, 5e-6, 1e-6) == doctest::Approx(5e-7));
  CHECK(cosine_lr(9, 100, 10, 5e-6, 1e-6) == doctest::Approx(5e-6));
  CHECK(cosine_lr(10, 100, 10, 5e-6, 1e-6) == doctest::Approx(5e-6));
  CHECK(cosine_lr(99, 100, 10, 5e-6, 1e-6) == doctest::Approx(1e-6));
  CHECK(cosine_lr(0, 1, 0, 5e-6, 1e-6) == doctest::Approx(5e-6));      // a one-step run
  for (int64_t s = 1; s < 100; ++s)
    CHECK(cosine_lr(s, 100, 0, 5e-6, 1e-6) <= cosine_lr(s - 1, 100, 0, 5e-6, 1e-6));
}
