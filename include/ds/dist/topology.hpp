// Launch, rendezvous and the parallel layout of a run.
//
// Launch (docs/distributed.md): the rank, world size and local rank come from, in order,
// explicit flags (--rank/--world-size, GPU runs with a TCP rendezvous of the NCCL id at
// --master-addr:--master-port), Open MPI's environment (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK,
// set by mpirun), PMIx (PMIX_RANK, srun --mpi=pmix) or Slurm's (SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID). CPU ranks need MPI wiring (mpirun, or srun --mpi=pmix): a Slurm launch whose
// MPI world does not match SLURM_NTASKS is an error, never N independent single runs.
//
// Layout: world = pp * dp ranks; ep divides dp. rank = pp_rank * dp + dp_rank (stage-major);
// inside a stage, dp_rank = edp_rank * ep + ep_rank: the ep consecutive data-parallel ranks of
// an expert group each hold E/ep routed experts of every MoE layer of the stage, and the
// dp/ep ranks with the same ep_rank (the expert-data-parallel group) hold the same experts.
// Groups: dp (the stage's dp ranks: replicated parameters are reduced here), ep (dispatch and
// combine all-to-all), edp (expert gradients are reduced here), pp (the pp ranks with this
// dp_rank: activations and gradients travel between neighbouring stages).
// reference: DeepSeek-V3 paper §3.2 (PP + EP + ZeRO-1 DP, no TP); spec §4.5.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ds/dist/comm.hpp"

namespace ds::dist {

struct LaunchOptions {
  int rank = -1;                   // --rank (-1: from the environment)
  int world_size = -1;             // --world-size
  int local_rank = -1;             // --local-rank
  std::string master_addr;         // --master-addr (TCP rendezvous of the NCCL id)
  int master_port = 29500;         // --master-port
  std::string device = "cpu";      // "cpu" -> MPI, "cuda" -> NCCL (MPI or TCP bootstrap)
};

struct LaunchInfo {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string source = "single";   // "flags" | "openmpi" | "pmix" | "slurm" | "single"
};

// Reads the launch environment (no side effects). UsageError on inconsistent values
// (rank >= world size, flags half given).
LaunchInfo detect_launch(const LaunchOptions& o);
// The GPU a process drives for `device`: its local rank on the node (detect_launch), the GPU
// make_nccl_world binds; 0 for "cpu" (the launch is then not read).
int process_gpu(const std::string& device, const LaunchOptions& o);

struct Layout {
  int pp = 1, dp = 1, ep = 1;      // --pp, dp = world / pp, --ep (divides dp)
};

// The layout of a world of W ranks: `layout` as the flags give it (pp, ep; dp ignored) with
// dp = W / pp. UsageError naming the flag when pp or ep is below 1, pp does not divide W or ep
// does not divide dp. (Topology::create applies it; ds-pretrain --dry-run plans with it.)
Layout layout_for(const Layout& layout, int W);

// What the training tools' distributed flags fill (ds::cli::add_dist_options).
struct DistOptions {
  LaunchOptions launch;
  Layout layout;                   // dp is derived: world / pp
  std::string pp_schedule = "1f1b";   // --pp-schedule 1f1b | gpipe | dualpipe
};

class Topology {
 public:
  int world_size() const { return world_->size(); }
  int rank() const { return world_->rank(); }
  int local_rank() const { return local_rank_; }
  const Layout& layout() const { return layout_; }
  int pp_rank() const { return pp_rank_; }
  int dp_rank() const { return dp_rank_; }
  int ep_rank() const { return dp_rank_ % layout_.ep; }
  int edp_rank() const { return dp_rank_ / layout_.ep; }
  bool is_first_stage() const { return pp_rank_ == 0; }
  bool is_last_stage() const { return pp_rank_ == layout_.pp - 1; }
  // Rank 0 of the world prints progress, writes metrics and the shared checkpoint files.
  bool is_main() const { return rank() == 0; }
  // World rank of (pp_rank, dp_rank).
  int world_rank(int pp_rank, int dp_rank) const { return pp_rank * layout_.dp + dp_rank; }

