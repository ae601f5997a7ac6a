// BF16 rounding of F32 tensors and the row gathers that round as they copy (the MoE layer's
// weighted, BF16-code rows; with the dot products of its combine backward): ops::bf16_round,
// gather_rows_bf16 and gather_rows_bf16_dot on the GPU. Included by kernels/fp8_quant.cu,
// which launches them, and by the host emulation test tests/kernels/test_emu_bf16_rows.cpp,
// which runs this same source on a CPU against the reference. Plain CUDA C++ without inline
// PTX, so that the emulator (tests/kernels/cuda_emu.hpp) can run it.
#pragma once
#include <cstdint>

#include "kernels/bf16_io.cuh"
#include "kernels/warp_reduce.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::bf16rows {
namespace {

__global__ void bf16_round_kernel(const float* x, float* out_f32, uint16_t* out_codes,
                                  int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint16_t c = f32_to_bf16(x[i]);
    if (out_codes) out_codes[i] = c;
    if (out_f32) out_f32[i] = bf16_to_f32(c);
  }
}
// The aligned body of bf16_round: four elements a thread, one 16-byte load and one 8- or
// 16-byte store (a scalar load a thread keeps too few bytes in flight to reach HBM's rate).
// Not __restrict__: out may be x itself (bf16_round rounds in place).
template <bool CODES>
__global__ void bf16_round4_kernel(const float4* x, void* out, int64_t n4) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4;
       i += int64_t(gridDim.x) * blockDim.x)
    store_bf16x4<CODES>(out, i, x[i]);
}

// One warp a row m of the output: rows[m] is read once and the row's values go 4 at a time
// (VEC: C % 4 == 0 and src / out aligned, 16-byte loads, 8- or 16-byte stores) or one at a
// time. A row index outside [0, n_src) gives zeros. DOT: the same pass also gives dot[m] =
// sum_c src[rows[m], c] * b[m, c] in double, each lane's terms in gather_rows_dot_kernel's
// order (4 at a time when VEC, as its float4 path), then the warp sum (its bits). BF16B: b
// holds BF16 codes (the routed experts' BF16 outputs), widened exactly (VEC: 8-byte loads).
template <bool VEC, bool CODES, bool DOT = false, bool BF16B = false>
__global__ void gather_rows_bf16_kernel(const float* __restrict__ src, int64_t n_src,
                                        const int32_t* __restrict__ rows,
                                        const float* __restrict__ w, void* __restrict__ out,
                                        int64_t M, int64_t C, const void* __restrict__ b = nullptr,
                                        float* __restrict__ dot = nullptr) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t per_block = blockDim.x / 32;
  for (int64_t m = int64_t(blockIdx.x) * per_block + threadIdx.x / 32; m < M;
       m += int64_t(gridDim.x) * per_block) {
    const int32_t r = rows[m];
    const bool in = r >= 0 && r < n_src;
    const float wm = w ? w[m] : 1.0f;
    const float* srow = src + (in ? int64_t(r) : 0) * C;
    // w * x without FMA: 0 + (w * x) turns a -0 product into +0, as the CPU op does
    auto weigh = [&](float x) { return w ? __fadd_rn(0.0f, __fmul_rn(wm, x)) : x; };
    double acc = 0;
    if constexpr (VEC) {
      void* orow = CODES ? static_cast<void*>(static_cast<uint16_t*>(out) + m * C)
                         : static_cast<void*>(static_cast<float*>(out) + m * C);
      for (int64_t j = lane; j < C / 4; j += 32) {
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (in) {
          v = reinterpret_cast<const float4*>(srow)[j];
          if constexpr (DOT) {
            const float4 y = load_in4<BF16B>(b, m * C / 4 + j);
            acc += double(v.x) * double(y.x) + double(v.y) * double(y.y) +
                   double(v.z) * double(y.z) + double(v.w) * double(y.w);
          }
          v = make_float4(weigh(v.x), weigh(v.y), weigh(v.z), weigh(v.w));
        }
        store_bf16x4<CODES>(orow, j, v);
      }
    } else {
      for (int64_t c = lane; c < C; c += 32) {
        if constexpr (DOT) {
          if (in) acc += double(srow[c]) * double(load_in1<BF16B>(b, m * C + c));
        }
        const uint16_t code = f32_to_bf16(in ? weigh(srow[c]) : 0.0f);
        if (CODES) static_cast<uint16_t*>(out)[m * C + c] = code;
        else static_cast<float*>(out)[m * C + c] = bf16_to_f32(code);
      }
    }
    if constexpr (DOT) {
      acc = warp_sum_d(acc);
      if (lane == 0) dot[m] = in ? float(acc) : 0.0f;
    }
  }
}

}  // namespace
}  // namespace ds::cuda::bf16rows
