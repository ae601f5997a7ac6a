// Hopper (sm_90a) FP8 GEMM in NT layout with per-128-K promotion (same contract as
// fp8_gemm.cuh's fp8_gemm_nt_fallback): warpgroup wgmma.mma_async E4M3 x E4M3 -> FP32 on
// operands staged in 128B-swizzled shared memory by a 4-stage cp.async pipeline, each K
// block's partial sums scaled and added into separate FP32 accumulators (DeepGEMM's
// promotion). Also grouped (same contracts as the grouped fallbacks in fp8_gemm.cuh). Plain
// C++ header.
#pragma once
#include <cstdint>

#include "kernels/fp8_gemm.cuh"

namespace ds::cuda {

// Whether fp8_gemm_nt_sm90 can run this problem here: an sm_90 device whose loaded code is
// the sm_90a build (checked once by a probe kernel, which synchronises once per process),
// K % 16 == 0 and 16-byte aligned code pointers. M and N are arbitrary.
bool fp8_gemm_nt_sm90_supported(const Fp8Operand& a, const Fp8Operand& b, int64_t M, int64_t N,
                                int64_t K);
// Throws (ds::CudaError) when not supported.
void fp8_gemm_nt_sm90(const Fp8Operand& a, const Fp8Operand& b, float* c, int64_t M, int64_t N,
                      int64_t K);

// The main loop of every launch that follows (all modes): true (default; DS_FP8_GEMM=auto or
// overlap) promotes block kb - 1 while block kb's wgmma run (two sets of partial sums); false
// (DS_FP8_GEMM=wgmma) waits for each 128-wide K block's wgmma before promoting its partial
// sums. Process-wide.
void set_fp8_gemm_overlap(bool on);
bool fp8_gemm_overlap();

// Split-K of the k-grouped GEMM when it has one group over few tiles (an FP8 Linear's weight
// gradient; kernels/fp8_ksplit.hpp): false (default; DS_FP8_KSPLIT=off) a block a tile, true
// (DS_FP8_KSPLIT=on) each tile's K blocks shared among up to 16 blocks summing into a zeroed
// workspace, then added into c in order: deterministic, but not the unsplit kernel's bits
// (another order of sums). Not yet run on a GPU. Process-wide; the split launches so far.
void set_fp8_ksplit(bool on);
bool fp8_ksplit();
int64_t fp8_ksplit_launches();

// m-grouped (fp8_gemm_nt_grouped_fallback): supported as above, with every b[g] aligned.
bool fp8_gemm_nt_grouped_sm90_supported(const Fp8Operand& a, const Fp8Operand* b, int groups,
                                        int64_t N, int64_t K);
void fp8_gemm_nt_grouped_sm90(const Fp8Operand& a, const Fp8Operand* b, const int64_t* offsets,
                              int groups, float* c, int64_t N, int64_t K);
// k-grouped (fp8_gemm_nt_kgrouped_fallback): supported as above with K = Ktot = offsets[groups]
// (false when 0; the last K block may be partial, the other offsets are multiples of 128). One
// non-empty group goes to the kernel by value, more as an uploaded table.
bool fp8_gemm_nt_kgrouped_sm90_supported(const Fp8Operand& a, const Fp8Operand& b,
                                         const int64_t* offsets, int groups, int64_t M,
                                         int64_t N);
void fp8_gemm_nt_kgrouped_sm90(const Fp8Operand& a, const Fp8Operand& b, const int64_t* offsets,
                               int groups, float* const* c, int64_t M, int64_t N);

}  // namespace ds::cuda
