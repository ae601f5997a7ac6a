// Launch sizes of the element-wise and row kernels (kernels/elementwise.cu, swiglu.cu), which
// need the device's SM count; the loops and float4 access they launch are in
// kernels/flat_loops.cuh. Device-code header for .cu files only.
#pragma once
#include <algorithm>
#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/flat_loops.cuh"

namespace ds::cuda::ew {

inline int sms() { return sm_count() > 0 ? sm_count() : 132; }
// Blocks for a grid-stride loop over `work` items: enough to fill the GPU several times over.
inline unsigned flat_blocks(int64_t work) { return grid_for(work, kThreads, int64_t(sms()) * 32); }

// A row kernel's groups (row_lg) and blocks: enough for every row, at most 64 a SM.
struct RowLaunch {
  int lg;
  unsigned blocks;
};
inline RowLaunch row_launch(int64_t rows, int64_t cols) {
  const int lg = row_lg(cols);
  const int64_t rpb = kThreads >> lg;
  return {lg, unsigned(std::min<int64_t>(std::max<int64_t>(cdiv(rows, rpb), 1),
                                         int64_t(sms()) * 64))};
}

}  // namespace ds::cuda::ew