  Comm& world() { return *world_; }
  Comm& dp() { return *dp_; }
  Comm& ep() { return *ep_; }
  Comm& edp() { return *edp_; }
  Comm& pp() { return *pp_; }

  // Builds the groups of `layout` over `world` (collective: every rank calls it). UsageError
  // naming the flag when world % pp != 0 or dp % ep != 0.
  static std::unique_ptr<Topology> create(std::unique_ptr<Comm> world, const Layout& layout,
                                          int local_rank);
  // One process: every group is a single communicator.
  static std::unique_ptr<Topology> single();

 private:
  std::unique_ptr<Comm> world_, dp_, ep_, edp_, pp_;
  Layout layout_;
  int pp_rank_ = 0, dp_rank_ = 0, local_rank_ = 0;
};

// Initialises the world communicator for a launch: the single communicator for a world of one,
// MPI for CPU ranks (MPI_Init once; finalised at exit), NCCL for device "cuda" (built with
// CUDA; its unique id broadcast over MPI, or over the TCP rendezvous with --master-addr).
// Also prefixes every log line with "[rank r/w] " when the world has more than one rank.
std::unique_ptr<Comm> init_world(const LaunchOptions& o);

// True when this binary was built with MPI / NCCL support (have_nccl says nothing about whether
// libnccl.so.2 and a GPU are present at run time: make_nccl_world finds that out).
bool have_mpi();
bool have_nccl();

// The backends behind init_world, for callers that need one explicitly.
// make_mpi_world: MPI_Init_thread once (MPI_THREAD_SERIALIZED: any thread may communicate, one
// at a time), MPI_Finalize at exit, and a duplicate of MPI_COMM_WORLD. Counts above INT_MAX
// elements per call are refused (InternalError naming the op). UsageError without MPI.
std::unique_ptr<Comm> make_mpi_world();
// make_nccl_world: the GPU `launch.local_rank` and an NCCL communicator of launch.world_size
// ranks; rank 0's ncclUniqueId travels over MPI (openmpi/pmix launches) or tcp_rendezvous at
// o.master_addr:o.master_port. libnccl.so.2 is opened at run time (NcclError when missing), so
// binaries load without it. UsageError when the build has no NCCL support.
std::unique_ptr<Comm> make_nccl_world(const LaunchInfo& launch, const LaunchOptions& o);

// For a tool's main after an error on one rank of a multi-rank MPI launch: MPI_Abort ends every
// rank (the others would otherwise wait forever in their next collective, and MPI_Finalize at
// exit would wait for them). Returns, doing nothing, when MPI is not initialised or the world
// has one rank, so main can then return its exit code.
void abort_world(int exit_code);
// The same for a tool that starts a world (init_world) but failed before it did (a bad flag,
// an unwritable --out): when the launch environment says MPI ranks (mpirun, srun --mpi=pmix),
// MPI is started just to MPI_Abort, since the other ranks wait in MPI_Init for this one.
void abort_launch(int exit_code);

// The flags a distributed tool was given, (long name, value) in the tool's option order, for
// init_world to compare across the ranks: a flag that differs between them (--steps,
// --seed, --data, --micro-batch-size) deadlocked a collective, corrupted a buffer or trained
// silently on mismatched settings. The per-process flags (--threads, --rank, --local-rank,
// the log flags) are left out by the caller. Empty (the default): nothing is compared.
// Compared by init_world on an MPI world, and for NCCL on its MPI bootstrap (a GPU run
// bootstrapped over --master-addr is not compared).
void set_run_flags(std::vector<std::pair<std::string, std::string>> flags);
// The comparison itself, over a communicator of host buffers (a no-op for one rank or no flags).
void check_run_flags(Comm& world);

// TCP rendezvous (bootstrap only, never collectives): rank 0 listens on `port` (every
// interface; `addr` only names it in messages there) and sends `blob` to each of the other
// world_size - 1 ranks, which connect to addr:port (retrying for up to timeout_s) and receive
// it. Returns the blob on every rank (rank 0's argument; the others pass anything). IoError
// naming addr:port on failure or timeout.
std::string tcp_rendezvous(const std::string& addr, int port, int rank, int world_size,
                           const std::string& blob, double timeout_s = 120.0);

}  // namespace ds::dist
