// Tensor storage, views and shape checks (see include/ds/core/tensor.hpp). CPU memory is
// 64-byte aligned and recycled by a caching allocator (size classes, bounded, thread-safe),
// so steady-state training steps reuse the previous step's blocks instead of faulting in
// fresh pages. CUDA memory comes from hooks that the CUDA backend installs
// (device_hooks.hpp), so this file never includes CUDA headers.
#include "ds/core/tensor.hpp"

#include <bit>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "ds/core/device_hooks.hpp"
#include "ds/core/env.hpp"
#include "ds/core/error.hpp"

namespace ds {

namespace {
DeviceHooks g_cuda_hooks;
}

void set_device_hooks(Device d, const DeviceHooks& hooks) {
  DS_CHECK(d == Device::cuda, "device hooks exist only for cuda");
  g_cuda_hooks = hooks;
}
const DeviceHooks* device_hooks(Device d) {
  if (d != Device::cuda || !g_cuda_hooks.alloc) return nullptr;
  return &g_cuda_hooks;
}

std::string_view device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    DS_CHECK(d >= 0, "negative dimension in shape {}", shape_str(s));
    n *= d;
  }
  return n;
}

// ---- CPU caching allocator ----------------------------------------------------------------
// Blocks are sized by class: multiples of 64 B below 4 KiB, above that the size rounded up to
// an eighth of its power of two (<= 12.5% slack), so tensors whose row counts vary a little
// between steps (MoE experts) still share blocks. A freed block goes to its class's free list
// unless the cache would exceed its cap (DS_CPU_CACHE_MB, default 2048; 0 disables caching).
// DS_CPU_CACHE_POISON=1 fills reused blocks with 0xFF bytes (NaN) to expose reads of
// uninitialised tensors in tests.
namespace {

size_t size_class(size_t bytes) {
  if (bytes <= 4096) return (bytes + 63) / 64 * 64;
  const size_t step = std::bit_floor(bytes) / 8;
  return (bytes + step - 1) / step * step;
}

class CpuCache {
 public:
  CpuCache()
      : cap_(size_t(env_int("DS_CPU_CACHE_MB", 0, int64_t(1) << 30).value_or(2048)) << 20),
        poison_(env_int("DS_CPU_CACHE_POISON", 0, 1).value_or(0) != 0) {}

  void* get(size_t cls) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= cls;
        hits_++;
        if (poison_) std::memset(p, 0xFF, cls);
        return p;
      }
      misses_++;
    }
    void* p = std::aligned_alloc(64, cls);
    if (!p) {          // out of memory: give the cache back and retry once
      release();
      p = std::aligned_alloc(64, cls);
      if (!p) throw std::bad_alloc();
    }
    return p;
  }

  void put(void* p, size_t cls) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + cls <= cap_) {
        free_[cls].push_back(p);
        cached_ += cls;
        return;
      }
    }
    std::free(p);
  }

  void release() {
    std::unordered_map<size_t, std::vector<void*>> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(free_);
      cached_ = 0;
    }
    for (auto& [cls, list] : blocks)
      for (void* p : list) std::free(p);
  }

  CpuCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return CpuCacheStats{cached_, hits_, misses_};
  }

 private:
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;   // class bytes -> free blocks
  size_t cached_ = 0, cap_;
  uint64_t hits_ = 0, misses_ = 0;
  bool poison_;
};

// Never destroyed: tensors with static storage duration may be freed after main returns.
CpuCache& cpu_cache() {
  static CpuCache* c = new CpuCache();
  return *c;
}

}  // namespace

void cpu_cache_release() { cpu_cache().release(); }
CpuCacheStats cpu_cache_stats() { return cpu_cache().stats(); }

namespace {
const EnvCheck kCacheEnv([] { (void)cpu_cache(); });   // DS_CPU_CACHE_MB, DS_CPU_CACHE_POISON
}  // namespace

Storage::~Storage() {
  if (!owned || !ptr) return;
  if (device == Device::cpu) {
    cpu_cache().put(ptr, size_class(bytes));
  } else if (auto* h = device_hooks(device)) {
    h->free(ptr);
  }
}

