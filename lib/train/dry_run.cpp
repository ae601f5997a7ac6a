// ds-pretrain --dry-run: the parameter counts and a memory plan, for the whole model and, for a
// layout (--world-size, --pp, --ep, --pp-schedule), for one rank of every pipeline stage.
// Per rank (docs/distributed.md, include/ds/model/parallel.hpp, include/ds/train/zero.hpp):
// the stage's layers with its routed experts split ep ways (the embedding once, on the first
// stage or as the last stage's copy when MTP is on; DualPipe's two stages per rank), F32
// weights and gradients of all of them, AdamW moments of its ZeRO-1 share (replicated tensors
// over the dp ranks of the stage, routed experts over the dp / ep ranks holding the same ones;
// DualPipe shares over both pipeline ranks holding a stage), and the activations of the
// micro-batches its pipeline schedule keeps in flight at its peak.
#include "ds/train/dry_run.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>

#include "ds/core/error.hpp"
#include "ds/model/parallel.hpp"
#include "ds/train/dist_step.hpp"
#include "ds/train/pipeline_schedule.hpp"
#include "ds/train/run_setup.hpp"

namespace ds::train {

namespace {

double gib(double bytes) { return bytes / double(1ull << 30); }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Host memory of --ema-decay for F32 weights of `weights` bytes: the average, plus a host copy
// of the weights for its update when they live on the GPU.
double ema_host_bytes(const PretrainOptions& o, double weights) {
  return o.ema_decay > 0 ? weights * (o.device == "cuda" ? 2.0 : 1.0) : 0.0;
}

// One rank of pipeline stage `r` (and, under DualPipe, of stage pp - 1 - r too).
RankPlan rank_plan(const PretrainOptions& o, const model::ModelArgs& a, const LayoutPlan& lp,
                   int r) {
  const dist::Layout& L = lp.layout;
  const bool dual = o.dist.pp_schedule == "dualpipe";
  RankPlan p;
  p.pp_rank = r;
  std::vector<int> stages{r};
  if (dual) stages.push_back(stage_of(L.pp, r, 1));
  int64_t replicated = 0, experts = 0;
  double act[2] = {0, 0};   // activation values per token, by direction
  bool embedding = false;
  for (size_t d = 0; d < stages.size(); ++d) {
    const int s = stages[d];
    const auto [l0, l1] = model::stage_layers(a.n_layers, L.pp, s);
    const bool first = s == 0, last = s == L.pp - 1;
    const model::StagePart part = model::stage_part(a, l0, l1, first, last, L.ep, o.seq_len);
    replicated += part.replicated;
    experts += part.experts;
    act[d] = part.activation_values;
    p.layers.emplace_back(l0, l1);
    embedding = embedding || first || (last && a.n_mtp_layers > 0);
  }
  if (embedding) replicated += a.vocab_size * a.dim;   // held once per rank
  // the micro-batches whose forward is done and backward not yet, at the rank's peak
  double peak = act[0];
  if (L.pp > 1) {
    int64_t live[2] = {0, 0};
    peak = 0;
    for (const PipeOp& op :
         pipeline_schedule(o.dist.pp_schedule, L.pp, r, int(lp.micro_batches), true)) {
      live[op.dir] += op.backward ? -1 : 1;
      const double v = double(live[0]) * act[0] + double(live[1]) * act[1];
      if (v > peak) {
        peak = v;
        p.in_flight = live[0] + live[1];
      }
    }
  }
  // ZeRO-1 groups: the stage's dp ranks, the dp / ep of them holding the same experts (both
  // pipeline ranks of a DualPipe pair). Each keeps the moments and the reduced F32 gradient of
  // its chunk; the update gathers a group's flat F32 vector (size x chunk) when it has more
  // than one rank. (One process runs plain AdamW: moments only.)
  const int64_t pair = dual ? 2 : 1;
  const int64_t n_rep = pair * L.dp, n_exp = pair * (L.dp / L.ep);
  const int64_t c_rep = ceil_div(replicated, n_rep), c_exp = ceil_div(experts, n_exp);
  const bool sharded = lp.world_size > 1;
  p.params = replicated + experts;
  p.optimizer_params = c_rep + c_exp;
  p.weights = 4.0 * double(p.params);
  p.grads = 4.0 * double(p.params);
  p.optimizer = ((o.optimizer.bf16_moments ? 4.0 : 8.0) + (sharded ? 4.0 : 0.0)) *
                double(p.optimizer_params);
  if (sharded)
    p.update_buffer = 4.0 * double(std::max(n_rep > 1 ? n_rep * c_rep : 0,
                                            n_exp > 1 ? n_exp * c_exp : 0));
  p.activations = 4.0 * double(lp.micro_batch_size) * double(o.seq_len) * peak;
  p.ema_host = ema_host_bytes(o, p.weights);
  return p;
}

nlohmann::json memory_json(const RankPlan& p) {
  nlohmann::json m{{"weights", gib(p.weights)},
                   {"grads", gib(p.grads)},
                   {"optimizer", gib(p.optimizer)},
                   {"activations", gib(p.activations)},
                   {"total", gib(p.total())}};
  // the update's gathered F32 vector: after the backward pass, when the activations are freed
  if (p.update_buffer > 0) m["zero_update_buffer"] = gib(p.update_buffer);
  if (p.ema_host > 0) m["ema_host"] = gib(p.ema_host);
  return m;
}

}  // namespace

LayoutPlan plan_layout(const PretrainOptions& o, const model::ModelArgs& a) {
  LayoutPlan lp;
  lp.world_size = o.dist.launch.world_size > 0 ? o.dist.launch.world_size
                                               : o.dist.layout.pp * o.dist.layout.ep;
  lp.layout = dist::layout_for(o.dist.layout, lp.world_size);
  check_layout_fits(lp.layout, a, o.preset.empty() ? o.model_config : "preset " + o.preset);
  check_pp_schedule(o.dist.pp_schedule, lp.layout.pp);
  lp.rows_per_rank = ceil_div(o.batch_size, lp.layout.dp);
  lp.micro_batches = step_micro_batches(o.batch_size, lp.layout, o.micro_batch_size,
                                        o.dist.pp_schedule, &lp.micro_batch_size);
  for (int r = 0; r < lp.layout.pp; ++r) lp.ranks.push_back(rank_plan(o, a, lp, r));
  return lp;
}

void dry_run(const PretrainOptions& o) {
  model::ModelArgs a = check_pretrain_flags(o);
  check_pp_schedule(o.dist.pp_schedule, o.dist.layout.pp);
  auto c = model::count_params(a);
  const int64_t micro =
      o.micro_batch_size > 0 ? std::min(o.micro_batch_size, o.batch_size) : o.batch_size;
  const model::MemoryPlan m = model::plan_memory(a, micro, o.seq_len, o.optimizer.bf16_moments);
  RankPlan whole;   // one process: plain AdamW, no update buffer
  whole.weights = m.weights;
  whole.grads = m.grads;
  whole.optimizer = m.optimizer;
  whole.activations = m.activations;
  whole.ema_host = ema_host_bytes(o, m.weights);
  nlohmann::json j{
      {"params",
       {{"total", c.total},
        {"activated", c.activated},
        {"mtp", c.mtp},
        {"embedding", c.embedding},
        {"total_b", double(c.total) / 1e9},
        {"activated_b", double(c.activated) / 1e9}}},
      {"batch",
       {{"micro_batch_size", micro}, {"seq_len", o.seq_len}, {"batch_size", o.batch_size}}},
      {"memory_gib", memory_json(whole)},
      {"moments", o.optimizer.bf16_moments ? "bf16" : "f32"}};
  if (o.dist.launch.world_size > 1 || o.dist.layout.pp > 1 || o.dist.layout.ep > 1) {
    const LayoutPlan lp = plan_layout(o, a);
    const dist::Layout& L = lp.layout;
    j["layout"] = {{"world_size", lp.world_size}, {"pp", L.pp}, {"dp", L.dp}, {"ep", L.ep},
                   {"pp_schedule", o.dist.pp_schedule}, {"rows_per_rank", lp.rows_per_rank},
                   {"micro_batch_size", lp.micro_batch_size},
                   {"micro_batches", lp.micro_batches}};
    double worst = 0;
    nlohmann::json& ranks = j["per_rank"] = nlohmann::json::array();
    for (const RankPlan& p : lp.ranks) {
      ranks.push_back({{"pp_rank", p.pp_rank},
                       {"layers", p.layers},
                       {"params", p.params},
                       {"micro_batches_in_flight", p.in_flight},
                       {"memory_gib", memory_json(p)}});
      worst = std::max(worst, p.total());
    }
    j["per_rank_max_gib"] = gib(worst);
  }
  std::printf("%s\n", j.dump(2).c_str());
}

}  // namespace ds::train
