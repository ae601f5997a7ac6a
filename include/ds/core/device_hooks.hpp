// Memory hooks a device backend installs (the CUDA backend does so when a GPU is found), so
// that Tensor can allocate and copy device memory without lib/core including CUDA headers.
#pragma once
#include <cstddef>

#include "ds/core/tensor.hpp"

namespace ds {

struct DeviceHooks {
  void* (*alloc)(size_t bytes) = nullptr;                       // throws on failure
  void (*free)(void* ptr) = nullptr;
  void (*memset0)(void* ptr, size_t bytes) = nullptr;
  void (*copy)(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) = nullptr;
};

void set_device_hooks(Device d, const DeviceHooks& hooks);
const DeviceHooks* device_hooks(Device d);   // nullptr when none installed

}  // namespace ds
