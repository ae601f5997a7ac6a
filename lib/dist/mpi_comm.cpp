// The MPI communicator: CPU buffers in host memory, one MPI call per collective (no host loops
// over elements). Data movement (gathers, all-to-all, broadcast, send/recv) works for every
// DType by moving elements as unsigned integers of the element's width; reductions use the
// matching arithmetic type (F32 -> MPI_FLOAT, I32 -> MPI_INT32_T, I64 -> MPI_INT64_T).
// Counts and displacements are C ints in MPI: a reduce-scatter or all-gather of more than
// INT_MAX elements in all is split into several calls, an all-to-all or gather with per-rank
// counts is counted in units of their common divisor (the expert dispatch's rows), and any
// other call that large is refused by name instead of being truncated.
// Built without MPI, make_mpi_world throws UsageError and have_mpi() is false.
// reference: MPI-3.1 §5.9 (Allreduce, Reduce_scatter_block, MPI_IN_PLACE), §3.7 (Isend/Irecv).
#include "ds/dist/topology.hpp"

#ifdef DS_HAVE_MPI
#include <mpi.h>
#endif

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <vector>

#include "comm_util.hpp"
#include "ds/core/env.hpp"
#include "ds/core/error.hpp"

namespace ds::dist {

#ifndef DS_HAVE_MPI

bool have_mpi() { return false; }
std::unique_ptr<Comm> make_mpi_world() {
  DS_THROW(UsageError, "this build has no MPI: CPU ranks need a build with Open MPI "
                       "(libopenmpi-dev) found by CMake");
}
void abort_world(int) {}
void abort_launch(int) {}

#else

bool have_mpi() { return true; }

namespace {

using detail::to_int;

// MPI's error string for a failed call, as the project's error (one line naming the call).
void mpi_check(int rc, const char* op) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  DS_THROW(IoError, "{} failed: {}", op, std::string(msg, size_t(len)));
}

bool mpi_is_initialized() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

void finalize_at_exit() {
  if (mpi_is_initialized()) MPI_Finalize();
}

// MPI_Init_thread exactly once per process; MPI_Finalize from atexit, after main returns.
// SERIALIZED rather than FUNNELED: OpenMP workers never communicate, but a background thread
// of the training loop may (one at a time), and Open MPI charges nothing extra for it.
void ensure_initialized() {
  static std::once_flag once;
  std::call_once(once, [] {
    int init = 0;
    MPI_Initialized(&init);
    if (init) return;   // initialised by someone else (an embedding program): theirs to finalise
    int provided = 0;
    mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided),
              "MPI_Init_thread");
    if (provided < MPI_THREAD_SERIALIZED)
      DS_THROW(IoError, "MPI_Init_thread: this MPI provides thread level {} below "
                        "MPI_THREAD_SERIALIZED ({})", provided, int(MPI_THREAD_SERIALIZED));
    std::atexit(finalize_at_exit);
  });
}

MPI_Datatype reduce_type(const char* op, DType dt) {
  detail::check_reduce_dtype(op, dt);
  switch (dt) {
    case DType::f32: return MPI_FLOAT;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    default: DS_UNREACHABLE("reduce dtype");
  }
}

// Elements moved verbatim: an unsigned integer of the element's width carries any bit pattern
// (bf16, fp8, ...) unchanged on a homogeneous cluster.
MPI_Datatype move_type(DType dt) {
  switch (dtype_size(dt)) {
    case 1: return MPI_BYTE;
    case 2: return MPI_UINT16_T;
    case 4: return MPI_UINT32_T;
    case 8: return MPI_UINT64_T;
    default: DS_THROW(InternalError, "no MPI element type for {} ({} bytes)", dtype_name(dt),
                      dtype_size(dt));
  }
}

// The most elements one reduce-scatter or all-gather call moves in all: INT_MAX (MPI's int
// counts), or DS_MPI_MAX_ELEMS (a test knob that makes small calls take the split path).
int64_t max_call_elems() {   // (read at every call: one getenv beside a collective)
  return ds::env_int("DS_MPI_MAX_ELEMS", 1, INT_MAX).value_or(INT_MAX);
}

// counts (i64, one per rank, in units of `unit` elements) -> int counts and exclusive-prefix
// displacements; their sum past max_call_elems() is refused (as to_int refuses one past
// INT_MAX).
void int_counts(const char* op, const std::vector<int64_t>& counts, std::vector<int>& c,
                std::vector<int>& displ, int64_t unit = 1) {
  c.resize(counts.size());
  displ.resize(counts.size());
  int64_t off = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    c[r] = to_int(op, counts[r]);
    displ[r] = to_int(op, off);
    off += counts[r];
  }
  if (to_int(op, off) > max_call_elems())
    DS_THROW(InternalError, "{}: element count {}{} exceeds the limit of {} per call", op,
             off * unit, unit > 1 ? fmt::format(" ({} units of {})", off, unit) : "",
             max_call_elems());
}

