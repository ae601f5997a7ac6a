// Hopper (sm_90a) warpgroup MMA pieces shared by the wgmma kernels (sm90_fp8_gemm.cu,
// flash_attention_sm90.cu): the shared-memory matrix descriptor of the K-major 128-byte
// swizzle both use, and the probe that tells whether the loaded code is the sm_90a build.
// Layout behind the descriptor: a tile of rows x 128 bytes, 1024-byte aligned, row r's
// 16-byte chunk c at r*128 + ((c ^ (r % 8)) * 16); a k-step of 32 bytes (k32 of E4M3, k16 of
// BF16) advances the descriptor's start address by 2 (16-byte units).
// reference: PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate" (matrix
// descriptor format, swizzling modes).
#pragma once
#include <cstdint>

namespace ds::cuda {

// Whether the device is sm_90 and runs the sm_90a build of kernels/ (a probe kernel, once per
// process; the wgmma kernel bodies exist only in that build).
bool sm90a_loaded();

namespace sm90 {

// K-major, 128B swizzle, SBO 1024 bytes (8 rows of 128 B), LBO unused (1).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  return uint64_t((addr & 0x3FFFFu) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}

}  // namespace sm90
}  // namespace ds::cuda
