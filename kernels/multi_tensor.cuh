// Many-tensor launchers (kernels/multi_tensor.cu; AdamW's in adamw.cu, declared in
// elementwise.cuh): one launch over a table of tensors instead of one per tensor, for the
// optimiser's passes over every parameter and the routed experts' weight conversions. Plain
// C++ header; pointers are device pointers, the arrays describing them host arrays of `count`
// entries. The table is split into fixed chunks of elements; one block per chunk finds its
// tensor by binary search over the chunks' prefix sums (multi_tensor_index.hpp).
#pragma once
#include <cstdint>

namespace ds::cuda {

// out[i] = sum of xs[i][j]^2 over j < ns[i], in double (host array `out`). One launch, one
// device->host copy of the per-chunk partial sums, which the host adds in chunk order (so the
// result is deterministic).
void sum_squares_multi_f32(const float* const* xs, const int64_t* ns, int count, double* out);
// Zero bytes[i] bytes at ptrs[i] for every i.
void zero_multi(void* const* ptrs, const int64_t* bytes, int count);
// bf16_round for every i: BF16 codes (uint16) into outs[i] when codes, else the rounded
// values as F32 (outs[i] may equal xs[i]).
void bf16_round_multi(const float* const* xs, void* const* outs, bool codes, const int64_t* ns,
                      int count);

}  // namespace ds::cuda