// The unit, in elements, that all_to_all_v and all_gather_v count in: 1 while every part fits
// one call's int counts, else the greatest common divisor of the counts (the hidden size of the
// expert dispatch's rows), so that MPI counts rows; still too many is refused by int_counts.
int64_t count_unit(std::initializer_list<const std::vector<int64_t>*> parts) {
  int64_t g = 0;
  bool fits = true;
  for (const std::vector<int64_t>* c : parts) {
    int64_t total = 0;
    for (int64_t x : *c) total += x, g = std::gcd(g, x);
    fits = fits && total <= max_call_elems();
  }
  return fits || g == 0 ? 1 : g;
}

// `counts` / unit (each divides), and an MPI type of `unit` elements (committed; freed with it).
struct UnitCounts {
  std::vector<int64_t> counts;
  MPI_Datatype type;
  bool owned = false;
  UnitCounts(const char* op, const std::vector<int64_t>& c, int64_t unit, DType dt)
      : type(move_type(dt)) {
    for (int64_t x : c) counts.push_back(x / unit);
    if (unit == 1) return;
    MPI_Datatype t;
    mpi_check(MPI_Type_contiguous(to_int(op, unit), type, &t), "MPI_Type_contiguous");
    mpi_check(MPI_Type_commit(&t), "MPI_Type_commit");
    type = t;
    owned = true;
  }
  ~UnitCounts() {
    if (owned) MPI_Type_free(&type);
  }
  UnitCounts(const UnitCounts&) = delete;
  UnitCounts& operator=(const UnitCounts&) = delete;
};

class MpiRequest final : public Request::Impl {
 public:
  MpiRequest(MPI_Request req, const char* op) : req_(req), op_(op) {}
  void wait() override { mpi_check(MPI_Wait(&req_, MPI_STATUS_IGNORE), op_); }
  bool test() override {
    int done = 0;
    mpi_check(MPI_Test(&req_, &done, MPI_STATUS_IGNORE), op_);
    return done != 0;
  }

 private:
  MPI_Request req_;
  const char* op_;
};

