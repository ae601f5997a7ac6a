// Minimal CUDA runtime helpers usable from plain C++ (no CUDA headers leak out).
// reference: CUDA Runtime API; ../shared/ENV-NOTES.md (no-driver behaviour).
#pragma once
#include <cstddef>
#include <string>

namespace ds::cuda {

// Number of usable devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// "NVIDIA H200 (sm_90, 139 GiB)" for device `index`, or "" when unavailable.
std::string device_name(int index);
// Allocation and copies; they return false (and fill `error`) on failure.
bool malloc_device(void** ptr, size_t bytes, std::string* error);
void free_device(void* ptr);
bool copy_to_device(void* dst, const void* src, size_t bytes, std::string* error);
bool copy_to_host(void* dst, const void* src, size_t bytes, std::string* error);
bool synchronize(std::string* error);

}  // namespace ds::cuda
