// Device side of the table-driven launchers (multi_tensor.cu, adamw.cu, gemm_grouped_bf16.cu):
// scoped stream-ordered pool memory and the upload of a host table into it (the index
// arithmetic: multi_tensor_index.hpp). CUDA only.
#pragma once
#include <vector>

#include "kernels/common.cuh"
#include "kernels/multi_tensor_index.hpp"

namespace ds::cuda {

// Stream-ordered pool memory that is freed when the scope ends, also when a launch check
// throws on the way (the free waits, in stream order, for the kernels that read it).
class PoolBuffer {
 public:
  explicit PoolBuffer(size_t bytes) : p_(pool_alloc(bytes)) {}
  ~PoolBuffer() {
    try {
      pool_free(p_);
    } catch (...) {   // a pending error is reported by the next checked call
    }
  }
  PoolBuffer(const PoolBuffer&) = delete;
  PoolBuffer& operator=(const PoolBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_;
};

// Copies a host table into a PoolBuffer, through pinned staging (copy_to_device_async: no
// wait for the stream; the vector may go right after).
template <class E>
void upload_table(const std::vector<E>& tab, const PoolBuffer& dst) {
  copy_to_device_async(dst.as<void>(), tab.data(), tab.size() * sizeof(E));
}

}  // namespace ds::cuda
