// CUDA runtime helpers (see runtime.cuh). Without a driver cudaGetDeviceCount returns an
// error and leaves the count untouched, so it is initialised to 0.
#include <cuda_runtime.h>

#include "kernels/runtime.cuh"

namespace ds::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();   // clear the sticky error
    return 0;
  }
  return n;
}

std::string device_name(int index) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, index) != cudaSuccess) return "";
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) +
         ", " + std::to_string(p.totalGlobalMem >> 30) + " GiB)";
}

static bool ok(cudaError_t e, std::string* error) {
  if (e == cudaSuccess) return true;
  if (error) *error = cudaGetErrorString(e);
  return false;
}

bool malloc_device(void** ptr, size_t bytes, std::string* error) {
  return ok(cudaMalloc(ptr, bytes), error);
}
void free_device(void* ptr) { cudaFree(ptr); }
bool copy_to_device(void* dst, const void* src, size_t bytes, std::string* error) {
  return ok(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), error);
}
bool copy_to_host(void* dst, const void* src, size_t bytes, std::string* error) {
  return ok(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), error);
}
bool synchronize(std::string* error) { return ok(cudaDeviceSynchronize(), error); }

}  // namespace ds::cuda
