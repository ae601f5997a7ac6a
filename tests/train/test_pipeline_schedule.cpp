// Pipeline schedules: every rank's list holds each forward and backward once, the lists of all
// ranks run to the end (no deadlock) when each operation waits only for its data, and the
// simulated bubble follows the formulas: (pp-1)(F+B) for GPipe/1F1B; for DualPipe without
// zero-bubble weight passes or overlap, at most the paper's (pp/2-1)(F&B + B - 3W) with
// W = 0 and F&B = F + B, and below 1F1B's.
#include <doctest/doctest.h>

#include <map>
#include <numeric>

#include "ds/core/error.hpp"
#include "ds/train/pipeline_schedule.hpp"

using namespace ds::train;

TEST_CASE("pipeline schedules: every micro-batch once, no deadlock, bubble per formula") {
  const double F = 1.0, B = 2.0;
  for (const char* sched : {"gpipe", "1f1b", "dualpipe"})
    for (int P : {2, 4, 6, 8})
      for (int M : {2 * P, 2 * P + 2, 4 * P}) {
        CAPTURE(sched);
        CAPTURE(P);
        CAPTURE(M);
        for (int r = 0; r < P; ++r) {
          std::map<std::pair<bool, int>, int> seen;   // (backward, m) -> count
          for (const PipeOp& op : pipeline_schedule(sched, P, r, M, true)) {
            seen[{op.backward, op.m}]++;
            // DualPipe: direction 0 takes the first half of the micro-batches
            if (std::string(sched) == "dualpipe") CHECK(op.dir == (op.m < M / 2 ? 0 : 1));
            else CHECK(op.dir == 0);
          }
          CHECK(seen.size() == size_t(2 * M));
          for (const auto& [k, n] : seen) CHECK(n == 1);
        }
        std::vector<double> busy;
        const double T = simulate_pipeline(sched, P, M, F, B, &busy);
        REQUIRE(T > 0);
        for (double b : busy) CHECK(b == doctest::Approx(M * (F + B)));
        const double bubble = T - M * (F + B);
        if (std::string(sched) == "dualpipe") {
          // the paper's (pp/2-1)(F&B + B - 3W) with W = 0 and F&B = F + B (no overlap); the
          // simulated makespan bubble is 0, 3, 7, 11 for pp 2, 4, 6, 8 (F = 1, B = 2)
          CHECK(bubble <= (P / 2 - 1) * (F + 2 * B) + 1e-9);
          CHECK(bubble < (P - 1) * (F + B));
          if (P <= 4) CHECK(bubble == doctest::Approx((P / 2 - 1) * (F + B)));
        } else {
          CHECK(bubble == doctest::Approx((P - 1) * (F + B)));
        }
      }
}

TEST_CASE("pipeline schedules: 1F1B keeps at most pp - stage micro-batches in flight") {
  const int P = 4, M = 12;
  for (int r = 0; r < P; ++r) {
    int live = 0, peak = 0;
    for (const PipeOp& op : pipeline_schedule("1f1b", P, r, M, true)) {
      live += op.backward ? -1 : 1;
      peak = std::max(peak, live);
    }
    CHECK(peak == P - r);
  }
}

TEST_CASE("pipeline schedules: forward-only lists and bad DualPipe layouts") {
  auto fwd = pipeline_schedule("dualpipe", 4, 1, 3, false);   // evaluation: any M
  CHECK(fwd.size() == 3);
  for (const PipeOp& op : fwd) CHECK(!op.backward);
  CHECK_THROWS_AS(pipeline_schedule("dualpipe", 3, 0, 12, true), ds::UsageError);
  CHECK_THROWS_AS(pipeline_schedule("dualpipe", 4, 0, 6, true), ds::UsageError);   // < 2 pp
  CHECK_THROWS_AS(pipeline_schedule("dualpipe", 4, 0, 9, true), ds::UsageError);   // odd
  CHECK_THROWS_AS(pipeline_schedule("zigzag", 4, 0, 8, true), ds::UsageError);
}
