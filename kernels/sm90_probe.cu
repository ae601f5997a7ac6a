// The Hopper probes of sm90_probe.cuh and the host side of sm90_tma.cuh (the tensor-map
// encoder). Each probe is one block doing one thing the kernels will build on, so that a
// wrong guess about the hardware shows as a failed test of its own, not as wrong numbers deep
// in a kernel:
//   * tma_probe_box: one TMA load of a 64 x 64 BF16 box with the 128-byte swizzle, completed
//     on an mbarrier, and the shared bytes copied out as they lie;
//   * wgmma_probe: one wgmma.m64n128k16 on operand images the host laid out, with the
//     descriptor offsets and transpose flags the host chose (the test tries the K-major layout
//     the kernels use as its control, then MN-major A and B).
// reference: PTX ISA "cp.async.bulk.tensor", "mbarrier", "Asynchronous Warpgroup Level
// Matrix Multiply-Accumulate" (matrix descriptor: start address, leading and stride
// dimension byte offsets, swizzle mode; imm-trans-a / imm-trans-b for .bf16).
#include <cudaTypedefs.h>   // PFN_cuTensorMapEncodeTiled_v12000

#include <string>

#include "kernels/common.cuh"
#include "kernels/flash_attention_sm90_layout.hpp"   // fa90::desc_sw128
#include "kernels/mma_sm80.cuh"
#include "kernels/multi_tensor_table.cuh"   // PoolBuffer
#include "kernels/sm90_probe.cuh"
#include "kernels/sm90_tma.cuh"
#include "kernels/sm90_wgmma.cuh"
#include "kernels/sm90_wgmma_bf16.cuh"

namespace ds::cuda {

namespace {

using EncodeTiled = PFN_cuTensorMapEncodeTiled_v12000;

EncodeTiled encoder() {
  static const EncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess || p == nullptr) {
      cudaGetLastError();   // not sticky: clear it
      return EncodeTiled(nullptr);
    }
    return reinterpret_cast<EncodeTiled>(p);
  }();
  return fn;
}

constexpr int kBoxBytes = 64 * 64 * 2;

// The box's mbarrier wait gives up after this long (a box takes microseconds): the kernel
// then sets *timed_out and leaves out alone. (Device-only: the host pass does not see it.)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
constexpr uint64_t kTmaTimeoutNs = 2000000000ull;   // 2 s
#endif

__global__ void tma_probe_kernel(const __grid_constant__ CUtensorMap tmap, int r0, int c0,
                                 uint16_t* __restrict__ out, int* __restrict__ timed_out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t raw[];
  __shared__ alignas(8) uint64_t bar;
  const uint32_t tile = (ptx::smem_addr(raw) + 1023u) & ~1023u;
  const uint32_t b = ptx::smem_addr(&bar);
  if (threadIdx.x == 0) {
    sm90::mbar_init(b, 1);
    sm90::mbar_fence_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    sm90::mbar_arrive_expect_tx(b, kBoxBytes);
    sm90::tma_load_2d(tile, &tmap, c0, r0, b);
  }
  if (!sm90::mbar_wait_timed(b, 0, kTmaTimeoutNs)) {
    if (threadIdx.x == 0) *timed_out = 1;
    return;
  }
  const uint16_t* t = reinterpret_cast<const uint16_t*>(raw + (tile - ptx::smem_addr(raw)));
  for (int i = int(threadIdx.x); i < kBoxBytes / 2; i += int(blockDim.x)) out[i] = t[i];
#endif
}


// One warpgroup: the images into 1024-aligned shared memory (A at 0, B after A rounded up to
// 1024), one wgmma with scale-d 0, the accumulators out row-major (sm90_wgmma_bf16.cuh's
// fragment map: row 16 warp + lane/4 + 8 (c >= 2), column 8 nt + 2 (lane % 4) + (c & 1)).
template <int TA, int TB>
__global__ void __launch_bounds__(128, 1)
    wgmma_probe_kernel(const uint8_t* __restrict__ a, int a_bytes, uint32_t a_lbo,
                       uint32_t a_sbo, const uint8_t* __restrict__ b, int b_bytes,
                       uint32_t b_lbo, uint32_t b_sbo, float* __restrict__ d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t raw[];
  const uint32_t s0 = ptx::smem_addr(raw), base = (s0 + 1023u) & ~1023u;
  uint8_t* p = raw + (base - s0);
  const int b_at = (a_bytes + 1023) & ~1023;
  for (int i = int(threadIdx.x); i < a_bytes; i += 128) p[i] = a[i];
  for (int i = int(threadIdx.x); i < b_bytes; i += 128) p[b_at + i] = b[i];
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");   // generic writes -> wgmma
  __syncthreads();
  float acc[16][4] = {};
  sm90::fence_acc(acc);
  sm90::wgmma_fence();
  sm90::wgmma_ss_n128<TA, TB>(acc, fa90::desc_sw128(base, a_lbo, a_sbo),
                              fa90::desc_sw128(base + uint32_t(b_at), b_lbo, b_sbo), 0);
  sm90::wgmma_commit_wait_all();
  sm90::fence_acc(acc);
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
#pragma unroll
  for (int nt = 0; nt < 16; ++nt)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int row = 16 * warp + (lane >> 2) + (c >= 2 ? 8 : 0);
      const int col = 8 * nt + 2 * (lane & 3) + (c & 1);
      d[row * 128 + col] = acc[nt][c];
    }