class MpiComm final : public Comm {
 public:
  // Takes ownership of `comm`; errors are returned to us (and thrown) instead of aborting.
  explicit MpiComm(MPI_Comm comm) : comm_(comm) {
    mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  ~MpiComm() override {
    // Communicators held until static destruction may outlive MPI_Finalize (atexit).
    if (mpi_is_initialized()) MPI_Comm_free(&comm_);
  }
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce_sum(void* data, int64_t n, DType dt) override {
    MPI_Datatype t = reduce_type("all_reduce_sum", dt);
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, data, to_int("all_reduce_sum", n), t, MPI_SUM, comm_),
              "MPI_Allreduce(sum)");
  }
  void all_reduce_sum_f64(double* data, int64_t n) override {
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, data, to_int("all_reduce_sum_f64", n), MPI_DOUBLE,
                            MPI_SUM, comm_), "MPI_Allreduce(sum, f64)");
  }
  void all_reduce_max(void* data, int64_t n, DType dt) override {
    MPI_Datatype t = reduce_type("all_reduce_max", dt);
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, data, to_int("all_reduce_max", n), t, MPI_MAX, comm_),
              "MPI_Allreduce(max)");
  }
  void reduce_scatter_sum(const void* send, void* recv, int64_t n, DType dt) override {
    MPI_Datatype t = reduce_type("reduce_scatter_sum", dt);
    if (n * size_ <= max_call_elems()) {
      // recv == send: MPI_IN_PLACE takes the input from recv, leaves chunk rank() at its start
      const void* in = send == recv ? MPI_IN_PLACE : send;
      mpi_check(MPI_Reduce_scatter_block(in, recv, int(n), t, MPI_SUM, comm_),
                "MPI_Reduce_scatter_block");
      return;
    }
    // Too many elements for one call (a ZeRO-1 stage of billions of parameters): columns
    // [a, a + k) of every rank's chunk are packed side by side and reduced on their own. In
    // place, column a's result lands on rank 0's input at [a, a + k), already packed.
    const int64_t k = std::max<int64_t>(1, max_call_elems() / size_), es = dtype_size(dt);
    std::vector<char> pack(size_t(std::min(k, n) * size_ * es));
    const void* src = send;
    for (int64_t a = 0; a < n; a += k) {
      const int64_t m = std::min(k, n - a);
      for (int r = 0; r < size_; ++r)
        std::memcpy(pack.data() + r * m * es, detail::bytes_of(src, int64_t(r) * n + a, dt),
                    size_t(m * es));
      mpi_check(MPI_Reduce_scatter_block(pack.data(), detail::bytes_of(recv, a, dt), int(m), t,
                                         MPI_SUM, comm_),
                "MPI_Reduce_scatter_block");
    }
  }
  void all_gather(const void* send, void* recv, int64_t n, DType dt) override {
    if (n * size_ <= max_call_elems()) {
      const void* in = send == detail::bytes_of(recv, n * rank_, dt) ? MPI_IN_PLACE : send;
      mpi_check(MPI_Allgather(in, int(n), move_type(dt), recv, int(n), move_type(dt), comm_),
                "MPI_Allgather");
      return;
    }
    // Split like reduce_scatter_sum: columns [a, a + k) of every rank's part, then unpacked.
    const int64_t k = std::max<int64_t>(1, max_call_elems() / size_), es = dtype_size(dt);
    std::vector<char> mine(size_t(std::min(k, n) * es)), pack(size_t(std::min(k, n) * size_ * es));
    for (int64_t a = 0; a < n; a += k) {
      const int64_t m = std::min(k, n - a);
      std::memcpy(mine.data(), detail::bytes_of(send, a, dt), size_t(m * es));
      mpi_check(MPI_Allgather(mine.data(), int(m), move_type(dt), pack.data(), int(m),
                              move_type(dt), comm_), "MPI_Allgather");
      for (int r = 0; r < size_; ++r)
        std::memcpy(detail::bytes_of(recv, int64_t(r) * n + a, dt), pack.data() + r * m * es,
                    size_t(m * es));
    }
  }
  void all_gather_v(const void* send, void* recv, const std::vector<int64_t>& counts,
                    DType dt) override {
    detail::check_counts("all_gather_v", counts, size_);
    const int64_t unit = count_unit({&counts});
    const UnitCounts u("all_gather_v", counts, unit, dt);
    std::vector<int> c, displ;
    int_counts("all_gather_v", u.counts, c, displ, unit);
    const void* in =
        send == detail::bytes_of(recv, displ[size_t(rank_)] * unit, dt) ? MPI_IN_PLACE : send;
    mpi_check(MPI_Allgatherv(in, c[size_t(rank_)], u.type, recv, c.data(), displ.data(), u.type,
                             comm_), "MPI_Allgatherv");
  }
  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, DType dt) override {
    detail::check_counts("all_to_all_v", send_counts, size_, "send_counts");
    detail::check_counts("all_to_all_v", recv_counts, size_, "recv_counts");
    // (ranks may pick different units: MPI matches the element sequences, not the unit types)
    const int64_t unit = count_unit({&send_counts, &recv_counts});
    const UnitCounts su("all_to_all_v", send_counts, unit, dt),
        ru("all_to_all_v", recv_counts, unit, dt);
    std::vector<int> sc, sd, rc, rd;
    int_counts("all_to_all_v", su.counts, sc, sd, unit);
    int_counts("all_to_all_v", ru.counts, rc, rd, unit);
    mpi_check(MPI_Alltoallv(send, sc.data(), sd.data(), su.type, recv, rc.data(), rd.data(),
                            ru.type, comm_), "MPI_Alltoallv");
  }
  void broadcast(void* data, int64_t n, DType dt, int root) override {
    detail::check_peer("broadcast", root, size_);
    mpi_check(MPI_Bcast(data, to_int("broadcast", n), move_type(dt), root, comm_), "MPI_Bcast");
  }
  Request isend(const void* data, int64_t n, DType dt, int peer, int tag) override {
    detail::check_peer("isend", peer, size_);
    MPI_Request req = MPI_REQUEST_NULL;
    mpi_check(MPI_Isend(data, to_int("isend", n), move_type(dt), peer, tag, comm_, &req),
              "MPI_Isend");
    return Request(std::make_unique<MpiRequest>(req, "MPI_Wait(isend)"));
  }
  Request irecv(void* data, int64_t n, DType dt, int peer, int tag) override {
    detail::check_peer("irecv", peer, size_);
    MPI_Request req = MPI_REQUEST_NULL;
    mpi_check(MPI_Irecv(data, to_int("irecv", n), move_type(dt), peer, tag, comm_, &req),
              "MPI_Irecv");
    return Request(std::make_unique<MpiRequest>(req, "MPI_Wait(irecv)"));
  }
  void barrier() override { mpi_check(MPI_Barrier(comm_), "MPI_Barrier"); }
  std::unique_ptr<Comm> split(int color, int key) override {
    if (color < 0) DS_THROW(InternalError, "split: negative color {}", color);
    MPI_Comm out = MPI_COMM_NULL;
    mpi_check(MPI_Comm_split(comm_, color, key, &out), "MPI_Comm_split");
    return std::make_unique<MpiComm>(out);
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_world() {
  ensure_initialized();
  MPI_Comm dup = MPI_COMM_NULL;
  // A duplicate keeps our traffic apart from any other library's use of MPI_COMM_WORLD.
  mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "MPI_Comm_dup");
  return std::make_unique<MpiComm>(dup);
}

void abort_world(int exit_code) {
  if (!mpi_is_initialized()) return;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
}

void abort_launch(int exit_code) {
  if (!mpi_is_initialized()) {
    // Only where init_world would have started MPI: the other ranks then wait in MPI_Init
    // for this one (srun --mpi=pmix without --kill-on-bad-exit never ends them otherwise).
    LaunchInfo li;
    try {
      li = detect_launch(LaunchOptions{});
    } catch (const std::exception&) {
      return;   // an unreadable launch environment: no world to end
    }
    if (li.world_size <= 1 || li.source == "flags" || li.source == "single" ||
        (li.source == "slurm" && !std::getenv("PMI_RANK")))
      return;
    try {
      ensure_initialized();
    } catch (const std::exception&) {
      return;
    }
  }
  abort_world(exit_code);
}

#endif  // DS_HAVE_MPI

}  // namespace ds::dist
