// Internal helpers of the ops dispatch files (lib/ops/*.cpp: ops.cpp, moe_routing.cpp, fp8.cpp,
// mla_decode.cpp, ...): the device check, the route to the CUDA path, implementation/thread selection
// and the per-op profiler scope. Not installed; include/ds/ops/ops.hpp is the public API.
#pragma once
#include <algorithm>
#include <array>
#include <chrono>
#include <initializer_list>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/ops/ops.hpp"
#if defined(DS_HAVE_CUDA)
#include "kernels/runtime.cuh"
#endif

namespace ds::ops::detail {

// Every defined tensor must live on the context's device (InternalError naming the op and the
// operand's position otherwise); a CUDA context in a build without CUDA is a CudaError.
inline void check_devices(const Context& ctx, const char* op,
                          std::initializer_list<const Tensor*> ts) {
#if !defined(DS_HAVE_CUDA)
  if (ctx.device == Device::cuda) DS_THROW(CudaError, "op {}: this build has no CUDA path", op);
#endif
  int i = 0;
  for (const Tensor* t : ts) {
    if (t->defined() && t->device() != ctx.device)
      DS_THROW(InternalError, "op {}: operand {} is on {} but the context is on {}", op, i,
               device_name(t->device()), device_name(ctx.device));
    ++i;
  }
}
// The same for the operands of a many-tensor op (multi_tensor.cpp).
inline void check_devices(const Context& ctx, const char* op,
                          const std::vector<const Tensor*>& ts) {
#if !defined(DS_HAVE_CUDA)
  if (ctx.device == Device::cuda) DS_THROW(CudaError, "op {}: this build has no CUDA path", op);
#endif
  for (size_t i = 0; i < ts.size(); ++i)
    if (ts[i]->defined() && ts[i]->device() != ctx.device)
      DS_THROW(InternalError, "op {}: tensor {} is on {} but the context is on {}", op, i,
               device_name(ts[i]->device()), device_name(ctx.device));
}
// Every entry of an I32 index tensor lies in [lo, hi) (InternalError naming `what`). Read on
// the host, so CPU tensors only: the CUDA kernels skip out-of-range entries instead.
inline void check_indices(const Tensor& t, int64_t lo, int64_t hi, const char* what) {
  if (t.device() != Device::cpu) return;
  const int32_t* p = t.i32();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (p[i] < lo || p[i] >= hi)
      DS_THROW(InternalError, "{}: index {} at position {} outside [{}, {})", what, p[i], i, lo,
               hi);
}
// Operand checks shared by a one-tensor op and its many-tensor form (ops.cpp, fp8.cpp).
void check_adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                 const AdamWParams& p);
void check_bf16_round(const Tensor& x, const Tensor& out);   // out defined
// For ops with no CUDA path (none today; kept for new ops while they are being ported).
inline void cpu_only(const Context& ctx, const char* op, std::initializer_list<const Tensor*> ts) {
  bool cuda = ctx.device == Device::cuda;
  for (const Tensor* t : ts) cuda = cuda || (t->defined() && t->device() == Device::cuda);
  if (cuda) DS_THROW(CudaError, "op {} has no CUDA path yet", op);
}
inline bool use_ref(const Context& ctx) { return ctx.impl == Impl::reference; }
inline int nthreads(const Context& ctx) { return std::max(1, ctx.threads); }
// CPU ops with BF16-code outputs (the next GEMM's operands): the F32 results go to
// Whether two tensors' bytes intersect (the ops that forbid aliasing check it).
inline bool overlaps(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.nbytes() == 0 || b.nbytes() == 0) return false;
  const auto* pa = static_cast<const char*>(a.raw());
  const auto* pb = static_cast<const char*>(b.raw());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// f32_target(out) (out itself when F32, else a temporary), then store_codes rounds them into
// out (ds::f32_to_bf16, as bf16_round; nothing when out is F32).
inline Tensor f32_target(const Tensor& out) {
  return out.dtype() == DType::f32 ? out : Tensor::empty(out.shape(), DType::f32, out.device());
}
inline void store_codes(const Tensor& f, Tensor& out) {
  if (out.dtype() != DType::bf16) return;
  const float* fp = f.f32();
  auto* op = out.data<uint16_t>();
  for (int64_t i = 0; i < f.numel(); ++i) op[i] = f32_to_bf16(fp[i]);
}

