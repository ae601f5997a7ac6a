// Fixed-size thread pool with a blocking, chunked parallel_for (see thread_pool.hpp).
#include "ds/core/thread_pool.hpp"

#include <algorithm>

#include "ds/core/error.hpp"

namespace ds {

int check_threads(int requested) {
  if (requested < 0 || requested > kMaxThreads)
    DS_THROW(UsageError, "--threads {}: expected 0 (all cores) to {}", requested, kMaxThreads);
  return requested;
}

int resolve_threads(int requested) {
  if (requested > 0) return check_threads(requested);
  const unsigned hc = std::thread::hardware_concurrency();   // "all cores", capped
  return hc ? std::min(int(hc), kMaxThreads) : 1;
}

ThreadPool::ThreadPool(int n_threads) {
  int n = resolve_threads(n_threads);
  for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  { std::lock_guard<std::mutex> lk(mu_); stop_ = true; }
  cv_work_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_work_.wait(lk, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    ++active_;
    while (next_ < job_n_) {
      size_t b = next_, e = std::min(job_n_, b + job_chunk_);
      next_ = e;
      auto* job = job_;
      lk.unlock();
      try { (*job)(b, e, index); } catch (...) {
        std::lock_guard<std::mutex> g(mu_);
        if (!error_) error_ = std::current_exception();
      }
      lk.lock();
    }
    if (--active_ == 0) cv_done_.notify_all();
  }
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t, int)>& fn,
                              size_t min_chunk) {
  if (n == 0) return;
  size_t parts = size_t(size()) * 4;
  size_t chunk = std::max(min_chunk, (n + parts - 1) / parts);
  if (workers_.empty() || n <= chunk) { fn(0, n, 0); return; }
  std::unique_lock<std::mutex> lk(mu_);
  job_ = &fn; job_n_ = n; job_chunk_ = chunk; next_ = 0; error_ = nullptr;
  ++generation_;
  ++active_;   // the caller
  cv_work_.notify_all();
  while (next_ < job_n_) {
    size_t b = next_, e = std::min(job_n_, b + job_chunk_);
    next_ = e;
    lk.unlock();
    try { fn(b, e, 0); } catch (...) {
      std::lock_guard<std::mutex> g(mu_);
      if (!error_) error_ = std::current_exception();
    }
    lk.lock();
  }
  --active_;
  cv_done_.wait(lk, [&] { return active_ == 0; });
  job_ = nullptr;
  if (error_) { auto e = error_; error_ = nullptr; std::rethrow_exception(e); }
}

}  // namespace ds
