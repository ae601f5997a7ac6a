// ZeRO-1 AdamW: the optimiser state is sharded over the data-parallel ranks that hold the same
// parameters, while every rank keeps full FP32 parameter values (DeepSeek-V3 paper §3.2.2,
// "ZeRO-1 data parallelism"). Two sync groups:
//   replicated parameters (ParamInfo::expert < 0) over the dp group (the stage's dp ranks),
//   routed-expert parameters (expert >= 0) over the edp group (the ranks holding the same experts).
// Per group, the group's parameters in registration order form one flat F32 vector of
// `total` elements, padded with zeros to size() * chunk; group rank r owns [r*chunk, (r+1)*chunk)
// and keeps AdamW moments (BF16 or FP32) for that chunk only. A step is
//   reduce_gradients: reduce-scatter (sum) of the flat gradients -> each rank's summed chunk;
//   grad_stats:       squares of the owned chunks, summed in double over the world;
//   step:             AdamW on the owned chunk (ops::adamw_step, the same arithmetic as
//                     AdamW::step), then all-gather of the updated chunks into every rank's
//                     parameters.
// The result equals single-process AdamW on the summed gradient up to the float summation
// order of the reduction; with groups of one rank it is AdamW bit for bit.
// Copies: a parameter that duplicates one held by another stage (the last pipeline stage's
// copy of model.embed_tokens.weight when MTP is on; it carries the original's name) is
// optimised like any other (the trainer all-reduces its gradient with the original's first,
// so both stay identical) but counted in no norm and written by no checkpoint.
// Parameters and gradients are host (CPU) tensors, as the MPI communicator expects.
// reference: Rajbhandari et al., "ZeRO" (2020) stage 1; torch.optim.AdamW; optimizer.hpp.
#pragma once
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ds/dist/comm.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/params.hpp"
#include "ds/ops/ops.hpp"
#include "ds/train/optimizer.hpp"

namespace ds::train {

// Finds a full moment tensor "<param>.exp_avg" / "<param>.exp_avg_sq" by name (nullptr when
// absent); the view must stay valid for the duration of load_state.
using StateLookup = std::function<const io::TensorView*(const std::string& name)>;

class ShardedAdamW {
 public:
  // Collective over dp and edp (every rank of both calls it, in the same order): checks that
  // the group's ranks hold the same parameter layout (InternalError naming the group otherwise).
  // `copies`: names of parameters that are copies (see above); each must be in `params`.
  // `dp` and `edp` may be the same communicator (no expert parallelism: edp == dp).
  ShardedAdamW(model::ParamStore& params, const OptimizerOptions& opts, dist::Comm& dp,
               dist::Comm& edp, std::set<std::string> copies = {});

  // Reduce-scatters Param::grad of every parameter (sum over the group; the trainer scales
  // micro-batch losses by the global batch so the sum is the full gradient). Param::grad is
  // left as it was; the reduced chunk lives in this object until the next call.
  void reduce_gradients(const ops::Context& ctx);
  // Global L2 norm and non-finite count of the reduced gradients, every element counted once
  // over `world` (copies excluded). Collective over world. Call after reduce_gradients.
  GradStats grad_stats(const ops::Context& ctx, dist::Comm& world) const;
  // Clips by stats.norm (c = clip / (norm + 1e-6) when norm > clip, as AdamW::step), updates
  // the owned chunks and all-gathers them: afterwards every rank of a group has the same
  // parameter values. Collective over dp and edp.
  void step(const ops::Context& ctx, float lr, const GradStats& stats);
  int64_t steps_done() const { return step_; }
  void set_steps_done(int64_t s) { step_ = s; }
  const OptimizerOptions& options() const { return opts_; }
  model::ParamStore& params() { return params_; }
  dist::Comm& dp() { return *groups_[0].comm; }
  dist::Comm& edp() { return *groups_[1].comm; }

  // Whether this rank writes parameter p (and its moments) in a checkpoint: group rank 0 of
  // p's group, and p is not a copy. Buffers (router biases) are written by dp rank 0.
  bool writes(const model::Param& p) const;
  bool writes_buffers() const { return groups_[0].comm->rank() == 0; }
  bool is_copy(const std::string& name) const { return copies_.count(name) != 0; }

  // Full moment tensors of the parameters this rank writes, in registration order, each
  // parameter's "<name>.exp_avg" then "<name>.exp_avg_sq" (shape of the parameter, moment
  // dtype): the names and order of AdamW::state_tensors. Collective over dp and edp (the
  // chunks travel point to point to group rank 0); empty on ranks that write nothing.
  std::vector<std::pair<std::string, Tensor>> gather_state();
  // Fills this rank's moment chunks from full tensors (any number of ranks or layout saved
  // them). FormatError listing the missing tensors, or naming one of the wrong dtype/shape.
  // Local: no communication.
  void load_state(const StateLookup& find);

 private:
  // A run of owned chunk elements [chunk_offset, +length) = param elements [param_offset, +length).
  struct Segment {
    model::Param* param = nullptr;
    int64_t param_offset = 0, chunk_offset = 0, length = 0;
  };
  struct Group {
    const char* name = "";               // "dp" | "edp" (messages)
    dist::Comm* comm = nullptr;
    std::vector<model::Param*> members;  // registration order
    std::vector<int64_t> offsets;        // flat offset of each member
    int64_t total = 0, chunk = 0;        // elements; size() * chunk >= total
    int64_t owned = 0;                   // chunk elements before the padding (<= chunk)
    std::vector<Segment> segs;           // the owned chunk, in flat order
    Tensor grad;                         // (chunk) F32 reduced gradient
    Tensor m, v;                         // (chunk) moments
  };
  void build(Group& g);
  void gather_group(Group& g, Tensor& m_full, Tensor& v_full);

  model::ParamStore& params_;
  OptimizerOptions opts_;
  std::set<std::string> copies_;
  Group groups_[2];                      // 0: replicated over dp, 1: experts over edp
  int64_t step_ = 0;
  bool reduced_ = false;                 // reduce_gradients ran since construction
};

}  // namespace ds::train
