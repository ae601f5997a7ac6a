// Launch detection (flags, Open MPI, PMIx, Slurm), the choice of world communicator, and the
// parallel layout's groups (dp, ep, edp, pp) cut out of the world by Comm::split.
// reference: include/ds/dist/topology.hpp; DeepSeek-V3 paper §3.2 (PP + EP + ZeRO-1 DP).
#include "ds/dist/topology.hpp"

#include <climits>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <string>

#include "ds/core/env.hpp"
#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/core/log.hpp"

namespace ds::dist {

namespace {

// The integer value of environment variable `name`, or nothing when it is unset or empty.
std::optional<int> env_int(const char* name) {
  const auto v = ds::env_int(name, INT_MIN, INT_MAX);
  return v ? std::optional<int>(int(*v)) : std::nullopt;
}

// The first of `names` that is set.
std::optional<int> env_first(std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (auto v = env_int(n)) return v;
  return std::nullopt;
}

void validate(const LaunchInfo& li) {
  if (li.world_size < 1)
    DS_THROW(UsageError, "world size {} (from {}) must be at least 1", li.world_size, li.source);
  if (li.rank < 0 || li.rank >= li.world_size)
    DS_THROW(UsageError, "rank {} (from {}) is outside the world of {} ranks", li.rank, li.source,
             li.world_size);
  if (li.local_rank < 0)
    DS_THROW(UsageError, "local rank {} (from {}) is negative", li.local_rank, li.source);
}

}  // namespace

LaunchInfo detect_launch(const LaunchOptions& o) {
  LaunchInfo li;
  const bool has_rank = o.rank >= 0, has_world = o.world_size > 0;
  if (has_rank != has_world)
    DS_THROW(UsageError, "--rank and --world-size go together (got only {})",
             has_rank ? "--rank" : "--world-size");
  // Local rank from whichever launcher set one (selects the GPU); 0 when none did.
  const std::optional<int> env_local =
      env_first({"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"});
  if (has_rank) {
    li = {o.rank, o.world_size, o.local_rank >= 0 ? o.local_rank : env_local.value_or(o.rank),
          "flags"};
  } else if (auto r = env_int("OMPI_COMM_WORLD_RANK")) {
    const auto w = env_int("OMPI_COMM_WORLD_SIZE");
    if (!w) DS_THROW(UsageError, "OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE is not");
    li = {*r, *w, env_first({"OMPI_COMM_WORLD_LOCAL_RANK"}).value_or(0), "openmpi"};
  } else if (auto r = env_int("PMIX_RANK");
             r && env_first({"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"})) {
    // PMIx names the rank but not the size: Slurm's step (srun --mpi=pmix) or Open MPI tells it.
    li = {*r, *env_first({"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"}),
          env_local.value_or(0), "pmix"};
  } else if (auto r = env_int("SLURM_PROCID");
             r && (std::getenv("SLURM_STEP_ID") || std::getenv("SLURM_STEPID"))) {
    // Only inside an srun step: a batch script's own environment (SLURM_PROCID=0 and the
    // allocation's SLURM_NTASKS) describes the allocation, not this process.
    const auto w = env_first({"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"});
    if (!w) DS_THROW(UsageError, "SLURM_PROCID is set but SLURM_NTASKS is not");
    li = {*r, *w, env_first({"SLURM_LOCALID"}).value_or(0), "slurm"};
  }
  if (o.local_rank >= 0) li.local_rank = o.local_rank;
  validate(li);
  return li;
}

int process_gpu(const std::string& device, const LaunchOptions& o) {
  return device == "cuda" ? detect_launch(o).local_rank : 0;
}

namespace {

std::vector<std::pair<std::string, std::string>> g_run_flags;   // set_run_flags

}  // namespace

// UsageError on every rank when a flag of set_run_flags differs between the ranks: each
// flag's value hash, its maximum and minimum over the world (one all-reduce of +h and -h).
void check_run_flags(Comm& world) {
  if (world.size() <= 1 || g_run_flags.empty()) return;
  const auto& f = g_run_flags;
  int64_t count[2] = {int64_t(f.size()), -int64_t(f.size())};   // the same tool on every rank
  world.all_reduce_max(count, 2, DType::i64);
  if (count[0] != -count[1])
    DS_THROW(UsageError, "the ranks were started with different tools or versions");
  std::vector<int64_t> v(2 * f.size());
  for (size_t i = 0; i < f.size(); ++i) {
    const int64_t h = int64_t(xxh64(f[i].first + "=" + f[i].second) >> 1);   // 63 bits
    v[i] = h;
    v[f.size() + i] = -h;
  }
  world.all_reduce_max(v.data(), int64_t(v.size()), DType::i64);
  std::vector<size_t> bad;
  for (size_t i = 0; i < f.size(); ++i)
    if (v[i] != -v[f.size() + i]) bad.push_back(i);
  if (bad.empty()) return;
  const auto& [name, value] = f[bad.front()];
  DS_THROW(UsageError, "{} differs between the ranks (here: '{}'){}: every rank must be given "
           "the same flags (only --threads, --rank, --local-rank and the log flags may differ)",
           name, value, bad.size() > 1 ? fmt::format(", and {} more", bad.size() - 1) : "");
}

void set_run_flags(std::vector<std::pair<std::string, std::string>> flags) {
  g_run_flags = std::move(flags);
}

std::unique_ptr<Comm> init_world(const LaunchOptions& o) {
  const LaunchInfo li = detect_launch(o);
  std::unique_ptr<Comm> world;
  if (o.device == "cuda") {
    // Device buffers: even one rank needs NCCL (the single communicator copies host memory).
    world = make_nccl_world(li, o);
  } else if (o.device != "cpu") {
    DS_THROW(UsageError, "--device {}: expected cpu or cuda", o.device);
  } else if (li.world_size == 1) {
    // One process needs no MPI (and plain runs never call MPI_Init).
    world = make_single_comm();
  } else if (li.source == "flags") {
    DS_THROW(UsageError, "--rank/--world-size ({} of {}) on the CPU: CPU ranks communicate "
             "through MPI; launch with mpirun -n {} or srun --mpi=pmix -n {} instead (the flags "
             "and --master-addr are for GPU runs)", li.rank, li.world_size, li.world_size,
             li.world_size);
  } else if (li.source == "slurm" && !std::getenv("PMI_RANK")) {
    // Without PMIx/PMI wiring every task would initialise a world of its own.
    DS_THROW(UsageError, "srun started {} tasks but MPI sees 1: launch with srun --mpi=pmix or "
             "mpirun", li.world_size);
  } else {
    world = make_mpi_world();
    if (world->size() != li.world_size || world->rank() != li.rank) {
      if (li.source == "slurm" || li.source == "pmix")
        DS_THROW(UsageError, "srun started {} tasks but MPI sees {}: launch with srun --mpi=pmix "
                 "or mpirun", li.world_size, world->size());
      DS_THROW(UsageError, "the launcher ({}) says rank {} of {} but MPI says rank {} of {}",
               li.source, li.rank, li.world_size, world->rank(), world->size());
    }
  }
  if (world->size() > 1) log::set_rank(world->rank(), world->size());
  if (world->backend() == "mpi") check_run_flags(*world);   // (NCCL: on its MPI bootstrap)
  return world;
}

Layout layout_for(const Layout& layout, int W) {
  if (layout.pp < 1) DS_THROW(UsageError, "--pp {} must be at least 1", layout.pp);
  if (layout.ep < 1) DS_THROW(UsageError, "--ep {} must be at least 1", layout.ep);
  if (W % layout.pp != 0)
    DS_THROW(UsageError, "--pp {} does not divide the world size {}", layout.pp, W);
  const int dp = W / layout.pp;
  if (dp % layout.ep != 0)
    DS_THROW(UsageError, "--ep {} does not divide dp = world size / pp = {} / {} = {}", layout.ep,
             W, layout.pp, dp);
  return {layout.pp, dp, layout.ep};
}

std::unique_ptr<Topology> Topology::create(std::unique_ptr<Comm> world, const Layout& layout,
                                           int local_rank) {
  if (!world) DS_THROW(InternalError, "Topology::create: no world communicator");
  auto t = std::make_unique<Topology>();
  t->layout_ = layout_for(layout, world->size());
  const int dp = t->layout_.dp;
  t->local_rank_ = local_rank;
  const int r = world->rank();
  t->pp_rank_ = r / dp;   // stage-major: rank = pp_rank * dp + dp_rank
  t->dp_rank_ = r % dp;
  const int ep = layout.ep, n_edp = dp / ep;
  const int ep_rank = t->dp_rank_ % ep, edp_rank = t->dp_rank_ / ep;
  // Every rank makes the same four splits in the same order (split is collective). Colors
  // number the groups; keys order ranks inside a group by their rank in that group.
  t->dp_ = world->split(t->pp_rank_, t->dp_rank_);
  t->ep_ = world->split(t->pp_rank_ * n_edp + edp_rank, ep_rank);
  t->edp_ = world->split(t->pp_rank_ * ep + ep_rank, edp_rank);
  t->pp_ = world->split(t->dp_rank_, t->pp_rank_);
  t->world_ = std::move(world);
  return t;
}

std::unique_ptr<Topology> Topology::single() { return create(make_single_comm(), Layout{}, 0); }

#ifndef DS_HAVE_NCCL
bool have_nccl() { return false; }
std::unique_ptr<Comm> make_nccl_world(const LaunchInfo&, const LaunchOptions&) {
  DS_THROW(UsageError, "--device cuda: this build has no NCCL support (configure with a CUDA "
                       "toolkit that ships nccl.h)");
}
#endif

}  // namespace ds::dist
