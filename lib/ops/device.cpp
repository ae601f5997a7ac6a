// Device management of the ops layer (include/ds/ops/ops.hpp "devices"): the switch from the
// CPU-only build to the CUDA backend in kernels/ (runtime.cuh), kept in one file so that the
// rest of lib/ needs no #ifdef.
#include <string>

#include "ds/core/error.hpp"
#include "ds/ops/ops.hpp"
#if defined(DS_HAVE_CUDA)
#include "cuda/ops_cuda.hpp"
#include "kernels/runtime.cuh"
#endif

namespace ds::ops {

bool cuda_built() {
#if defined(DS_HAVE_CUDA)
  return true;
#else
  return false;
#endif
}

void init_device(Device d, int gpu) {
  if (d == Device::cpu) return;
#if defined(DS_HAVE_CUDA)
  ds::cuda::install_backend(gpu);
  cuda::check_fp8_gemm_env();   // DS_FP8_GEMM, as install_backend checks the kernels' variables
#else
  (void)gpu;
  DS_THROW(CudaError, "--device cuda: this build has no CUDA path (configure with a CUDA "
                      "toolkit installed and DS_CUDA=ON)");
#endif
}

void synchronize(Device d) {
  if (d == Device::cpu) return;
#if defined(DS_HAVE_CUDA)
  ds::cuda::sync();
#endif
}

std::string device_description(Device d) {
  if (d == Device::cpu) return "cpu";
#if defined(DS_HAVE_CUDA)
  return ds::cuda::device_name(ds::cuda::backend_installed() ? ds::cuda::device_index() : 0);
#else
  return "cuda (not built)";
#endif
}

DeviceMemory device_memory(Device d) {
  DeviceMemory m;
#if defined(DS_HAVE_CUDA)
  if (d == Device::cuda && ds::cuda::backend_installed()) {
    m.reserved = ds::cuda::pool_reserved_bytes();
    m.peak_used = ds::cuda::pool_peak_used_bytes();
  }
#else
  (void)d;
#endif
  return m;
}

void reset_device_peak(Device d) {
#if defined(DS_HAVE_CUDA)
  if (d == Device::cuda && ds::cuda::backend_installed()) ds::cuda::pool_reset_peak();
#else
  (void)d;
#endif
}

}  // namespace ds::ops
