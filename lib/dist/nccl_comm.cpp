// The NCCL communicator: device buffers, one NCCL call (or one group of calls) per collective
// on a stream of its own, then a wait for that stream, so every collective is blocking as the
// Comm interface promises. The stream is created with default flags: it orders itself after
// work already queued on the legacy default stream (where the kernels run), so buffers written
// there are ready without an explicit synchronisation.
// libnccl.so.2 is opened with dlopen and only the entry points below are resolved: the binaries
// never link libnccl or libcuda and load on machines without a GPU driver.
// Point-to-point: NCCL has no tags and a lone ncclSend blocks its stream until the peer posts
// the matching receive, so isend/irecv are queued and issued together, in one
// ncclGroupStart/End, by the first wait() (or the next collective). Messages between a pair
// of ranks match in the order they were posted; `tag` is not used.
// reference: NCCL API docs (Group Calls, Point-to-point, ncclCommSplit since 2.18).
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <string>
#include <vector>

#include "comm_util.hpp"
#include "ds/core/error.hpp"
#include "ds/dist/topology.hpp"

namespace ds::dist {

bool have_nccl() { return true; }

namespace {

// The entry points used, resolved from libnccl.so.2 at run time (CommSplit is optional).
struct NcclApi {
  decltype(&ncclGetVersion) GetVersion = nullptr;
  decltype(&ncclGetUniqueId) GetUniqueId = nullptr;
  decltype(&ncclCommInitRank) CommInitRank = nullptr;
  decltype(&ncclCommDestroy) CommDestroy = nullptr;
  decltype(&ncclCommCount) CommCount = nullptr;
  decltype(&ncclCommUserRank) CommUserRank = nullptr;
  decltype(&ncclCommSplit) CommSplit = nullptr;
  decltype(&ncclGetErrorString) GetErrorString = nullptr;
  decltype(&ncclAllReduce) AllReduce = nullptr;
  decltype(&ncclReduceScatter) ReduceScatter = nullptr;
  decltype(&ncclAllGather) AllGather = nullptr;
  decltype(&ncclBroadcast) Broadcast = nullptr;
  decltype(&ncclSend) Send = nullptr;
  decltype(&ncclRecv) Recv = nullptr;
  decltype(&ncclGroupStart) GroupStart = nullptr;
  decltype(&ncclGroupEnd) GroupEnd = nullptr;
  int version = 0;
};

template <typename F>
void resolve(void* lib, F& fn, const char* name, bool required) {
  fn = reinterpret_cast<F>(::dlsym(lib, name));
  if (!fn && required)
    DS_THROW(NcclError, "libnccl.so.2 has no {}: NCCL too old or damaged (need NCCL 2.x)", name);
}

NcclApi load_nccl() {
  void* lib = ::dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!lib) lib = ::dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    DS_THROW(NcclError, "cannot load libnccl.so.2 ({}): install NCCL or add its directory to "
             "LD_LIBRARY_PATH", ::dlerror());
  NcclApi a;
  resolve(lib, a.GetVersion, "ncclGetVersion", true);
  resolve(lib, a.GetUniqueId, "ncclGetUniqueId", true);
  resolve(lib, a.CommInitRank, "ncclCommInitRank", true);
  resolve(lib, a.CommDestroy, "ncclCommDestroy", true);
  resolve(lib, a.CommCount, "ncclCommCount", true);
  resolve(lib, a.CommUserRank, "ncclCommUserRank", true);
  resolve(lib, a.CommSplit, "ncclCommSplit", false);
  resolve(lib, a.GetErrorString, "ncclGetErrorString", true);
  resolve(lib, a.AllReduce, "ncclAllReduce", true);
  resolve(lib, a.ReduceScatter, "ncclReduceScatter", true);
  resolve(lib, a.AllGather, "ncclAllGather", true);
  resolve(lib, a.Broadcast, "ncclBroadcast", true);
  resolve(lib, a.Send, "ncclSend", true);
  resolve(lib, a.Recv, "ncclRecv", true);
  resolve(lib, a.GroupStart, "ncclGroupStart", true);
  resolve(lib, a.GroupEnd, "ncclGroupEnd", true);
  a.GetVersion(&a.version);
  return a;   // the library stays open for the life of the process
}

// Loaded on first use; a failed load throws here and is retried by the next caller.
const NcclApi& nccl() {
  static const NcclApi api = load_nccl();
  return api;
}

void nccl_check(ncclResult_t r, const char* op) {
  if (r != ncclSuccess) DS_THROW(NcclError, "{} failed: {}", op, nccl().GetErrorString(r));
}

void cuda_check(cudaError_t e, const char* op) {
  if (e != cudaSuccess) DS_THROW(CudaError, "{} failed: {}", op, cudaGetErrorString(e));
}

ncclDataType_t reduce_type(const char* op, DType dt) {
  detail::check_reduce_dtype(op, dt);
  switch (dt) {
    case DType::f32: return ncclFloat32;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    default: DS_UNREACHABLE("reduce dtype");
  }
}

// Data movement in bytes: any dtype, bit patterns unchanged.
size_t nbytes(int64_t n, DType dt) { return size_t(n) * dtype_size(dt); }

class NcclComm final : public Comm {
 public:
  NcclComm(ncclComm_t comm, int device) : comm_(comm), device_(device) {
    nccl_check(nccl().CommUserRank(comm_, &rank_), "ncclCommUserRank");
    nccl_check(nccl().CommCount(comm_, &size_), "ncclCommCount");
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    cuda_check(cudaMalloc(&scratch_, 16), "cudaMalloc(barrier word)");
  }
  ~NcclComm() override {
    // Errors here cannot be reported; NCCL and the runtime release the rest at process exit.
    if (comm_) nccl().CommDestroy(comm_);
    if (scratch_) cudaFree(scratch_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  void all_reduce_sum(void* data, int64_t n, DType dt) override {
    const ncclDataType_t t = reduce_type("all_reduce_sum", dt);
    detail::check_count("all_reduce_sum", n);
    run("ncclAllReduce(sum)", [&] {
      return nccl().AllReduce(data, data, size_t(n), t, ncclSum, comm_, stream_);
    });
  }
  void all_reduce_sum_f64(double* data, int64_t n) override {
    detail::check_count("all_reduce_sum_f64", n);
    run("ncclAllReduce(sum, f64)", [&] {
      return nccl().AllReduce(data, data, size_t(n), ncclFloat64, ncclSum, comm_, stream_);
    });
  }
  void all_reduce_max(void* data, int64_t n, DType dt) override {
    const ncclDataType_t t = reduce_type("all_reduce_max", dt);
    detail::check_count("all_reduce_max", n);
    run("ncclAllReduce(max)", [&] {
      return nccl().AllReduce(data, data, size_t(n), t, ncclMax, comm_, stream_);
    });
  }
  void reduce_scatter_sum(const void* send, void* recv, int64_t n, DType dt) override {
    const ncclDataType_t t = reduce_type("reduce_scatter_sum", dt);
    detail::check_count("reduce_scatter_sum", n);
    // recv == send (our in-place form): NCCL's in-place form writes chunk rank() where it lies
    // in the input, so reduce there and move it to the front (the ranges do not overlap).
    void* out = send == recv ? detail::bytes_of(recv, n * rank_, dt) : recv;
    run("ncclReduceScatter", [&] {
      return nccl().ReduceScatter(send, out, size_t(n), t, ncclSum, comm_, stream_);
    });
    if (out != recv) {
      cuda_check(cudaMemcpyAsync(recv, out, nbytes(n, dt), cudaMemcpyDeviceToDevice, stream_),
                 "cudaMemcpyAsync(reduce_scatter_sum)");
      sync("reduce_scatter_sum");
    }
  }
  void all_gather(const void* send, void* recv, int64_t n, DType dt) override {
    detail::check_count("all_gather", n);
    run("ncclAllGather", [&] {   // in place when send == recv + rank()*n, as NCCL allows
      return nccl().AllGather(send, recv, nbytes(n, dt), ncclUint8, comm_, stream_);
    });
  }
  void all_gather_v(const void* send, void* recv, const std::vector<int64_t>& counts,
                    DType dt) override {
    detail::check_counts("all_gather_v", counts, size_);
    // One broadcast per contributing rank, grouped so that NCCL runs them together.
    run_group("all_gather_v", [&] {
      int64_t off = 0;
      for (int r = 0; r < size_; ++r) {
        const int64_t c = counts[size_t(r)];
        if (c > 0)
          nccl_check(nccl().Broadcast(send, detail::bytes_of(recv, off, dt), nbytes(c, dt),
                                      ncclUint8, r, comm_, stream_), "ncclBroadcast(all_gather_v)");
        off += c;
      }
    });
  }
  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, DType dt) override {
    detail::check_counts("all_to_all_v", send_counts, size_, "send_counts");
    detail::check_counts("all_to_all_v", recv_counts, size_, "recv_counts");
    run_group("all_to_all_v", [&] {
      int64_t so = 0, ro = 0;
      for (int r = 0; r < size_; ++r) {
        const int64_t sc = send_counts[size_t(r)], rc = recv_counts[size_t(r)];
        if (sc > 0)
          nccl_check(nccl().Send(detail::bytes_of(send, so, dt), nbytes(sc, dt), ncclUint8, r,
                                 comm_, stream_), "ncclSend(all_to_all_v)");
        if (rc > 0)
          nccl_check(nccl().Recv(detail::bytes_of(recv, ro, dt), nbytes(rc, dt), ncclUint8, r,
                                 comm_, stream_), "ncclRecv(all_to_all_v)");
        so += sc;
        ro += rc;
      }
    });
  }
  void broadcast(void* data, int64_t n, DType dt, int root) override {
    detail::check_count("broadcast", n);
    detail::check_peer("broadcast", root, size_);
    run("ncclBroadcast", [&] {
      return nccl().Broadcast(data, data, nbytes(n, dt), ncclUint8, root, comm_, stream_);
    });
  }
  Request isend(const void* data, int64_t n, DType dt, int peer, int) override {
    return post(true, const_cast<void*>(data), n, dt, peer, "isend");
  }
  Request irecv(void* data, int64_t n, DType dt, int peer, int) override {
    return post(false, data, n, dt, peer, "irecv");
  }
  void barrier() override {
    run("ncclAllReduce(barrier)", [&] {
      return nccl().AllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream_);
    });
  }
  std::unique_ptr<Comm> split(int color, int key) override {
    if (color < 0) DS_THROW(InternalError, "split: negative color {}", color);
    if (!nccl().CommSplit)
      DS_THROW(NcclError, "split needs ncclCommSplit (NCCL >= 2.18; this is {})", nccl().version);
    flush();
    ncclComm_t out = nullptr;
    nccl_check(nccl().CommSplit(comm_, color, key, &out, nullptr), "ncclCommSplit");
    return std::make_unique<NcclComm>(out, device_);
  }

