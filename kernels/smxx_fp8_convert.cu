// float32 -> bf16 / fp8 cast kernels (see smxx_fp8_convert.cuh). Uses cuda_fp8.h's
// saturating conversions (__NV_SATFINITE), which round to nearest even.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "kernels/smxx_fp8_convert.cuh"

namespace ds::cuda {
namespace {

template <int kTarget>
__global__ void cast_kernel(const float* __restrict__ in, void* __restrict__ out, size_t n) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  size_t stride = size_t(gridDim.x) * blockDim.x;
  for (; i < n; i += stride) {
    float x = in[i];
    if constexpr (kTarget == 0) {
      static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(x);
    } else if constexpr (kTarget == 1) {
      static_cast<__nv_fp8_storage_t*>(out)[i] =
          __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    } else {
      static_cast<__nv_fp8_storage_t*>(out)[i] =
          __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
    }
  }
}

}  // namespace

bool cast_f32(const float* in, void* out, size_t n, CastTarget target) {
  if (n == 0) return true;
  int threads = 256;
  int blocks = int((n + threads - 1) / threads);
  if (blocks > 65535) blocks = 65535;
  switch (target) {
    case CastTarget::bf16: cast_kernel<0><<<blocks, threads>>>(in, out, n); break;
    case CastTarget::e4m3: cast_kernel<1><<<blocks, threads>>>(in, out, n); break;
    case CastTarget::e5m2: cast_kernel<2><<<blocks, threads>>>(in, out, n); break;
  }
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ds::cuda
