// A fixed pool of worker threads with a blocking parallel_for. Work is split into
// contiguous index ranges so results written by index do not depend on the thread count.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ds {

class ThreadPool {
 public:
  // n_threads <= 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }   // workers + the calling thread
  // Calls fn(begin, end, thread_index) on disjoint chunks covering [0, n); the caller
  // participates. Exceptions from fn are rethrown (the first one) after all chunks end.
  void parallel_for(size_t n, const std::function<void(size_t, size_t, int)>& fn,
                    size_t min_chunk = 1);

 private:
  void worker_loop(int index);
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  const std::function<void(size_t, size_t, int)>* job_ = nullptr;
  size_t job_n_ = 0, job_chunk_ = 1, next_ = 0;
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

// The most threads a --threads flag may ask for: more only oversubscribes any machine this
// runs on, and ~10^5 exhausts the process limit before the first thread runs.
inline constexpr int kMaxThreads = 1024;
// A --threads value as given: 0 (all cores) to kMaxThreads; UsageError otherwise.
int check_threads(int requested);
// <= 0 -> hardware concurrency (at least 1, at most kMaxThreads); a requested count above
// kMaxThreads is a UsageError (check_threads).
int resolve_threads(int requested);

}  // namespace ds
