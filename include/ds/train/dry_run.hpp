// ds-pretrain --dry-run's plan of a layout: what one rank of every pipeline stage holds and
// keeps during a step (lib/train/dry_run.cpp; the rules of include/ds/model/parallel.hpp and
// include/ds/train/zero.hpp). dry_run() itself is declared in pretrain.hpp.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "ds/dist/topology.hpp"
#include "ds/model/config.hpp"
#include "ds/train/pretrain.hpp"

namespace ds::train {

struct RankPlan {
  int pp_rank = 0;
  std::vector<std::pair<int64_t, int64_t>> layers;   // main layers of its stage (two: DualPipe)
  int64_t params = 0;            // parameters it holds (its share of the routed experts)
  int64_t optimizer_params = 0;  // those whose AdamW moments it keeps (its ZeRO-1 chunks)
  int64_t in_flight = 1;         // micro-batches whose activations it holds at its peak
  // bytes; optimizer: AdamW moments (and, sharded, the reduced F32 gradient) of its share
  double weights = 0, grads = 0, optimizer = 0, activations = 0;
  double update_buffer = 0;      // the ZeRO-1 update's gathered F32 vector (after backward)
  double ema_host = 0;           // bytes of host memory for --ema-decay (0: off)
  double total() const {
    return weights + grads + optimizer + (activations > update_buffer ? activations
                                                                      : update_buffer);
  }
};

struct LayoutPlan {
  int world_size = 1;
  dist::Layout layout;
  int64_t rows_per_rank = 0, micro_batch_size = 0, micro_batches = 0;
  std::vector<RankPlan> ranks;   // pipeline rank 0, 1, ... (its dp ranks alike)
};

// The layout of --world-size (default pp x ep), --pp, --ep, --pp-schedule, --batch-size,
// --micro-batch-size and --seq-len for model `a`. UsageError naming the flag when the layout
// cannot be (the checks of a real launch).
LayoutPlan plan_layout(const PretrainOptions& o, const model::ModelArgs& a);

}  // namespace ds::train
