// Pipeline schedules (see include/ds/train/pipeline_schedule.hpp).
#include "ds/train/pipeline_schedule.hpp"

#include <algorithm>
#include <map>
#include <tuple>

#include "ds/core/error.hpp"

namespace ds::train {

void check_pp_schedule(const std::string& schedule, int pp) {
  if (schedule == "dualpipe" && pp % 2 != 0)
    DS_THROW(UsageError, "--pp-schedule dualpipe needs an even --pp (got {})", pp);
}

namespace {

std::vector<PipeOp> dualpipe(int P, int r, int M) {
  check_pp_schedule("dualpipe", P);
  if (M % 2 != 0 || M < 2 * P)
    DS_THROW(UsageError,
             "--pp-schedule dualpipe needs an even number of micro-batches per step, at least 2 x "
             "--pp = {} (got {}: set --batch-size / --micro-batch-size)", 2 * P, M);
  const int R = P / 2, H = M / 2, h = std::min(r, P - 1 - r);
  // phase a: the direction entering at this rank's end of the pipeline; b: the other one
  const int a = r < R ? 0 : 1, b = 1 - a;
  int next[2][2] = {{0, 0}, {0, 0}};   // [backward][dir]: next micro-batch of that kind
  std::vector<PipeOp> ops;
  auto F = [&](int d) { ops.push_back({false, d, d * H + next[0][d]++}); };
  auto B = [&](int d) { ops.push_back({true, d, d * H + next[1][d]++}); };
  for (int i = 0; i < 2 * (R - h - 1); ++i) F(a);                        // 1: nF0
  for (int i = 0; i < h + 1; ++i) { F(a); F(b); }                        // 2: nF0F1
  for (int i = 0; i < R - h - 1; ++i) { B(b); F(b); }                    // 3: nB1W1F1
  for (int i = 0; i < H - P + h + 1; ++i) { F(a); B(b); F(b); B(a); }    // 4: nF0B1F1B0
  for (int i = 0; i < R - h - 1; ++i) { B(b); F(b); B(a); }              // 5: nB1F1B0
  for (int i = 0; i < h + 1; ++i) { B(b); B(a); }                        // 6: nB1B0
  for (int i = 0; i < R - h - 1; ++i) B(a);                              // 7: nWB0
  for (int d = 0; d < 2; ++d)
    DS_CHECK(next[0][d] == H && next[1][d] == H, "dualpipe schedule: {} forwards, {} backwards of "
             "direction {} (expected {})", next[0][d], next[1][d], d, H);
  return ops;
}

}  // namespace

std::vector<PipeOp> pipeline_schedule(const std::string& schedule, int P, int r, int M,
                                      bool train) {
  std::vector<PipeOp> ops;
  if (!train) {
    for (int m = 0; m < M; ++m) ops.push_back({false, 0, m});
    return ops;
  }
  if (schedule == "dualpipe") return dualpipe(P, r, M);
  if (schedule == "gpipe") {   // (one stage under 1F1B: F0 B0 F1 B1 ..., one micro-batch held)
    for (int m = 0; m < M; ++m) ops.push_back({false, 0, m});
    for (int m = 0; m < M; ++m) ops.push_back({true, 0, m});
    return ops;
  }
  if (schedule != "1f1b")
    DS_THROW(UsageError, "--pp-schedule {}: expected 1f1b, gpipe or dualpipe", schedule);
  const int warm = std::min(M, P - r - 1);
  for (int m = 0; m < warm; ++m) ops.push_back({false, 0, m});
  for (int m = warm; m < M; ++m) {
    ops.push_back({false, 0, m});
    ops.push_back({true, 0, m - warm});
  }
  for (int m = M - warm; m < M; ++m) ops.push_back({true, 0, m});
  return ops;
}

double simulate_pipeline(const std::string& schedule, int P, int M, double Ft, double Bt,
                         std::vector<double>* busy) {
  std::vector<std::vector<PipeOp>> lists;
  for (int r = 0; r < P; ++r) lists.push_back(pipeline_schedule(schedule, P, r, M, true));
  std::map<std::tuple<bool, int, int, int>, double> done;   // (backward, dir, m, stage) -> end
  std::vector<size_t> pos(size_t(P), 0);
  std::vector<double> t(size_t(P), 0.0), b(size_t(P), 0.0);
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < P; ++r) {
      while (pos[size_t(r)] < lists[size_t(r)].size()) {
        const PipeOp& op = lists[size_t(r)][pos[size_t(r)]];
        const int s = stage_of(P, r, op.dir);
        double ready = t[size_t(r)];
        auto need = [&](bool bw, int stage) {
          auto it = done.find({bw, op.dir, op.m, stage});
          if (it == done.end()) return false;
          ready = std::max(ready, it->second);
          return true;
        };
        bool ok = op.backward ? need(false, s) && (s == P - 1 || need(true, s + 1))
                              : (s == 0 || need(false, s - 1));
        if (!ok) break;
        const double dur = op.backward ? Bt : Ft;
        t[size_t(r)] = ready + dur;
        b[size_t(r)] += dur;
        done[{op.backward, op.dir, op.m, s}] = t[size_t(r)];
        ++pos[size_t(r)];
        progress = true;
      }
    }
  }
  for (int r = 0; r < P; ++r)
    if (pos[size_t(r)] < lists[size_t(r)].size()) return -1.0;
  if (busy) *busy = b;
  return *std::max_element(t.begin(), t.end());
}

}  // namespace ds::train
