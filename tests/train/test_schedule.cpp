// Schedules (LR phases, batch ramp, lambda and gamma switches) at their breakpoints, and the
// packed loader's order: a pure function of (seed, epoch), resumable from (epoch, position).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <vector>

#include "ds/data/shard.hpp"
#include "ds/train/data_loader.hpp"
#include "ds/train/schedule.hpp"

using namespace ds::train;

TEST_CASE("paper schedule shapes, scaled to the run") {
  ScheduleOptions o;               // defaults: the paper's breakpoints / 14.8T
  o.lr = 2.2e-4;
  o.warmup_steps = 2000;
  const int64_t total = 14'800'000;  // "14.8T" scaled down 10^6
  Schedule s(o, total, 240000, 15360);
  CHECK(s.lr(0, 0) == doctest::Approx(2.2e-4 / 2000));
  CHECK(s.lr(999, 0) == doctest::Approx(1.1e-4));            // spec §11: step 1000 -> 1.1e-4
  CHECK(s.lr(5000, 9'000'000) == doctest::Approx(2.2e-4));   // constant phase
  // cosine midpoint (12.15T) -> (2.2e-4 + 2.2e-5) / 2 = 1.21e-4
  CHECK(s.lr(100000, 12'150'000) == doctest::Approx(1.21e-4).epsilon(1e-6));
  CHECK(s.lr(100000, 14'400'000) == doctest::Approx(2.2e-5));  // first tail
  CHECK(s.lr(100000, 14'700'000) == doctest::Approx(7.3e-6));  // second tail
  // batch ramp 3072 -> 15360 over the first 469B tokens, linear
  CHECK(s.batch(0) == 3072);
  CHECK(s.batch(469'000 / 2) == (3072 + 15360) / 2);
  CHECK(s.batch(469'000) == 15360);
  CHECK(s.mtp_lambda(9'999'999) == doctest::Approx(0.3));
  CHECK(s.mtp_lambda(10'000'000) == doctest::Approx(0.1));
  CHECK(s.gamma(14'299'999) == doctest::Approx(0.001));
  CHECK(s.gamma(14'300'000) == 0.0);
}

TEST_CASE("auto warm-up and no ramp") {
  ScheduleOptions o;
  o.ramp_end = 0;
  Schedule s(o, 1000, 500, 8);
  CHECK(s.warmup_steps() == 5);
  CHECK(s.batch(0) == 8);
  CHECK(s.lr(4, 0) == doctest::Approx(o.lr));
}

// Tokens of `steps` steps of the schedule over `total` tokens, step by step (the reference).
int64_t simulate(const ScheduleOptions& o, int64_t total, int64_t steps, int64_t B, int64_t T) {
  Schedule s(o, total, steps, B);
  int64_t seen = 0;
  for (int64_t i = 0; i < steps; ++i) seen += s.batch(seen) * T;
  return seen;
}

TEST_CASE("run length: the batch ramp is counted, so the schedules reach their end") {
  ScheduleOptions o;   // the paper's fractions; the ramp 1 -> 5 over the first 3.2%
  o.ramp_end = 0.3;    // a long ramp makes the difference large
  const int64_t B = 5, T = 8;
  // --steps 300: the tokens the 300 ramped steps see are the schedules' 100% (within a batch)
  const RunLength by_steps = plan_run(o, B, T, 300, 0);
  CHECK(by_steps.steps == 300);
  const int64_t seen = simulate(o, by_steps.tokens, 300, B, T);
  CHECK(seen <= by_steps.tokens);
  CHECK(by_steps.tokens - seen < B * T);
  CHECK(by_steps.tokens < 300 * B * T);   // the old plan, 300 full batches, was never reached
  Schedule s(o, by_steps.tokens, 300, B);
  CHECK(s.lr(299, seen - s.batch(seen) * T) == doctest::Approx(o.lr * o.tail2_ratio));
  // --tokens 12000: steps until at least 12000 tokens, and no step more
  const RunLength by_tokens = plan_run(o, B, T, 0, 12000);
  CHECK(by_tokens.tokens == 12000);
  CHECK(simulate(o, 12000, by_tokens.steps, B, T) >= 12000);
  CHECK(simulate(o, 12000, by_tokens.steps - 1, B, T) < 12000);
  // without a ramp: whole batches, as before
  o.ramp_end = 0;
  CHECK(plan_run(o, B, T, 300, 0).tokens == 300 * B * T);
  CHECK(plan_run(o, B, T, 0, 12001).steps == 301);
}

namespace {
std::filesystem::path make_dataset(int64_t n_tokens) {
  auto dir = std::filesystem::temp_directory_path() / "ds_test_loader";
  std::filesystem::remove_all(dir);
  ds::data::DatasetWriter w(dir, 1000, "0123456789abcdef");
  std::vector<uint32_t> doc;
  for (int64_t i = 0; i < n_tokens; ++i) doc.push_back(uint32_t(i % 1000));
  w.add_document(doc);
  w.finish();
  return dir;
}
std::vector<int32_t> take(PackedLoader& l, int64_t B, int64_t T) {
  const ds::model::Batch b = l.next(B);
  REQUIRE(b.tokens.size(1) == T + 1);
  return std::vector<int32_t>(b.tokens.i32(), b.tokens.i32() + b.tokens.numel());
}
}  // namespace

TEST_CASE("packed loader: epochs are permutations, order depends only on seed and state") {
  auto dir = make_dataset(16 * 10 + 1);   // 10 sequences of 16 (+1 target token)
  ds::data::Dataset ds(dir);
  PackedLoader a(ds, 16, 42, 2);
  CHECK(a.n_train() == 8);
  CHECK(a.n_val() == 2);
  std::set<int32_t> firsts;
  for (int i = 0; i < 8; ++i) {
    auto s = take(a, 1, 16);
    CHECK(s[16] == s[0] + 16);           // contiguous window of T+1 tokens
    firsts.insert(s[0]);
  }
  CHECK(firsts.size() == 8);              // one epoch visits every training sequence once
  CHECK(*firsts.rbegin() < 8 * 16);       // validation sequences never used for training
  CHECK(a.state().epoch == 0);
  auto next_epoch = take(a, 3, 16);
  CHECK(a.state().epoch == 1);
  // resume from the saved state gives the same batches
  PackedLoader b(ds, 16, 42, 2);
  b.set_state({1, 0});
  CHECK(take(b, 3, 16) == next_epoch);
  // another seed, another order
  PackedLoader c(ds, 16, 43, 2), d(ds, 16, 42, 2);
  CHECK(take(c, 8, 16) != take(d, 8, 16));
  std::filesystem::remove_all(dir);
}
