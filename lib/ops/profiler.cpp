// ops::Profiler (include/ds/ops/ops.hpp): per-op accumulation of calls, seconds, FLOPs and bytes,
// looked up by the op name's literal pointer (a few dozen ops: a linear scan is cheap), GPU
// ops' event pairs read in one batch, and the op -> family map used by the reports
// (ds-pretrain --profile).
#include <cstring>

#include "ds/ops/ops.hpp"

#if defined(DS_HAVE_CUDA)
#include "kernels/runtime.cuh"
#endif

namespace ds::ops {

std::string_view Profiler::family_of(std::string_view op) {
  auto starts = [&](std::string_view p) { return op.substr(0, p.size()) == p; };
  if (op == "matmul" || op == "matmul_bf16" || starts("fp8_gemm_nt") || starts("grouped_matmul"))
    return "gemm";
  if (starts("fp8_") || starts("bf16_round")) return "quantize";
  if (starts("attention")) return "attention";
  if (starts("cross_entropy")) return "cross_entropy";
  if (starts("rmsnorm") || starts("add_rmsnorm")) return "norm";
  if (starts("rope") || op == "split_last" || op == "concat_last" || op == "broadcast_heads" ||
      op == "sum_heads" || op == "transpose" || starts("mla_kv_split"))
    return "rope_permute";
  if (starts("moe") || starts("gather_rows") || op == "scatter_add_rows" || op == "set_rows")
    return "moe";
  if (starts("embedding")) return "embedding";
  if (starts("adamw_step")) return "optimizer";
  // add, add_, scale_, swiglu, sums, zeroing, count_nonfinite, token_logprob
  return "elementwise";
}

Profiler::~Profiler() {
  try {
    resolve();   // returns the pending events to their pool
  } catch (...) {   // a device error is reported by the next checked call
  }
}

void Profiler::add_events(const char* op, void* e0, void* e1, double flops, double bytes) {
  pending_.push_back(Timed{op, e0, e1, flops, bytes});
#if defined(DS_HAVE_CUDA)
  // A long profiled run (ds-pretrain --profile) reads its profile once, at the end: fold the
  // pairs the GPU has already passed (stream order: a prefix) into the entries as it goes, so
  // that the events in use stay bounded by how far the host runs ahead.
  if (pending_.size() < 4096) return;
  size_t done = 0;
  while (done < pending_.size() && ::ds::cuda::timing_event_done(pending_[done].e1)) ++done;
  size_t i = 0;   // pairs [0, i) are back in the pool (a pair is released even when its
  try {           // time cannot be read): never left in pending_ to be released twice
    for (; i < done; ++i) {
      const Timed& t = pending_[i];
      add(t.op, 1e-3 * double(::ds::cuda::timing_event_elapsed_release(t.e0, t.e1)), t.flops,
          t.bytes);
    }
  } catch (...) {
    pending_.erase(pending_.begin(), pending_.begin() + std::ptrdiff_t(i + 1));
    throw;
  }
  pending_.erase(pending_.begin(), pending_.begin() + std::ptrdiff_t(done));
#endif
}

void Profiler::resolve() const {
  if (pending_.empty()) return;
#if defined(DS_HAVE_CUDA)
  ::ds::cuda::sync();   // on a device error the pairs stay pending (not released)
  std::vector<Timed> ready;
  ready.swap(pending_);
  for (size_t i = 0; i < ready.size(); ++i) {
    const Timed& t = ready[i];
    try {
      const double s = 1e-3 * double(::ds::cuda::timing_event_elapsed_release(t.e0, t.e1));
      const_cast<Profiler*>(this)->add(t.op, s, t.flops, t.bytes);
    } catch (...) {   // pairs [0, i] are released; the rest go back to pending
      pending_.assign(ready.begin() + std::ptrdiff_t(i + 1), ready.end());
      throw;
    }
  }
#else
  pending_.clear();   // never filled without CUDA
#endif
}

const std::vector<Profiler::Entry>& Profiler::entries() const {
  resolve();
  return entries_;
}

void Profiler::clear() {
  resolve();
  entries_.clear();
}

void Profiler::add(const char* op, double seconds, double flops, double bytes) {
  Entry* e = nullptr;
  for (Entry& x : entries_)
    if (x.op == op || std::strcmp(x.op, op) == 0) { e = &x; break; }
  if (!e) {
    entries_.push_back(Entry{op, family_of(op), 0, 0, 0, 0});
    e = &entries_.back();
  }
  e->calls += 1;
  e->seconds += seconds;
  e->flops += flops;
  e->bytes += bytes;
}

double Profiler::seconds(std::string_view family) const {
  resolve();
  double s = 0;
  for (const Entry& e : entries_)
    if (family.empty() || e.family == family) s += e.seconds;
  return s;
}

double Profiler::flops(std::string_view family) const {
  resolve();
  double f = 0;
  for (const Entry& e : entries_)
    if (family.empty() || e.family == family) f += e.flops;
  return f;
}

double Profiler::bytes(std::string_view family) const {
  resolve();
  double b = 0;
  for (const Entry& e : entries_)
    if (family.empty() || e.family == family) b += e.bytes;
  return b;
}

}  // namespace ds::ops
