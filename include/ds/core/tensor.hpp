// Tensor: a dense, contiguous, row-major array with a dtype and a device, sharing its
// storage between views. The model and the ops layer exchange only Tensors; nothing above
// lib/ops touches raw loops or a device. Dimension letters used in shape comments across the
// code: B batch, T time, C model dim, V vocab, H heads, D head dim, R kv_lora_rank,
// Q q_lora_rank, E routed experts, K experts per token, I FFN width, N = B*T tokens.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"

namespace ds {

enum class Device : uint8_t { cpu, cuda };
std::string_view device_name(Device d);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);   // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);

struct Storage {
  void* ptr = nullptr;
  size_t bytes = 0;
  Device device = Device::cpu;
  bool owned = true;          // false: borrowed memory (e.g. an mmap), not freed here
  ~Storage();
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device dev = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device dev = Device::cpu);
  // Wraps memory owned elsewhere (it must outlive every view of the tensor).
  static Tensor borrow(void* ptr, const Shape& shape, DType dtype, Device dev = Device::cpu);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  int64_t size(int dim) const;          // negative dims count from the end
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return size_t(numel_) * dtype_size(dtype_); }

  void* raw() const;
  template <typename T> T* data() const { return static_cast<T*>(raw()); }
  float* f32() const;                   // checks dtype == f32
  int32_t* i32() const;                 // checks dtype == i32

  Tensor view(const Shape& shape) const;             // same storage, same numel (-1 allowed once)
  Tensor slice0(int64_t begin, int64_t end) const;   // rows [begin, end) of dim 0
  // This tensor's rows followed by next's as one view, when next starts in the same storage
  // right where this one ends with the same dtype and row shape (the parameters that
  // model::ParamStore::stack lays out so); undefined otherwise.
  Tensor join0(const Tensor& next) const;
  Tensor clone() const;                               // deep copy (same device)
  void zero_();
  // Same numel and dtype, any device pair. Into a device tensor from the host it returns once
  // `src` may change (staged), ordered with the device's later work; out of a device tensor
  // it returns with the data in place.
  void copy_from(const Tensor& src);
  bool same_storage(const Tensor& o) const { return storage_ == o.storage_; }

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;     // bytes into storage
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
};

// CPU tensor memory is recycled by a bounded, thread-safe caching allocator (size classes;
// cap DS_CPU_CACHE_MB, default 2048, 0 = off). release() frees every cached block.
struct CpuCacheStats {
  size_t cached_bytes = 0;   // held in free lists now
  uint64_t hits = 0, misses = 0;
};
void cpu_cache_release();
CpuCacheStats cpu_cache_stats();

// Shape assertion at API boundaries: DS_CHECK_SHAPE(x, {N, C}) throws InternalError
// "x: expected [N, C] got [...]" on mismatch. -1 in `want` matches any size.
void check_shape(const Tensor& t, const Shape& want, const char* name);
#define DS_CHECK_SHAPE(t, ...) ::ds::check_shape((t), ::ds::Shape(__VA_ARGS__), #t)

}  // namespace ds