  // Issues the queued point-to-point operations as one group, then waits for the stream.
  void complete_p2p() {
    flush();
    sync("point-to-point");
  }

 private:
  struct P2p {
    bool send;
    void* data;
    size_t bytes;
    int peer;
  };

  Request post(bool send, void* data, int64_t n, DType dt, int peer, const char* op);

  void flush() {
    if (pending_.empty()) return;
    std::vector<P2p> ops;
    ops.swap(pending_);
    nccl_check(nccl().GroupStart(), "ncclGroupStart");
    for (const P2p& p : ops) {
      const ncclResult_t r = p.send
          ? nccl().Send(p.data, p.bytes, ncclUint8, p.peer, comm_, stream_)
          : nccl().Recv(p.data, p.bytes, ncclUint8, p.peer, comm_, stream_);
      if (r != ncclSuccess) {
        nccl().GroupEnd();
        nccl_check(r, p.send ? "ncclSend" : "ncclRecv");
      }
    }
    nccl_check(nccl().GroupEnd(), "ncclGroupEnd(point-to-point)");
  }
  void sync(const char* op) {
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess)
      DS_THROW(CudaError, "{}: waiting for the NCCL stream failed: {}", op, cudaGetErrorString(e));
  }
  template <typename F>
  void run(const char* op, F&& call) {
    flush();   // earlier point-to-point operations keep their place in the stream
    nccl_check(call(), op);
    sync(op);
  }
  template <typename F>
  void run_group(const char* op, F&& body) {
    flush();
    nccl_check(nccl().GroupStart(), "ncclGroupStart");
    try {
      body();
    } catch (...) {
      nccl().GroupEnd();
      throw;
    }
    nccl_check(nccl().GroupEnd(), op);
    sync(op);
  }

