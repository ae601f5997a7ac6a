// Error reporting of the CUDA launchers: a failed runtime or cuBLAS call becomes one
// ds::CudaError line naming the call and the source location. (This file is compiled by
// nvcc but contains no device code; the throw happens in kernels/backend.cpp so that no
// fmt/spdlog header reaches nvcc.)
#include "kernels/common.cuh"

namespace ds::cuda {

void raise_cuda(const char* expr, cudaError_t e, const char* file, int line) {
  cudaGetLastError();   // clear a non-sticky error so later calls can proceed
  throw_cuda_error(
      std::string(expr) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")", file,
      line);
}

void raise_cublas(const char* expr, cublasStatus_t s, const char* file, int line) {
  throw_cuda_error(
      std::string(expr) + ": " + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")",
      file, line);
}

}  // namespace ds::cuda
