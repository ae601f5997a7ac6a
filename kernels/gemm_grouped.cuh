// Grouped GEMM launcher (cuBLAS grouped batched GEMM): many independent row-major products of
// different shapes in one call, the MoE experts of one layer over the expert-sorted rows
// (lib/ops/cuda/gemm_grouped.cpp). Plain C++ header; pointers are device pointers.
#pragma once
#include <cstdint>

namespace ds::cuda {

// One product: row-major c (M, N) = alpha * op(a) @ op(b) + beta * c; a (M, K) or (K, M)
// when ta, b (K, N) or (N, K) when tb.
struct GemmDesc {
  const void* a = nullptr;
  const void* b = nullptr;
  float* c = nullptr;
  int64_t M = 0, N = 0, K = 0;
};

// Every product with the same transposes, operand dtype (BF16 codes when bf16, else F32),
// FP32 output and accumulation, alpha and beta. F32 operands use FP32 arithmetic (no TF32),
// as sgemm_rm. Empty products (M or N 0) are skipped; K 0 gives beta * c. Falls back to one
// cuBLAS call per product where the grouped entry point rejects the type combination.
void grouped_gemm_rm(const GemmDesc* d, int count, bool ta, bool tb, bool bf16, float alpha,
                     float beta);
// True once the grouped entry point has been used (false: the per-product fallback ran).
bool grouped_gemm_native();

}  // namespace ds::cuda
