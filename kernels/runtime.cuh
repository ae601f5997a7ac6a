// CUDA runtime helpers usable from plain C++ (no CUDA headers leak out): device discovery,
// stream-ordered allocation, copies, and the backend switch-on that installs the Tensor
// memory hooks (kernels/backend.cpp).
// reference: CUDA Runtime API; ../shared/ENV-NOTES.md (no-driver behaviour).
#pragma once
#include <cstddef>
#include <string>

namespace ds::cuda {

// Number of usable devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// "NVIDIA H200 (sm_90, 139 GiB)" for device `index`, or "" when unavailable.
std::string device_name(int index);
// The GPU this process drives (install_backend's index; one per process), and binding the
// calling host thread to it (cudaSetDevice once per thread). The allocation and copy
// functions below bind their thread first, so that worker threads (a parallel weight upload)
// use the backend's device and its default stream rather than device 0's.
int device_index();
void bind_thread() noexcept;
// Its number of SMs (launch plans; tests that predict them).
int sm_count();
// Allocation and copies; they return false (and fill `error`) on failure.
bool malloc_device(void** ptr, size_t bytes, std::string* error);
void free_device(void* ptr);
bool copy_to_device(void* dst, const void* src, size_t bytes, std::string* error);
bool copy_to_host(void* dst, const void* src, size_t bytes, std::string* error);
bool synchronize(std::string* error);

// Stream-ordered pool allocation on the ops stream (cudaMallocAsync with a pool that keeps
// freed memory cached); these throw ds::CudaError on failure.
void* pool_alloc(size_t bytes);
void pool_free(void* ptr);
void memset0(void* ptr, size_t bytes);
// cudaMemcpy with direction inferred from the pointers; waits for the copy.
void copy(void* dst, const void* src, size_t bytes);
// Host -> device copy ordered on the ops stream that returns without waiting for the GPU: the
// source is first copied into a pinned staging slot (so `src` may be freed at once). For the
// small tables launchers upload before a kernel (a pageable cudaMemcpyAsync may synchronise
// with the stream).
void copy_to_device_async(void* dst, const void* src, size_t bytes);
// DS_CUDA_FUSED (read once; 1 by default): 0 turns off the one-launch paths written after the
// H200 run of 2026-11-30 that are on by default (the many-tensor ops, the one-pass transposed
// FP8 quantiser, the pinned staging ring and staged Tensor uploads, the 4-wide BF16 rounding,
// the device-side pair sort and per-token combine, BF16 outputs of SwiGLU, RMSNorm, the
// cross-entropy and the log-probabilities' backward, MLA's one-pass keys, the weighted gather,
// the stacked gate/up GEMMs) in favour of the
// per-tensor ops, kernels, atomic scatter and plain copies that ran there, to tell a fault
// in those paths from one elsewhere. Any other value throws.
bool fused_ops();
void sync();   // throws on a pending asynchronous error
// Timing events of the op profiler (ops::Profiler): an event from a pool, recorded on the ops
// stream now (no synchronisation); whether the stream has passed it; and, once it has (after
// sync(), or timing_event_done), the milliseconds between two recorded events, which go back
// to the pool.
void* timing_event_record();
bool timing_event_done(void* e);   // recorded and reached by the stream (no waiting)
float timing_event_elapsed_release(void* e0, void* e1);
// Bytes held by the pool (in use + cached) and the peak in use since the last reset.
size_t pool_reserved_bytes();
size_t pool_peak_used_bytes();
void pool_reset_peak();

// Selects device `index`, checks it, and installs the Tensor memory hooks for Device::cuda.
// Idempotent for the same index; another index afterwards throws (one GPU per process).
// Throws ds::CudaError with a one-line reason ("no CUDA device found (driver returned ...)")
// when unusable.
void install_backend(int index = 0);
bool backend_installed();

}  // namespace ds::cuda
