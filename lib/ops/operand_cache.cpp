// ops::OperandCache::refresh_plan (include/ds/ops/ops.hpp): which cached BF16 weight operands
// an optimizer step can rewrite in place, and where each parameter's operand lies; and
// Context::operand_refresh resolved.
#include <algorithm>
#include <cstdint>
#include <set>
#include <vector>

#include "ds/ops/ops.hpp"

#if defined(DS_HAVE_CUDA)
#include "kernels/runtime.cuh"
#endif

namespace ds::ops {

bool refreshes_operands(const Context& ctx) {
#if defined(DS_HAVE_CUDA)
  if (ctx.device == Device::cuda && !ds::cuda::fused_ops()) return false;
#endif
  return ctx.operand_refresh != 0;
}

std::map<const void*, Tensor> OperandCache::refresh_plan(
    const std::vector<std::pair<const void*, int64_t>>& params) {
  // the parameters by address: [start, start + numel) in F32 elements
  std::vector<std::pair<uintptr_t, int64_t>> ps;
  ps.reserve(params.size());
  for (const auto& [p, n] : params)
    if (p && n > 0) ps.emplace_back(reinterpret_cast<uintptr_t>(p), n);
  std::sort(ps.begin(), ps.end());
  std::map<const void*, Tensor> plan;
  for (auto it = m_.begin(); it != m_.end();) {
    const Entry& e = it->second;
    // every part tiled exactly by consecutive parameters, none already planned
    std::vector<std::pair<const void*, Tensor>> parts;
    bool ok = !e.bindings.empty();
    std::set<const void*> mine;
    for (const Binding& b : e.bindings) {
      if (!ok) break;
      const uintptr_t start = reinterpret_cast<uintptr_t>(b.weight);
      ok = b.weight && b.numel > 0 && b.operand.defined() && b.operand.numel() == b.numel;
      if (!ok) break;
      const Tensor flat = b.operand.view({b.numel});
      auto at = std::lower_bound(ps.begin(), ps.end(), std::make_pair(start, int64_t(0)));
      int64_t done = 0;
      while (ok && done < b.numel) {
        const uintptr_t want = start + uintptr_t(done) * sizeof(float);
        ok = at != ps.end() && at->first == want && done + at->second <= b.numel;
        if (!ok) break;
        const void* w = reinterpret_cast<const void*>(at->first);
        ok = plan.count(w) == 0 && mine.insert(w).second;
        if (!ok) break;
        parts.emplace_back(w, flat.slice0(done, done + at->second));
        done += at->second;
        ++at;
      }
    }
    if (!ok) {
      it = m_.erase(it);
      continue;
    }
    for (auto& [w, t] : parts) plan.emplace(w, t);
    ++it;
  }
  return plan;
}

}  // namespace ds::ops