  ncclComm_t comm_ = nullptr;
  int device_ = 0, rank_ = 0, size_ = 1;
  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;   // one device word for barrier()
  std::vector<P2p> pending_;
};

class NcclRequest final : public Request::Impl {
 public:
  explicit NcclRequest(NcclComm* c) : comm_(c) {}
  void wait() override { comm_->complete_p2p(); }

 private:
  NcclComm* comm_;   // the communicator outlives its requests
};

Request NcclComm::post(bool send, void* data, int64_t n, DType dt, int peer, const char* op) {
  detail::check_count(op, n);
  detail::check_peer(op, peer, size_);
  if (n > 0) pending_.push_back({send, data, nbytes(n, dt), peer});
  return Request(std::make_unique<NcclRequest>(this));
}

// Rank 0's unique id on every rank: over MPI when the launcher wired MPI, else over TCP.
ncclUniqueId share_unique_id(const LaunchInfo& li, const LaunchOptions& o) {
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (li.rank == 0) nccl_check(nccl().GetUniqueId(&id), "ncclGetUniqueId");
  if (li.world_size == 1) return id;
  const bool mpi_launch = li.source == "openmpi" || li.source == "pmix";
  if (mpi_launch && have_mpi()) {
    std::unique_ptr<Comm> mpi = make_mpi_world();
    if (mpi->size() != li.world_size)
      DS_THROW(UsageError, "the launcher started {} ranks but MPI sees {}: launch with mpirun or "
               "srun --mpi=pmix", li.world_size, mpi->size());
    check_run_flags(*mpi);   // host buffers: the flags compared before NCCL starts
    mpi->broadcast(&id, int64_t(sizeof id), DType::u8, 0);
    return id;
  }
  if (o.master_addr.empty())
    DS_THROW(UsageError, "--device cuda with {} ranks launched by {}: give --master-addr (the host "
             "of rank 0) and --master-port for the NCCL id rendezvous, or launch with mpirun",
             li.world_size, li.source);
  const std::string blob = tcp_rendezvous(
      o.master_addr, o.master_port, li.rank, li.world_size,
      li.rank == 0 ? std::string(id.internal, sizeof id.internal) : std::string());
  if (blob.size() != sizeof id.internal)
    DS_THROW(IoError, "tcp rendezvous {}:{}: NCCL id of {} bytes, expected {}", o.master_addr,
             o.master_port, blob.size(), sizeof id.internal);
  std::memcpy(id.internal, blob.data(), sizeof id.internal);
  return id;
}

}  // namespace

std::unique_ptr<Comm> make_nccl_world(const LaunchInfo& li, const LaunchOptions& o) {
  const NcclApi& api = nccl();
  int n_dev = 0;   // stays 0 when there is no driver (the call then fails with code 35)
  const cudaError_t e = cudaGetDeviceCount(&n_dev);
  if (e != cudaSuccess || n_dev == 0)
    DS_THROW(CudaError, "--device cuda: no usable GPU ({})",
             e != cudaSuccess ? cudaGetErrorString(e) : "no device");
  if (li.local_rank >= n_dev)
    DS_THROW(UsageError, "local rank {} needs GPU {} but this node has {} GPUs (one rank per GPU)",
             li.local_rank, li.local_rank, n_dev);
  cuda_check(cudaSetDevice(li.local_rank), "cudaSetDevice");
  const ncclUniqueId id = share_unique_id(li, o);
  ncclComm_t comm = nullptr;
  nccl_check(api.CommInitRank(&comm, li.world_size, id, li.rank), "ncclCommInitRank");
  spdlog::debug("NCCL {}: rank {} of {} on GPU {}", api.version, li.rank, li.world_size,
                li.local_rank);
  return std::make_unique<NcclComm>(comm, li.local_rank);
}

}  // namespace ds::dist
