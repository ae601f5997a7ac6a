// The communicator interface: every collective the distributed code paths use, with three
// implementations behind it: single (one process; every collective is a copy), MPI (CPU
// tensors in host memory, Open MPI) and NCCL (GPU tensors in device memory; built with CUDA).
// Buffers are raw pointers + element count + DType: host memory for single/MPI, device memory
// for NCCL. Counts are elements, not bytes. Reductions are sums in the buffer's dtype (F32,
// i32 or i64; doubles through all_reduce_sum_f64).
// Collectives are blocking and must be called by every rank of the communicator in the same
// order. In-place forms: reduce_scatter_sum with recv == send, all_gather(_v) with send at
// this rank's offset of recv. MPI refuses calls of more than INT_MAX elements (InternalError).
// isend/irecv return a Request the caller waits on (point-to-point for pipeline stages; the
// buffer must stay alive and untouched until wait()).
// reference: MPI-3.1 §5 (collective semantics), NCCL API (ncclAllReduce, ncclSend/ncclRecv).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/core/tensor.hpp"

namespace ds::dist {

class Request {
 public:
  struct Impl {
    virtual ~Impl() = default;
    virtual void wait() = 0;
    // Whether the operation has completed, without blocking (then it needs no wait); false
    // where the backend cannot tell (NCCL's posted calls run at the next wait).
    virtual bool test() { return false; }
  };
  Request() = default;
  explicit Request(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
  Request(Request&&) noexcept = default;
  Request& operator=(Request&&) noexcept = default;
  // The destructor waits if still pending (never leaves a dangling send).
  ~Request();
  void wait();                               // no-op when empty or already waited
  // true when empty or completed (the request is then empty: its buffer may be reused);
  // never blocks
  bool test();
  bool pending() const { return bool(impl_); }

 private:
  std::unique_ptr<Impl> impl_;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;   // "single" | "mpi" | "nccl"

  // In-place sum over ranks of n elements (dtype f32, i32 or i64).
  virtual void all_reduce_sum(void* data, int64_t n, DType dt) = 0;
  virtual void all_reduce_sum_f64(double* data, int64_t n) = 0;
  // In-place maximum over ranks.
  virtual void all_reduce_max(void* data, int64_t n, DType dt) = 0;
  // send holds size()*n elements in rank order; rank r receives the sum of chunk r (n).
  virtual void reduce_scatter_sum(const void* send, void* recv, int64_t n, DType dt) = 0;
  // Every rank contributes n elements; recv receives size()*n in rank order.
  virtual void all_gather(const void* send, void* recv, int64_t n, DType dt) = 0;
  // Variable counts: rank r contributes counts[r] elements (send holds counts[rank()]); recv
  // receives sum(counts) elements in rank order.
  virtual void all_gather_v(const void* send, void* recv, const std::vector<int64_t>& counts,
                            DType dt) = 0;
  // send holds send_counts[r] elements for rank r, contiguous in rank order; recv receives
  // recv_counts[r] elements from rank r, contiguous in rank order. The counts must agree
  // pairwise (exchange them first with all_to_all of one i64 each when unknown).
  virtual void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                            const std::vector<int64_t>& recv_counts, DType dt) = 0;
  virtual void broadcast(void* data, int64_t n, DType dt, int root) = 0;
  // Point-to-point (any dtype). MPI matches by tag. NCCL has no tags: messages between a pair
  // of ranks match in posting order, and the queued operations start together at the first
  // wait() (or the next collective), so post every send and receive of a step before waiting.
  virtual Request isend(const void* data, int64_t n, DType dt, int peer, int tag) = 0;
  virtual Request irecv(void* data, int64_t n, DType dt, int peer, int tag) = 0;
  virtual void barrier() = 0;
  // The ranks that pass the same color form a new communicator, ordered by key (ties by this
  // communicator's rank): MPI_Comm_split semantics. Every rank must call it.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;

  // Conveniences over the primitives above.
  void all_reduce_sum(std::vector<double>& v) { all_reduce_sum_f64(v.data(), int64_t(v.size())); }
  void all_reduce_sum(std::vector<int64_t>& v) {
    all_reduce_sum(v.data(), int64_t(v.size()), DType::i64);
  }
  void send(const void* data, int64_t n, DType dt, int peer, int tag) {
    isend(data, n, dt, peer, tag).wait();
  }
  void recv(void* data, int64_t n, DType dt, int peer, int tag) {
    irecv(data, n, dt, peer, tag).wait();
  }
  // Exchanges one i64 per rank pair: out[r] = what rank r passed in in[rank()].
  std::vector<int64_t> all_to_all_counts(const std::vector<int64_t>& in);
  // Tensor forms (contiguous tensors, numel elements).
  void all_reduce_sum(Tensor& t) { all_reduce_sum(t.raw(), t.numel(), t.dtype()); }
  void broadcast(Tensor& t, int root) { broadcast(t.raw(), t.numel(), t.dtype(), root); }
};

// A communicator of one process: collectives copy, point-to-point to self is an error.
std::unique_ptr<Comm> make_single_comm();

}  // namespace ds::dist