// A CPU op's F32 view of an input that may be BF16 codes: the tensor itself when F32, else
// its values widened (exactly) into a temporary, so that the F32 code computes what a BF16
// input means.
inline Tensor f32_values(const Tensor& x) {
  if (x.dtype() == DType::f32) return x;
  Tensor f = Tensor::empty(x.shape(), DType::f32, x.device());
  const auto* xp = x.data<uint16_t>();
  float* fp = f.f32();
  for (int64_t i = 0; i < x.numel(); ++i) fp[i] = bf16_to_f32(xp[i]);
  return f;
}

// Times one op into ctx.prof (no cost beyond a null check without a profiler): CPU ops by
// the wall clock, GPU ops by two CUDA events on the stream (no synchronisation; see
// ops::Profiler). `io` lists the operands whose bytes the op must move at least: each read or
// written once (list a read-modify-write operand twice, nullptr for none); their sizes are
// taken when the scope ends, so outputs the op allocates count. add_bytes adds what a list
// cannot say (a gather reads only the rows it takes).
class Scope {
 public:
  Scope(const Context& ctx, const char* op, double flops = 0,
        std::initializer_list<const Tensor*> io = {})
      : p_(ctx.prof), op_(op), flops_(flops), dev_(ctx.device) {
    if (!p_) return;
    for (const Tensor* t : io)
      if (n_ < int(io_.size())) io_[size_t(n_++)] = t;
#if defined(DS_HAVE_CUDA)
    if (dev_ != Device::cpu) {
      e0_ = ::ds::cuda::timing_event_record();
      return;
    }
#endif
    t0_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (!p_) return;
    double bytes = bytes_;
    for (int i = 0; i < n_; ++i)
      if (io_[size_t(i)] && io_[size_t(i)]->defined()) bytes += double(io_[size_t(i)]->nbytes());
#if defined(DS_HAVE_CUDA)
    if (dev_ != Device::cpu) {   // never throw from a destructor: a pending error is
      try {                      // reported by the next op or synchronize
        p_->add_events(op_, e0_, ::ds::cuda::timing_event_record(), flops_, bytes);
      } catch (...) {
      }
      return;
    }
#endif
    p_->add(op_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(),
            flops_, bytes);
  }
  void add_bytes(double b) const { bytes_ += b; }
  bool on() const { return p_ != nullptr; }   // profiling: worth counting bytes for
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Profiler* p_;
  const char* op_;
  double flops_;
  [[maybe_unused]] Device dev_;     // read by the CUDA build only
  std::array<const Tensor*, 12> io_{};
  int n_ = 0;
  mutable double bytes_ = 0;
  std::chrono::steady_clock::time_point t0_{};
  [[maybe_unused]] void* e0_ = nullptr;
};

}  // namespace ds::ops::detail

// DS_CUDA_ROUTE(op, (args...)): after the shared checks, hand a CUDA context's call to
// ds::ops::cuda::op (lib/ops/cuda/ops_cuda.hpp). `ctx` must be in scope.
#if defined(DS_HAVE_CUDA)
#include "cuda/ops_cuda.hpp"
#define DS_CUDA_ROUTE(op, args)                                           \
  do {                                                                    \
    if (ctx.device == ::ds::Device::cuda) return ::ds::ops::cuda::op args; \
  } while (0)
// The same for a one-launch op that has a per-tensor fallback below it (the many-tensor ops,
// the transposed quantiser): routed unless DS_CUDA_FUSED=0 (kernels/runtime.cuh fused_ops).
#define DS_CUDA_ROUTE_FUSED(op, args)                                                    \
  do {                                                                                   \
    if (ctx.device == ::ds::Device::cuda && ::ds::cuda::fused_ops())                     \
      return ::ds::ops::cuda::op args;                                                   \
  } while (0)
#else
#define DS_CUDA_ROUTE(op, args) \
  do {                          \
  } while (0)
#define DS_CUDA_ROUTE_FUSED(op, args) DS_CUDA_ROUTE(op, args)
#endif
