// Pipeline schedules as per-rank operation lists (docs/distributed.md "Pipeline parallelism").
// A rank executes its list in order; each operation waits only for its data (the previous
// stage's activations, the next stage's gradients), so a list order is deadlock-free exactly
// when the simulation below finishes.
//   gpipe:    all forwards, then all backwards (bubble (pp-1)(F+B) per step);
//   1f1b:     pp - s - 1 warm-up forwards on stage s, then one forward / one backward, then
//             the remaining backwards (same bubble, at most pp micro-batches in flight);
//   dualpipe: DeepSeek-V3's bidirectional schedule (paper §3.2.1, spec §7.1): pp even, the
//             micro-batches split in two halves entering at either end; rank r holds stage r of
//             direction 0 and stage pp-1-r of direction 1; per rank the eight phases of the
//             reference schedule (nF0, nF0F1, nB1F1, nF0B1F1B0, nB1F1B0, nB1B0, nB0) with
//             the zero-bubble weight passes folded into the backward passes (our backward
//             computes input and weight gradients together) and no compute/communication
//             overlap. Simulated with B = 2F the step's bubble is 0, 3F, 7F, 11F for pp 2, 4,
//             6, 8 (1F1B: 3F, 9F, 15F, 21F), within the paper's (pp/2-1)(F&B + B - 3W) for
//             W = 0 and F&B = F + B.
// reference: Narayanan et al. 2021 (1F1B); deepseek-ai/DualPipe dualpipe.py (phase counts).
#pragma once
#include <string>
#include <vector>

namespace ds::train {

struct PipeOp {
  bool backward = false;
  int dir = 0;   // 0: enters at pp rank 0; 1: DualPipe's reverse direction (enters at pp - 1)
  int m = 0;     // micro-batch index in the step's list (direction 1 takes the second half)
};

// UsageError for --pp-schedule dualpipe with an odd --pp (also 1: one process).
void check_pp_schedule(const std::string& schedule, int pp);

// The operation list of pipeline rank `rank` of `pp` for M micro-batches. train = false gives
// forwards only (evaluation). UsageError naming the flag for dualpipe with an odd --pp, an odd
// number of micro-batches or fewer than 2 * pp of them.
std::vector<PipeOp> pipeline_schedule(const std::string& schedule, int pp, int rank, int M,
                                      bool train);

// Stage of direction dir held by pipeline rank r, and the rank holding stage s of dir.
inline int stage_of(int pp, int rank, int dir) { return dir == 0 ? rank : pp - 1 - rank; }
inline int rank_of_stage(int pp, int stage, int dir) { return dir == 0 ? stage : pp - 1 - stage; }

// Executes every rank's list with forward time F and backward time B (a backward needs its own
// forward and the next stage's backward; a forward the previous stage's forward). Returns the
// makespan, or a negative value when the lists deadlock. busy[r] = F and B time of rank r.
double simulate_pipeline(const std::string& schedule, int pp, int M, double F, double B,
                         std::vector<double>* busy = nullptr);

}  // namespace ds::train