static std::shared_ptr<Storage> allocate(size_t bytes, Device dev) {
  auto s = std::make_shared<Storage>();
  s->bytes = bytes;
  s->device = dev;
  if (bytes == 0) return s;
  if (dev == Device::cpu) {
    s->ptr = cpu_cache().get(size_class(bytes));
  } else {
    auto* h = device_hooks(dev);
    if (!h) DS_THROW(CudaError, "no CUDA backend in this build or no CUDA device available");
    s->ptr = h->alloc(bytes);
  }
  return s;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device dev) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dtype;
  t.device_ = dev;
  t.storage_ = allocate(t.nbytes(), dev);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device dev) {
  Tensor t = empty(shape, dtype, dev);
  t.zero_();
  return t;
}

Tensor Tensor::borrow(void* ptr, const Shape& shape, DType dtype, Device dev) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dtype;
  t.device_ = dev;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->ptr = ptr;
  t.storage_->bytes = t.nbytes();
  t.storage_->device = dev;
  t.storage_->owned = false;
  return t;
}

int64_t Tensor::size(int dim) const {
  int nd = ndim();
  if (dim < 0) dim += nd;
  DS_CHECK(dim >= 0 && dim < nd, "dimension {} out of range for shape {}", dim, shape_str(shape_));
  return shape_[size_t(dim)];
}

void* Tensor::raw() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->ptr) + offset_;
}

float* Tensor::f32() const {
  DS_CHECK(dtype_ == DType::f32, "expected an F32 tensor, got {}", dtype_name(dtype_));
  return data<float>();
}

int32_t* Tensor::i32() const {
  DS_CHECK(dtype_ == DType::i32, "expected an I32 tensor, got {}", dtype_name(dtype_));
  return data<int32_t>();
}

Tensor Tensor::view(const Shape& shape) const {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      DS_CHECK(infer < 0, "view {}: more than one -1", shape_str(shape));
      infer = int(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    DS_CHECK(known > 0 && numel_ % known == 0, "view {} of {}", shape_str(shape),
             shape_str(shape_));
    s[size_t(infer)] = numel_ / known;
  }
  DS_CHECK(shape_numel(s) == numel_, "view {} does not match {} elements of {}", shape_str(s),
           numel_, shape_str(shape_));
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  DS_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0],
           "slice0 [{}, {}) of {}", begin, end, shape_str(shape_));
  int64_t row = shape_[0] ? numel_ / shape_[0] : 0;
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.numel_ = row * (end - begin);
  t.offset_ = offset_ + size_t(begin * row) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::join0(const Tensor& next) const {
  if (!defined() || !same_storage(next) || ndim() < 1 || next.ndim() != ndim() ||
      next.dtype_ != dtype_ || next.offset_ != offset_ + nbytes())
    return Tensor();
  for (int d = 1; d < ndim(); ++d)
    if (next.shape_[size_t(d)] != shape_[size_t(d)]) return Tensor();
  Tensor t = *this;
  t.shape_[0] += next.shape_[0];
  t.numel_ += next.numel_;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device_);
  t.copy_from(*this);
  return t;
}

void Tensor::zero_() {
  if (nbytes() == 0) return;
  if (device_ == Device::cpu) {
    std::memset(raw(), 0, nbytes());
  } else {
    auto* h = device_hooks(device_);
    DS_CHECK(h != nullptr, "zero_ on a cuda tensor without a CUDA backend");
    h->memset0(raw(), nbytes());
  }
}

void Tensor::copy_from(const Tensor& src) {
  DS_CHECK(src.numel_ == numel_ && src.dtype_ == dtype_, "copy_from {} {} into {} {}",
           dtype_name(src.dtype_), shape_str(src.shape_), dtype_name(dtype_), shape_str(shape_));
  if (nbytes() == 0) return;
  if (device_ == Device::cpu && src.device_ == Device::cpu) {
    std::memmove(raw(), src.raw(), nbytes());
    return;
  }
  auto* h = device_hooks(Device::cuda);
  DS_CHECK(h != nullptr, "copy between devices without a CUDA backend");
  h->copy(raw(), device_, src.raw(), src.device_, nbytes());
}

void check_shape(const Tensor& t, const Shape& want, const char* name) {
  bool ok = t.ndim() == int(want.size());
  for (size_t i = 0; ok && i < want.size(); ++i)
    ok = want[i] < 0 || want[i] == t.shape()[i];
  if (!ok)
    DS_THROW(InternalError, "{}: expected shape {}, got {}", name, shape_str(want),
             shape_str(t.shape()));
}

}  // namespace ds
