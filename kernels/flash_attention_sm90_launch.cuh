// What the wgmma attention's two translation units share (flash_attention_sm90.cu: the
// backward, the switches, the transposed copies; flash_attention_sm90_fwd.cu: the forward):
// the switched kernels' launch counters (defined in flash_attention_sm90.cu) and the
// occupancy question of the 64-row blocks.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "kernels/common.cuh"   // DS_CUDA_CHECK

namespace ds::cuda::flash {

// Launches of the 64-row, staggered, pipelined kernels (each pass a launch) and of the wgmma
// forward (attention_rows64_launches() etc. read them).
extern std::atomic<int64_t> g_rows64_launches, g_stag_launches, g_pipe_launches, g_launches;

// Whether kern (opted into smem bytes of dynamic shared memory) keeps two blocks of nt threads
// on an SM; asked of the occupancy calculator once per kernel (one device per process).
template <class K>
bool two_per_sm(K kern, size_t smem, int nt) {
  int n = 0;
  DS_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kern, nt, smem));
  return n >= 2;
}

}  // namespace ds::cuda::flash
