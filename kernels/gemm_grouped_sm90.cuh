// The grouped BF16 GEMM on warpgroup MMAs (kernels/gemm_grouped_sm90.cu), reached from
// grouped_bf16_kernel (gemm_grouped_bf16.cu) when GroupedGemmImpl::wgmma is selected and the
// loaded code is the sm_90a build; it takes the calls the mma.sync kernel takes
// (grouped_bf16_kernel_fits) over the same device table. Plain C++ header.
#pragma once
#include <cstdint>

#include "kernels/gemm_grouped_bf16_layout.hpp"   // gbf16::GroupTile

namespace ds::cuda {

// One launch over `tiles` 128x128 tiles of the `count` groups of the device table (sorted,
// first_tile the prefix sum); (ta, tb) as grouped_bf16_kernel. Only where sm90a_loaded().
void grouped_bf16_wgmma_launch(const gbf16::GroupTile* table, int count, int64_t tiles, bool ta,
                               bool tb, float alpha, float beta);

}  // namespace ds::cuda
