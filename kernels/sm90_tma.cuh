// Hopper (sm_90a) bulk-tensor copies (TMA) and the shared-memory barriers (mbarrier) they
// complete on: the pieces a producer warp needs to fill a ring of tiles without the
// consumers' threads issuing cp.async (FlashAttention-3's and DeepGEMM's loads). Not yet used
// by a kernel: sm90_probe.cu checks on the GPU that a 2D box lands in the K-major 128-byte
// swizzle the wgmma kernels read (tests/kernels/test_ops_sm90_probe.cpp).
//   * make_tmap_2d_b16 (host) encodes a tensor map for a row-major matrix of 2-byte elements
//     through the driver's cuTensorMapEncodeTiled, reached by the runtime's entry-point query
//     (no libcuda link: the binaries still load on machines without a driver);
//   * tma_load_2d copies one box (box_cols x box_rows, inner dimension first) into shared
//     memory and counts its bytes on an mbarrier; elements outside the matrix arrive as zeros
//     and still count;
//   * mbar_* arm, arrive on and wait for a barrier phase (parity).
// reference: PTX ISA "cp.async.bulk.tensor", "mbarrier" (expect-tx, try_wait.parity); CUDA
// Driver API cuTensorMapEncodeTiled (swizzle 128B: box inner dimension at most 128 bytes,
// global address and row strides multiples of 16 bytes).
#pragma once
#include <cuda.h>   // CUtensorMap and its enums (types only; nothing from libcuda is linked)

#include <cstdint>

namespace ds::cuda {

// Whether the driver's tensor-map encoder is reachable (a driver new enough for CUDA 12).
bool tma_encoder_available();

// A tensor map over x (rows x cols elements of 2 bytes, rows row_stride_bytes apart), boxes of
// box_rows x box_cols; swizzle128: the 128-byte swizzle (box_cols * 2 == 128), else none.
// A CudaError naming the field when the encoder refuses (alignment, box, strides).
CUtensorMap make_tmap_2d_b16(const void* x, uint64_t rows, uint64_t cols,
                             uint64_t row_stride_bytes, uint32_t box_rows, uint32_t box_cols,
                             bool swizzle128);

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
namespace sm90 {

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}
// Makes initialised barriers visible to the async proxy (the TMA unit) before its first use.
__device__ __forceinline__ void mbar_fence_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One arrival that also expects `bytes` more transaction bytes in the current phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n"
      "}\n"
      : "=r"(done)
      : "r"(bar), "r"(parity)
      : "memory");
  return done != 0;
}
// Until the phase of the given parity has completed (every arrival and every byte).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  while (!mbar_try_wait(bar, parity)) {
  }
}
// The same, giving up once `ns` nanoseconds of the GPU's global timer have passed (each
// try_wait may suspend the thread for a system-dependent while, so a count of tries bounds
// nothing): false when the phase never completed. For code not yet run on a GPU (the probe),
// so that a wrong guess about the hardware is a failed test rather than a hung process.
__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}
__device__ __forceinline__ bool mbar_wait_timed(uint32_t bar, uint32_t parity, uint64_t ns) {
  const uint64_t t0 = global_ns();
  while (!mbar_try_wait(bar, parity))
    if (global_ns() - t0 > ns) return false;
  return true;
}
// The box whose first element is (column c0, row r0) of tmap -> shared dst (1024-aligned for
// the 128-byte swizzle); its bytes complete on bar.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* tmap, int c0, int r0,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(tmap)), "r"(c0), "r"(r0), "r"(bar)
      : "memory");
}

}  // namespace sm90
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace ds::cuda
