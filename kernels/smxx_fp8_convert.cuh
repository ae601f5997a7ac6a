// Element-wise float32 -> bf16 / e4m3fn / e5m2 casts on the GPU, with the same semantics as
// the CPU reference in include/ds/core/dtype.hpp (RNE; FP8 saturates to the largest finite
// value; NaN stays NaN). Arch-agnostic (smxx). Pointers are device pointers.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ds::cuda {

enum class CastTarget { bf16, e4m3, e5m2 };
// out holds n elements of 2 (bf16) or 1 (fp8) bytes. Returns false if the launch failed.
bool cast_f32(const float* in, void* out, size_t n, CastTarget target);

}  // namespace ds::cuda
