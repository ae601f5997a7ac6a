// One process: the single communicator, Topology::single, launch detection from a fake
// environment (flags, Open MPI, PMIx, Slurm) and init_world's refusals of launches that
// cannot work (CPU ranks without MPI wiring).
#include <doctest/doctest.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/dist/topology.hpp"

using ds::DType;
using namespace ds::dist;

namespace {

// Clears every launcher variable for the scope of a test (restoring them after), so a test run
// inside mpirun or a Slurm job sees only what the test sets.
class FakeEnv {
 public:
  FakeEnv() {
    for (const char* n : kNames) {
      if (const char* v = std::getenv(n)) saved_[n] = v;
      ::unsetenv(n);
    }
  }
  ~FakeEnv() {
    for (const char* n : kNames) ::unsetenv(n);
    for (const auto& [n, v] : saved_) ::setenv(n.c_str(), v.c_str(), 1);
  }
  void set(const char* name, const std::string& v) { ::setenv(name, v.c_str(), 1); }

 private:
  static constexpr const char* kNames[] = {
      "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_RANK",
      "PMI_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_STEP_NUM_TASKS",
      "SLURM_LOCALID", "SLURM_STEP_ID", "SLURM_STEPID", "LOCAL_RANK"};
  std::map<std::string, std::string> saved_;
};

template <typename F>
std::string usage_error(F&& f) {
  try {
    f();
  } catch (const ds::UsageError& e) {
    return e.what();
  }
  return "(no UsageError)";
}

}  // namespace

TEST_CASE("single communicator: collectives copy, point-to-point is refused") {
  auto c = make_single_comm();
  CHECK(c->rank() == 0);
  CHECK(c->size() == 1);
  CHECK(c->backend() == "single");
  std::vector<float> v = {1, 2, 3}, out(3, 0);
  c->all_reduce_sum(v.data(), 3, DType::f32);
  c->all_reduce_max(v.data(), 3, DType::f32);
  CHECK(v == std::vector<float>{1, 2, 3});
  c->reduce_scatter_sum(v.data(), out.data(), 3, DType::f32);
  CHECK(out == v);
  std::vector<uint16_t> b = {7, 8}, bo(2);
  c->all_gather(b.data(), bo.data(), 2, DType::bf16);
  CHECK(bo == b);
  bo = {0, 0};
  c->all_gather_v(b.data(), bo.data(), {2}, DType::bf16);
  CHECK(bo == b);
  bo = {0, 0};
  c->all_to_all_v(b.data(), {2}, bo.data(), {2}, DType::bf16);
  CHECK(bo == b);
  CHECK_THROWS_AS(c->all_to_all_v(b.data(), {2}, bo.data(), {1}, DType::bf16), ds::InternalError);
  CHECK_THROWS_AS(c->all_gather_v(b.data(), bo.data(), {1, 1}, DType::bf16), ds::InternalError);
  CHECK(c->all_to_all_counts({42}) == std::vector<int64_t>{42});
  std::vector<double> d = {0.25};
  c->all_reduce_sum(d);
  CHECK(d[0] == 0.25);
  c->broadcast(v.data(), 3, DType::f32, 0);
  CHECK_THROWS_AS(c->broadcast(v.data(), 3, DType::f32, 1), ds::InternalError);
  CHECK_THROWS_AS(c->all_reduce_sum(b.data(), 2, DType::bf16), ds::InternalError);
  CHECK_THROWS_AS(c->isend(v.data(), 3, DType::f32, 0, 0), ds::InternalError);
  CHECK_THROWS_AS(c->irecv(v.data(), 3, DType::f32, 0, 0), ds::InternalError);
  c->barrier();
  auto s = c->split(3, 7);
  CHECK(s->size() == 1);
  CHECK(s->backend() == "single");
  Request empty;
  CHECK(!empty.pending());
  empty.wait();
}

TEST_CASE("Topology::single and create over one rank") {
  auto t = Topology::single();
  CHECK(t->world_size() == 1);
  CHECK(t->rank() == 0);
  CHECK(t->layout().pp == 1);
  CHECK(t->layout().dp == 1);
  CHECK(t->layout().ep == 1);
  CHECK(t->is_main());
  CHECK(t->is_first_stage());
  CHECK(t->is_last_stage());
  CHECK(t->dp().size() == 1);
  CHECK(t->ep().size() == 1);
  CHECK(t->edp().size() == 1);
  CHECK(t->pp().size() == 1);
  CHECK(usage_error([] { Topology::create(make_single_comm(), {2, 1, 1}, 0); }).find("--pp 2") !=
        std::string::npos);
  CHECK(usage_error([] { Topology::create(make_single_comm(), {1, 1, 2}, 0); }).find("--ep 2") !=
        std::string::npos);
}

