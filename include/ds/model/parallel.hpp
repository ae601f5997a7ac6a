// How one rank's model is cut out of the whole (docs/distributed.md):
// - expert parallelism: the E routed experts of every MoE layer are split into ep contiguous
//   ranges of E/ep; this rank registers and runs experts [e_begin, e_end) and exchanges tokens
//   with the other ranks of the ep group (all-to-all dispatch and combine, forward and backward);
// - pipeline parallelism: the n_layers main blocks are split into pp contiguous stages (earlier
//   stages take the extra layers when pp does not divide n_layers, since the last stage also
//   holds the final norm, the head and the MTP modules); the first stage holds the embedding,
//   the last stage the final norm, lm_head and MTP modules, plus a copy of the embedding when
//   MTP is on (its gradient is summed with the first stage's, like a tied embedding).
// Parameters a rank does not hold are not registered in its ParamStore. Under DualPipe a rank
// holds two stages (r and pp-1-r) as two Transformers over one ParamStore; the model
// registers the embedding once and both chunks use it.
#pragma once
#include <cstdint>
#include <utility>

#include "ds/dist/comm.hpp"

namespace ds::model {

struct ExpertParallel {
  dist::Comm* comm = nullptr;   // the ep group; null = all experts local
  int rank() const { return comm ? comm->rank() : 0; }
  int size() const { return comm ? comm->size() : 1; }
  bool active() const { return size() > 1; }
  // Experts [first, second) of E held by this rank (ConfigError unless size() divides E).
  std::pair<int64_t, int64_t> local_range(int64_t E) const;
};

struct ModelParallel {
  ExpertParallel ep;
  int pp_rank = 0, pp_size = 1;
  bool first_stage() const { return pp_rank == 0; }
  bool last_stage() const { return pp_rank == pp_size - 1; }
};

// Main layers [first, second) of stage `pp_rank` of `pp_size` (ConfigError when there are more
// stages than layers).
std::pair<int64_t, int64_t> stage_layers(int64_t n_layers, int pp_size, int pp_rank);

}  // namespace ds::model
