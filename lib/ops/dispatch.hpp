// Internal helpers of the ops dispatch files (ops.cpp, fp8.cpp, token_logprob.cpp,
// mla_decode.cpp): the CPU-only device check, implementation/thread selection and the
// per-op profiler scope. Not installed; include/ds/ops/ops.hpp is the public API.
#pragma once
#include <algorithm>
#include <chrono>
#include <initializer_list>

#include "ds/core/error.hpp"
#include "ds/ops/ops.hpp"

namespace ds::ops::detail {

// Throws CudaError when the context or any defined tensor is on the GPU.
inline void cpu_only(const Context& ctx, const char* op, std::initializer_list<const Tensor*> ts) {
  bool cuda = ctx.device == Device::cuda;
  for (const Tensor* t : ts) cuda = cuda || (t->defined() && t->device() == Device::cuda);
  if (cuda) DS_THROW(CudaError, "op {} has no CUDA path yet", op);
}
inline bool use_ref(const Context& ctx) { return ctx.impl == Impl::reference; }
inline int nthreads(const Context& ctx) { return std::max(1, ctx.threads); }

// Times one op into ctx.prof (no cost beyond a null check without a profiler).
class Scope {
 public:
  Scope(const Context& ctx, const char* op, double flops = 0)
      : p_(ctx.prof), op_(op), flops_(flops) {
    if (p_) t0_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (p_)
      p_->add(op_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(),
              flops_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Profiler* p_;
  const char* op_;
  double flops_;
  std::chrono::steady_clock::time_point t0_{};
};

}  // namespace ds::ops::detail