TEST_CASE("detect_launch: flags, Open MPI, PMIx, Slurm, none") {
  FakeEnv env;
  LaunchOptions o;
  LaunchInfo li = detect_launch(o);
  CHECK(li.source == "single");
  CHECK((li.rank == 0 && li.world_size == 1 && li.local_rank == 0));

  SUBCASE("flags win over the environment") {
    env.set("OMPI_COMM_WORLD_RANK", "1");
    env.set("OMPI_COMM_WORLD_SIZE", "2");
    o.rank = 3;
    o.world_size = 8;
    li = detect_launch(o);
    CHECK(li.source == "flags");
    CHECK((li.rank == 3 && li.world_size == 8));
    o.local_rank = 1;
    CHECK(detect_launch(o).local_rank == 1);
    o.rank = 8;
    CHECK(usage_error([&] { detect_launch(o); }).find("rank 8") != std::string::npos);
    o.world_size = -1;
    CHECK(usage_error([&] { detect_launch(o); }).find("only --rank") != std::string::npos);
    o.rank = -1;
    o.world_size = 4;
    CHECK(usage_error([&] { detect_launch(o); }).find("only --world-size") != std::string::npos);
  }
  SUBCASE("Open MPI") {
    env.set("OMPI_COMM_WORLD_RANK", "2");
    env.set("OMPI_COMM_WORLD_SIZE", "4");
    env.set("OMPI_COMM_WORLD_LOCAL_RANK", "0");
    env.set("PMIX_RANK", "2");
    li = detect_launch(o);
    CHECK(li.source == "openmpi");
    CHECK((li.rank == 2 && li.world_size == 4 && li.local_rank == 0));
    env.set("OMPI_COMM_WORLD_RANK", "4");
    CHECK(usage_error([&] { detect_launch(o); }).find("outside") != std::string::npos);
    env.set("OMPI_COMM_WORLD_RANK", "x1");
    CHECK(usage_error([&] { detect_launch(o); }).find("OMPI_COMM_WORLD_RANK") != std::string::npos);
  }
  SUBCASE("PMIx under srun --mpi=pmix") {
    env.set("PMIX_RANK", "1");
    env.set("SLURM_PROCID", "1");
    env.set("SLURM_STEP_ID", "0");
    env.set("SLURM_NTASKS", "3");
    env.set("SLURM_LOCALID", "1");
    li = detect_launch(o);
    CHECK(li.source == "pmix");
    CHECK((li.rank == 1 && li.world_size == 3 && li.local_rank == 1));
  }
  SUBCASE("Slurm inside an srun step; a batch script's environment is no launch") {
    env.set("SLURM_PROCID", "0");
    env.set("SLURM_NTASKS", "4");
    CHECK(detect_launch(o).source == "single");
    env.set("SLURM_STEP_ID", "0");
    env.set("SLURM_PROCID", "3");
    env.set("SLURM_LOCALID", "1");
    li = detect_launch(o);
    CHECK(li.source == "slurm");
    CHECK((li.rank == 3 && li.world_size == 4 && li.local_rank == 1));
    env.set("SLURM_STEP_NUM_TASKS", "2");
    CHECK(usage_error([&] { detect_launch(o); }).find("outside the world of 2") !=
          std::string::npos);
  }
}

TEST_CASE("process_gpu: the local rank picks the GPU on cuda; the CPU reads no launch") {
  FakeEnv env;
  LaunchOptions o;
  CHECK(process_gpu("cuda", o) == 0);   // no launcher
  env.set("OMPI_COMM_WORLD_RANK", "5");
  env.set("OMPI_COMM_WORLD_SIZE", "8");
  env.set("OMPI_COMM_WORLD_LOCAL_RANK", "1");
  CHECK(process_gpu("cuda", o) == 1);   // mpirun: rank 5, the second GPU of its node
  CHECK(process_gpu("cpu", o) == 0);
  o.local_rank = 3;
  CHECK(process_gpu("cuda", o) == 3);   // --local-rank wins
  env.set("OMPI_COMM_WORLD_RANK", "9");   // a broken launch is an error on cuda only
  CHECK(usage_error([&] { process_gpu("cuda", o); }).find("rank 9") != std::string::npos);
  CHECK(process_gpu("cpu", o) == 0);
}

TEST_CASE("init_world: single runs need no MPI; CPU launches without MPI wiring are refused") {
  FakeEnv env;
  LaunchOptions o;
  auto w = init_world(o);
  CHECK(w->backend() == "single");
  o.rank = 0;
  o.world_size = 1;
  CHECK(init_world(o)->size() == 1);
  o.world_size = 2;
  CHECK(usage_error([&] { init_world(o); }).find("mpirun") != std::string::npos);
  o.rank = o.world_size = -1;
  env.set("SLURM_PROCID", "1");
  env.set("SLURM_NTASKS", "2");
  env.set("SLURM_STEP_ID", "0");
  CHECK(usage_error([&] { init_world(o); }).find("srun started 2 tasks but MPI sees 1") !=
        std::string::npos);
  o.device = "tpu";
  CHECK(usage_error([&] { init_world(o); }).find("tpu") != std::string::npos);
}

TEST_CASE("build capabilities") {
  MESSAGE("have_mpi=" << have_mpi() << " have_nccl=" << have_nccl());
  if (!have_mpi()) CHECK_THROWS_AS(make_mpi_world(), ds::UsageError);
  if (!have_nccl()) CHECK_THROWS_AS(make_nccl_world(LaunchInfo{}, LaunchOptions{}), ds::UsageError);
  abort_world(1);   // MPI not initialised here: returns
}

TEST_CASE("make_nccl_world: one rank on a GPU machine, one clear error elsewhere") {
  if (!have_nccl()) return;
  LaunchOptions o;
  o.device = "cuda";
  try {
    auto w = make_nccl_world(LaunchInfo{}, o);
    CHECK(w->backend() == "nccl");
    CHECK(w->size() == 1);
    w->barrier();
  } catch (const ds::NcclError& e) {   // no libnccl.so.2 on the loader path
    MESSAGE(std::string(e.what()));
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
  } catch (const ds::CudaError& e) {   // no GPU or no driver
    MESSAGE(std::string(e.what()));
    CHECK(std::string(e.what()).find("no usable GPU") != std::string::npos);
  }
}