#endif
}

template <int TA, int TB>
void launch_wgmma_probe(const WgmmaProbeOperand& a, const WgmmaProbeOperand& b, float* d) {
  const size_t smem = size_t((a.bytes + 1023) & ~1023) + size_t(b.bytes) + 1024;
  auto kern = wgmma_probe_kernel<TA, TB>;
  DS_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(smem)));
  kern<<<1, 128, smem, stream()>>>(a.image, a.bytes, a.lbo, a.sbo, b.image, b.bytes, b.lbo,
                                   b.sbo, d);
  DS_CUDA_LAUNCHED();
}

}  // namespace

bool tma_encoder_available() { return encoder() != nullptr; }

bool sm90_probes_supported() { return sm90a_loaded(); }

bool tma_probe_supported() { return sm90a_loaded() && tma_encoder_available(); }

CUtensorMap make_tmap_2d_b16(const void* x, uint64_t rows, uint64_t cols,
                             uint64_t row_stride_bytes, uint32_t box_rows, uint32_t box_cols,
                             bool swizzle128) {
  const EncodeTiled enc = encoder();
  if (!enc)
    throw_cuda_error("make_tmap_2d_b16: the driver has no cuTensorMapEncodeTiled", __FILE__,
                     __LINE__);
  CUtensorMap m{};
  const cuuint64_t dims[2] = {cols, rows};          // innermost first
  const cuuint64_t strides[1] = {row_stride_bytes};  // of dimension 1, in bytes
  const cuuint32_t box[2] = {box_cols, box_rows};
  const cuuint32_t estrides[2] = {1, 1};
  const CUresult r =
      enc(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(x), dims, strides, box,
          estrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
          swizzle128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
          CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw_cuda_error("make_tmap_2d_b16: cuTensorMapEncodeTiled refused (error " +
                         std::to_string(int(r)) + ") a " + std::to_string(rows) + " x " +
                         std::to_string(cols) + " matrix, row stride " +
                         std::to_string(row_stride_bytes) + " bytes, box " +
                         std::to_string(box_rows) + " x " + std::to_string(box_cols),
                     __FILE__, __LINE__);
  return m;
}

void tma_probe_box(const uint16_t* x, int rows, int cols, int r0, int c0, uint16_t* out) {
  if (!tma_probe_supported())
    throw_cuda_error("tma_probe_box: needs an sm_90a device and the driver's tensor-map encoder",
                     __FILE__, __LINE__);
  const CUtensorMap m = make_tmap_2d_b16(x, uint64_t(rows), uint64_t(cols),
                                         uint64_t(cols) * 2, 64, 64, true);
  const size_t smem = kBoxBytes + 1024;
  const PoolBuffer flag(sizeof(int));
  memset0(flag.as<int>(), sizeof(int));
  tma_probe_kernel<<<1, 128, smem, stream()>>>(m, r0, c0, out, flag.as<int>());
  DS_CUDA_LAUNCHED();
  int timed_out = 0;
  copy(&timed_out, flag.as<int>(), sizeof(int));
  if (timed_out)
    throw_cuda_error("tma_probe_box: the box never completed on its mbarrier (gave up after 2 s)",
                     __FILE__, __LINE__);
}

void wgmma_probe(const WgmmaProbeOperand& a, const WgmmaProbeOperand& b, float* d) {
  if (!sm90a_loaded())
    throw_cuda_error("wgmma_probe: needs an sm_90a device", __FILE__, __LINE__);
  if (a.mn_major && b.mn_major) launch_wgmma_probe<1, 1>(a, b, d);
  else if (a.mn_major) launch_wgmma_probe<1, 0>(a, b, d);
  else if (b.mn_major) launch_wgmma_probe<0, 1>(a, b, d);
  else launch_wgmma_probe<0, 0>(a, b, d);
}

}  // namespace ds::cuda
