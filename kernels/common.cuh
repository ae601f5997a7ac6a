// Device-side helpers shared by every .cu file in kernels/ (CUDA headers only; never included
// from plain C++). Errors go through ds::cuda::raise (kernels/errors.cpp), which throws
// ds::CudaError, so the launchers in kernels/*.cu report failures the same way the rest of
// the project does. All kernels run on the stream returned by ds::cuda::stream().
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/bf16_io.cuh"
#include "kernels/warp_reduce.cuh"
#include "kernels/runtime.cuh"

namespace ds::cuda {

[[noreturn]] void raise_cuda(const char* expr, cudaError_t e, const char* file, int line);
[[noreturn]] void raise_cublas(const char* expr, cublasStatus_t s, const char* file, int line);
// ds::CudaError with `message` (kernels/backend.cpp).
[[noreturn]] void throw_cuda_error(const std::string& message, const char* file, int line);

cudaStream_t stream();             // the stream every op runs on (the legacy default stream)
cublasHandle_t cublas();           // per-process handle, bound to stream()
// gemm.cuh's sgemm_rm / bf16_gemm_rm on a given handle (and so on the handle's stream).
void sgemm_rm_on(cublasHandle_t h, const float* a, const float* b, float* c, int64_t M,
                 int64_t N, int64_t K, bool ta, bool tb, float alpha, float beta);
void bf16_gemm_rm_on(cublasHandle_t h, const uint16_t* a, const uint16_t* b, float* c,
                     int64_t M, int64_t N, int64_t K, bool ta, bool tb, float alpha,
                     float beta);
// The same with a BF16 output: c (uint16 codes) = the FP32 result rounded once (beta == 0
// only: c is not read).
void bf16_gemm_rm_bf16out_on(cublasHandle_t h, const uint16_t* a, const uint16_t* b,
                             uint16_t* c, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
                             float alpha);
cublasLtHandle_t cublaslt();
// cuBLASLt workspace (32 MiB, allocated once).
void* lt_workspace(size_t* bytes);
// Scratch device memory valid until the next call on this thread (stream-ordered reuse):
// for small temporaries inside one launcher.
void* scratch(size_t bytes);
int sm_major();   // (sm_count: runtime.cuh)

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
// Grid size for a grid-stride loop over n items with `threads` per block.
inline unsigned grid_for(int64_t n, int threads, int64_t cap = 65535LL * 8) {
  int64_t b = cdiv(n, threads);
  if (b < 1) b = 1;
  return unsigned(b > cap ? cap : b);
}

}  // namespace ds::cuda

#define DS_CUDA_CHECK(expr)                                                         \
  do {                                                                              \
    cudaError_t ds_e_ = (expr);                                                     \
    if (ds_e_ != cudaSuccess) ::ds::cuda::raise_cuda(#expr, ds_e_, __FILE__, __LINE__); \
  } while (0)
#define DS_CUBLAS_CHECK(expr)                                                            \
  do {                                                                                   \
    cublasStatus_t ds_s_ = (expr);                                                       \
    if (ds_s_ != CUBLAS_STATUS_SUCCESS)                                                  \
      ::ds::cuda::raise_cublas(#expr, ds_s_, __FILE__, __LINE__);                        \
  } while (0)
// After a <<<...>>> launch.
#define DS_CUDA_LAUNCHED() DS_CUDA_CHECK(cudaGetLastError())
