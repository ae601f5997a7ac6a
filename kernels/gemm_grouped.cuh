// Grouped GEMM launcher: many independent row-major products of different shapes in one call,
// the MoE experts of one layer over the expert-sorted rows (lib/ops/cuda/gemm_grouped.cpp).
// Two implementations for BF16 operands (GroupedGemmImpl): cuBLAS (the grouped batched entry
// point, or one call per product where it rejects the types) and a kernel of our own
// (kernels/gemm_grouped_bf16.cu, one launch per call). F32 operands always use cuBLAS. Plain
// C++ header; pointers are device pointers.
#pragma once
#include <cstdint>

namespace ds::cuda {

// One product: row-major c (M, N) = alpha * op(a) @ op(b) + beta * c; a (M, K) or (K, M)
// when ta, b (K, N) or (N, K) when tb; c F32, or BF16 codes (grouped_gemm_rm's c_bf16).
struct GemmDesc {
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  int64_t M = 0, N = 0, K = 0;
};

// Every product with the same transposes, operand dtype (BF16 codes when bf16, else F32),
// FP32 output and accumulation, alpha and beta. F32 operands use FP32 arithmetic (no TF32),
// as sgemm_rm. Empty products (M or N 0) are skipped; K 0 gives beta * c. beta 0: c is not
// read. Leading dimensions are the natural row lengths (a: K, or M when ta; b: N, or K when
// tb; c: N). BF16 with GroupedGemmImpl::kernel: one launch of our kernel when the call fits
// it (grouped_bf16_kernel_fits: 8-element contiguous extents, 16-byte aligned operands, N
// even), else the cuBLAS path for that call. cuBLAS path: falls back to one cuBLAS call per
// product where the grouped entry point rejects the type combination. c_bf16 (BF16 operands,
// beta 0 only): c holds BF16 codes, the FP32 results rounded once (RNE) by cuBLAS; always
// the cuBLAS path (our kernel writes F32), whose grouped entry point takes BF16 in and out.
void grouped_gemm_rm(const GemmDesc* d, int count, bool ta, bool tb, bool bf16, float alpha,
                     float beta, bool c_bf16 = false);
// True once the grouped entry point has been used (false: the per-product fallback ran);
// with an operand dtype (BF16 codes when bf16, else F32; c_bf16: BF16 output): once it took
// that combination.
bool grouped_gemm_native();
bool grouped_gemm_native(bool bf16, bool c_bf16 = false);
// Launches of our grouped BF16 kernels so far in this process, either kernel, and of the
// wgmma one alone (tests check that a call they expect a kernel to take did launch it).
int64_t grouped_gemm_kernel_launches();
int64_t grouped_gemm_wgmma_launches();
// Whether GroupedGemmImpl::wgmma runs the warpgroup-MMA kernel here (the sm_90a build loaded).
bool grouped_gemm_wgmma_available();

// Which implementation BF16 grouped GEMMs use. Initialised at first use from the environment
// variable DS_GROUPED_GEMM: unset, empty or "kernel" -> kernel (the default), "cublas" ->
// cublas, "wgmma" -> wgmma; any other value throws ds::CudaError naming the variable and the
// allowed values. set_grouped_gemm_impl overrides it for the rest of the process (tests,
// benchmarks). wgmma (opt-in, not yet run on a GPU): the calls the kernel takes go to its
// warpgroup-MMA version (kernels/gemm_grouped_sm90.cu) where the sm_90a build runs, to the
// mma.sync kernel elsewhere.
enum class GroupedGemmImpl { cublas, kernel, wgmma };
void set_grouped_gemm_impl(GroupedGemmImpl impl);
GroupedGemmImpl grouped_gemm_impl();

// The cuBLAS path's one call per product (where the grouped entry point rejects the types):
// the products run round-robin on this many side streams (each with its own cuBLAS handle),
// forked from and joined back into the op stream; 1 runs them one after another on it. The
// results are the same either way (each product is the same call and owns its c). Initialised
// at first use from DS_GROUPED_GEMM_STREAMS (1 to 16, default 1; anything else throws
// ds::CudaError naming the variable); the setter overrides it (tests, benchmarks).
int grouped_gemm_streams();
void set_grouped_gemm_streams(int n);
// Products issued on side streams so far in this process (tests check they were).
int64_t grouped_gemm_side_products();

}  // namespace ds::cuda
