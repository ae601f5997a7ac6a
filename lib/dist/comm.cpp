// The communicator interface's shared parts (Request, the conveniences over the primitives)
// and the single-process communicator, whose collectives are copies of the caller's buffers.
// reference: include/ds/dist/comm.hpp; MPI-3.1 §5 (a one-rank communicator's results).
#include "ds/dist/comm.hpp"

#include <spdlog/spdlog.h>

#include <cstring>
#include <exception>

#include "comm_util.hpp"
#include "ds/core/error.hpp"

namespace ds::dist {

Request::~Request() {
  // Unwinding after an error: the peer may never post the matching call (it can be blocked on
  // a message this rank will not send), so waiting could hang instead of reaching run_tool's
  // abort of the job. The request is abandoned; the process is about to end.
  if (impl_ && std::uncaught_exceptions() > 0) {
    (void)impl_.release();
    return;
  }
  // A destructor cannot throw: a failed wait here is logged, and the error is lost only for
  // callers that never waited themselves.
  try {
    wait();
  } catch (const std::exception& e) {
    spdlog::error("communication request failed while being destroyed: {}", e.what());
  }
}

bool Request::test() {
  if (impl_ && impl_->test()) impl_.reset();
  return !impl_;
}

void Request::wait() {
  if (!impl_) return;
  // Released before waiting so that a failed wait is not retried by the destructor.
  std::unique_ptr<Impl> impl = std::move(impl_);
  impl->wait();
}

std::vector<int64_t> Comm::all_to_all_counts(const std::vector<int64_t>& in) {
  const int p = size();
  detail::check_counts("all_to_all_counts", in, p, "input");
  std::vector<int64_t> ones(size_t(p), 1), out(size_t(p), 0);
  all_to_all_v(in.data(), ones, out.data(), ones, DType::i64);
  return out;
}

namespace {

// Copies n elements unless source and destination are the same buffer (in-place calls).
void copy_elems(void* dst, const void* src, int64_t n, DType dt) {
  if (n > 0 && dst != src) std::memmove(dst, src, size_t(n) * dtype_size(dt));
}

class SingleComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }

  void all_reduce_sum(void*, int64_t n, DType dt) override {
    detail::check_reduce_dtype("all_reduce_sum", dt);
    detail::check_count("all_reduce_sum", n);
  }
  void all_reduce_sum_f64(double*, int64_t n) override {
    detail::check_count("all_reduce_sum_f64", n);
  }
  void all_reduce_max(void*, int64_t n, DType dt) override {
    detail::check_reduce_dtype("all_reduce_max", dt);
    detail::check_count("all_reduce_max", n);
  }
  void reduce_scatter_sum(const void* send, void* recv, int64_t n, DType dt) override {
    detail::check_reduce_dtype("reduce_scatter_sum", dt);
    detail::check_count("reduce_scatter_sum", n);
    copy_elems(recv, send, n, dt);
  }
  void all_gather(const void* send, void* recv, int64_t n, DType dt) override {
    detail::check_count("all_gather", n);
    copy_elems(recv, send, n, dt);
  }
  void all_gather_v(const void* send, void* recv, const std::vector<int64_t>& counts,
                    DType dt) override {
    detail::check_counts("all_gather_v", counts, 1);
    copy_elems(recv, send, counts[0], dt);
  }
  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, DType dt) override {
    detail::check_counts("all_to_all_v", send_counts, 1, "send_counts");
    detail::check_counts("all_to_all_v", recv_counts, 1, "recv_counts");
    if (send_counts[0] != recv_counts[0])
      DS_THROW(InternalError, "all_to_all_v: sends {} elements to itself but expects {}",
               send_counts[0], recv_counts[0]);
    copy_elems(recv, send, send_counts[0], dt);
  }
  void broadcast(void*, int64_t n, DType, int root) override {
    detail::check_count("broadcast", n);
    detail::check_peer("broadcast", root, 1);
  }
  Request isend(const void*, int64_t, DType, int peer, int) override {
    DS_THROW(InternalError, "isend to rank {} on a single-process communicator", peer);
  }
  Request irecv(void*, int64_t, DType, int peer, int) override {
    DS_THROW(InternalError, "irecv from rank {} on a single-process communicator", peer);
  }
  void barrier() override {}
  std::unique_ptr<Comm> split(int, int) override { return std::make_unique<SingleComm>(); }
};

}  // namespace

std::unique_ptr<Comm> make_single_comm() { return std::make_unique<SingleComm>(); }

}  // namespace ds::dist
