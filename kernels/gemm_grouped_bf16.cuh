// Grouped BF16 GEMM kernel of our own (kernels/gemm_grouped_bf16.cu): every product of a
// grouped call (GemmDesc, kernels/gemm_grouped.cuh) in one launch, BF16 operands (uint16
// codes), FP32 accumulation on the tensor cores (mma.sync m16n8k16), FP32 output. Reached from
// grouped_gemm_rm when GroupedGemmImpl::kernel is selected and the call fits (below). Plain
// C++ header; pointers are device pointers.
#pragma once
#include "kernels/gemm_grouped.cuh"

namespace ds::cuda {

// True when the kernel can take every product of the call: each has M, N, K > 0 (and below
// 2^31 - 256); the contiguous extent of a (K, or M when ta) and of b (N, or K when tb) is a
// multiple of 8 elements and both base pointers are 16-byte aligned (16-byte cp.async
// chunks); N is even and c 8-byte aligned (float2 stores); the whole call has fewer than 2^31
// 128x128 tiles. The leading dimensions are the natural row lengths (as GemmDesc says), so
// they pass the same multiple-of-8 test. K needs no alignment when it is not the contiguous
// dimension (ta && !tb: the weight gradient over an arbitrary token count).
bool grouped_bf16_kernel_fits(const GemmDesc* d, int count, bool ta, bool tb);

// c = alpha * op(a) @ op(b) + beta * c for every product (beta 0: c is not read), one launch.
// Every product must satisfy grouped_bf16_kernel_fits. Uploads the per-group table with one
// stream-ordered copy; asynchronous like every launcher. wgmma: the warpgroup-MMA version
// (gemm_grouped_sm90.cu; the caller checks sm90a_loaded()) over the same table.
void grouped_bf16_kernel(const GemmDesc* d, int count, bool ta, bool tb, float alpha,
                         float beta, bool wgmma = false);

}  // namespace ds::cuda
