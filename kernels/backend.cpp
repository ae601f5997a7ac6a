// Turns the CUDA backend on: picks the device, checks it is usable, and installs the Tensor
// memory hooks (ds/core/device_hooks.hpp) so that Tensor::empty/zeros/copy_from work on
// Device::cuda. Plain C++ (no CUDA headers): it only calls the runtime wrappers.
#include <mutex>
#include <string>

#include "ds/core/device_hooks.hpp"
#include "ds/core/error.hpp"
#include "kernels/flash_attention.cuh"
#include "kernels/gemm_grouped.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/runtime.cuh"

namespace ds::cuda {

void set_device_info(int index);   // runtime.cu

[[noreturn]] void throw_cuda_error(const std::string& message, const char* file, int line) {
  throw CudaError(message, file, line);
}

namespace {
std::once_flag g_once;
bool g_installed = false;
}  // namespace

void install_backend(int index) {
  if (g_installed) {
    if (index != device_index())
      DS_THROW(CudaError, "--device cuda: this process drives GPU {}; GPU {} was asked for too "
               "(one GPU per process)", device_index(), index);
    return;
  }
  const int n = device_count();
  if (n == 0)
    DS_THROW(CudaError, "--device cuda: no CUDA device found (no NVIDIA driver or GPU on this "
                        "machine; use --device cpu)");
  if (index < 0 || index >= n)
    DS_THROW(CudaError, "--device cuda: GPU {} requested (the local rank picks it) but {} "
             "visible", index, n);
  grouped_gemm_impl();      // a bad DS_GROUPED_GEMM, DS_GROUPED_GEMM_STREAMS, DS_ATTENTION,
  grouped_gemm_streams();   // DS_ATTENTION_BWD, DS_ATTENTION_ROWS, DS_ATTENTION_SCHEDULE or
  attention_wgmma();        // DS_ATTENTION_QSTATS fails here, before any input is read
  attention_bwd_fused();
  attention_rows64();
  attention_staggered();
  attention_bwd_qstats();
  mla_wgmma();              // DS_MLA_KERNEL likewise
  fused_ops();              // and DS_CUDA_FUSED
  std::call_once(g_once, [&] {
    set_device_info(index);
    DeviceHooks h;
    h.alloc = [](size_t bytes) { return pool_alloc(bytes); };
    h.free = [](void* p) { pool_free(p); };
    h.memset0 = [](void* p, size_t bytes) { memset0(p, bytes); };
    // Host -> device returns once the source is staged (pinned ring), ordered on the ops
    // stream, so that a model's small per-step uploads (positions, routing tables, target
    // ids) do not each drain the GPU; the other directions, and every copy with
    // DS_CUDA_FUSED=0, wait for the copy.
    h.copy = [](void* dst, Device dd, const void* src, Device sd, size_t bytes) {
      if (dd == Device::cuda && sd == Device::cpu && fused_ops())
        copy_to_device_async(dst, src, bytes);
      else
        copy(dst, src, bytes);
    };
    set_device_hooks(Device::cuda, h);
    g_installed = true;
  });
}

bool backend_installed() { return g_installed; }

}  // namespace ds::cuda
