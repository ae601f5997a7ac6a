// SwiGLU's kernels (ops::swiglu_* on the GPU): out = silu(gate) * up and its gradient, on two
// tensors (flat grid-stride kernels) or on the packed [gate | up] rows of one GEMM over stacked
// weights (row kernels); F32 or BF16-code outputs; semantics follow
// lib/ops/cpu/ref_swiglu.cpp. Included by kernels/swiglu.cu, which launches them, and by the
// host emulation test tests/kernels/test_emu_swiglu.cpp, which runs this same source on a CPU
// against the reference. Plain CUDA C++ without inline PTX, so that the emulator
// (tests/kernels/cuda_emu.hpp) can run it.
#pragma once
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "kernels/bf16_io.cuh"
#include "kernels/flat_loops.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::swiglu {
namespace {

using namespace ew;

// FP32 with the accurate expf (the reference evaluates in double; the difference is a few
// ulps, and double exp would make this large tensor op compute-bound).
__device__ __forceinline__ float sigmoidf(float g) { return 1.0f / (1.0f + expf(-g)); }

// Results stored as F32, or (CODES) as BF16 codes rounded like bf16_round: st_out4 / st_out1.
template <bool CODES>
__device__ __forceinline__ void st_out4(void* p, int64_t i, float4 v) {
  if constexpr (CODES) store_bf16x4<true>(p, i, v);
  else reinterpret_cast<float4*>(p)[i] = v;
}
template <bool CODES>
__device__ __forceinline__ void st_out1(void* p, int64_t i, float v) {
  if constexpr (CODES) static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
  else static_cast<float*>(p)[i] = v;
}

template <bool CODES>
__global__ void swiglu_fwd_kernel(const float* gate, const float* up, void* out, int64_t n,
                                  bool vec) {
  auto f = [](float g, float u) { return g * sigmoidf(g) * u; };
  flat_loop(
      n, vec,
      [&](int64_t i) {
        const float4 g = ld4(gate, i), u = ld4(up, i);
        st_out4<CODES>(out, i, make_float4(f(g.x, u.x), f(g.y, u.y), f(g.z, u.z), f(g.w, u.w)));
      },
      [&](int64_t i) { st_out1<CODES>(out, i, f(gate[i], up[i])); });
}

__device__ __forceinline__ void swiglu_grad(float g, float u, float d, float& dg, float& du) {
  const float s = sigmoidf(g);
  du = d * g * s;
  dg = d * u * s * (1.0f + g * (1.0f - s));
}
// The same on four elements.
__device__ __forceinline__ void swiglu_grad4(float4 g, float4 u, float4 d, float4& dg,
                                             float4& du) {
  swiglu_grad(g.x, u.x, d.x, dg.x, du.x);
  swiglu_grad(g.y, u.y, d.y, dg.y, du.y);
  swiglu_grad(g.z, u.z, d.z, dg.z, du.z);
  swiglu_grad(g.w, u.w, d.w, dg.w, du.w);
}

template <bool CODES>
__global__ void swiglu_bwd_kernel(const float* gate, const float* up, const float* dout,
                                  void* dgate, void* dup, int64_t n, bool vec) {
  flat_loop(
      n, vec,
      [&](int64_t i) {
        float4 dg, du;
        swiglu_grad4(ld4(gate, i), ld4(up, i), ld4(dout, i), dg, du);
        st_out4<CODES>(dgate, i, dg);
        st_out4<CODES>(dup, i, du);
      },
      [&](int64_t i) {
        float dg, du;
        swiglu_grad(gate[i], up[i], dout[i], dg, du);
        st_out1<CODES>(dgate, i, dg);
        st_out1<CODES>(dup, i, du);
      });
}

// Packed rows h (M, 2I) = [gate | up] (one GEMM over stacked gate_proj / up_proj), one row
// per group of 2^lg threads: VEC takes 4 elements at a time (I % 4 == 0 and aligned rows).
// Each element as the flat kernels above compute it. The inputs (h; h and dout) are F32, or
// (BF16IN) BF16 codes, widened exactly (the routed experts' BF16 GEMM outputs).
template <bool CODES, bool VEC, bool BF16IN>
__global__ void swiglu_packed_fwd_kernel(const void* __restrict__ h, void* __restrict__ out,
                                         int64_t M, int64_t I, int lg) {
  auto f = [](float g, float u) { return g * sigmoidf(g) * u; };
  const int64_t cols = VEC ? I / 4 : I;
  DS_ROW_LOOP(M) {
    // row m of h: gate at units [0, cols), up at [cols, 2 cols) (units of 4 elements when VEC)
    const int64_t g0 = m * 2 * cols, u0 = g0 + cols;
    for (int64_t c = lane; c < cols; c += tpr) {
      if constexpr (VEC) {
        const float4 a = load_in4<BF16IN>(h, g0 + c), b = load_in4<BF16IN>(h, u0 + c);
        st_out4<CODES>(out, m * cols + c,
                       make_float4(f(a.x, b.x), f(a.y, b.y), f(a.z, b.z), f(a.w, b.w)));
      } else {
        st_out1<CODES>(out, m * I + c,
                       f(load_in1<BF16IN>(h, g0 + c), load_in1<BF16IN>(h, u0 + c)));
      }
    }
  }
}

template <bool CODES, bool VEC, bool BF16IN>
__global__ void swiglu_packed_bwd_kernel(const void* __restrict__ h,
                                         const void* __restrict__ dout, void* __restrict__ dh,
                                         int64_t M, int64_t I, int lg) {
  const int64_t cols = VEC ? I / 4 : I;   // dh's row m: [dgate | dup], 2 * cols units
  DS_ROW_LOOP(M) {
    const int64_t g0 = m * 2 * cols, u0 = g0 + cols, d0 = m * cols;
    for (int64_t c = lane; c < cols; c += tpr) {
      if constexpr (VEC) {
        float4 dg, du;
        swiglu_grad4(load_in4<BF16IN>(h, g0 + c), load_in4<BF16IN>(h, u0 + c),
                     load_in4<BF16IN>(dout, d0 + c), dg, du);
        st_out4<CODES>(dh, m * 2 * cols + c, dg);
        st_out4<CODES>(dh, m * 2 * cols + cols + c, du);
      } else {
        float dg, du;
        swiglu_grad(load_in1<BF16IN>(h, g0 + c), load_in1<BF16IN>(h, u0 + c),
                    load_in1<BF16IN>(dout, d0 + c), dg, du);
        st_out1<CODES>(dh, m * 2 * I + c, dg);
        st_out1<CODES>(dh, m * 2 * I + I + c, du);
      }
    }
  }
}

// The packed kernels' launch: VEC needs I % 4 == 0, the inputs 16-byte aligned (8 for BF16
// codes) and the outputs F32 rows 16-byte aligned or BF16 codes 8-byte aligned.
inline bool packed_vec(int64_t I, bool bf16_in, std::initializer_list<const void*> in,
                       const void* o, bool codes) {
  bool ok = I % 4 == 0 && out_aligned(o, codes);
  for (const void* p : in) ok = ok && out_aligned(p, bf16_in);
  return ok;
}

}  // namespace
}  // namespace ds::cuda::swiglu
