// The AdamW step's kernels (ops::adamw_step and ops::adamw_step_multi on the GPU): included
// by kernels/adamw.cu, which launches them, and by the host emulation test
// tests/kernels/test_emu_adamw.cpp, which runs this same source on a CPU against the
// reference bit for bit. Plain CUDA C++ without inline PTX, so that the emulator
// (tests/kernels/cuda_emu.hpp) can run it.
//
// The same FP32 operations in the same order as ref::adamw_step (lib/ops/cpu/ref_elementwise.cpp,
// torch.optim.AdamW's single-tensor path), written with _rn intrinsics so that nvcc cannot fuse
// them into FMAs (the reference is compiled with -ffp-contract=off): results are bit-identical
// to the CPU. BF16 moments are widened, updated, used for this step, then stored with
// round-to-nearest-even. Memory-bound: 4 elements per thread with 16-byte (F32) / 8-byte (BF16)
// accesses when aligned.
#pragma once
#include <cstdint>

#include "kernels/bf16_io.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/multi_tensor_index.hpp"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::adamwk {
namespace {

// Whether the 4-wide accesses may be used: param and grad 16-byte aligned, each moment 16
// (F32) or 8 (BF16 codes) bytes, the BF16 weight codes (when written) 8.
inline bool vectorised(const void* param, const void* grad, const void* m, bool m_bf16,
                       const void* v, bool v_bf16, const void* codes) {
  auto aligned = [](const void* p, unsigned a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  return aligned(param, 16) && aligned(grad, 16) && aligned(m, m_bf16 ? 8 : 16) &&
         aligned(v, v_bf16 ? 8 : 16) && aligned(codes, 8);
}

__device__ __forceinline__ void adam_elem(float& p, float graw, float& m, float& v,
                                          const AdamWConsts& c) {
  const float g = __fmul_rn(graw, c.grad_scale);
  const float x = __fmul_rn(p, c.decay);
  m = c.lerp_lo ? __fadd_rn(m, __fmul_rn(c.w1, __fsub_rn(g, m)))
                : __fsub_rn(g, __fmul_rn(__fsub_rn(g, m), __fsub_rn(1.0f, c.w1)));
  v = __fadd_rn(__fmul_rn(v, c.fb2), __fmul_rn(__fmul_rn(c.w2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), c.bc2_sqrt), c.eps);
  p = __fadd_rn(x, __fdiv_rn(__fmul_rn(c.step_size, m), denom));
}

// Moment storage: F32 or BF16 codes; element i, or the 4-group i.
template <bool B16> struct Moment;
template <> struct Moment<false> {
  __device__ static float load(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  __device__ static void store(void* p, int64_t i, float v) { static_cast<float*>(p)[i] = v; }
  __device__ static float4 load4(const void* p, int64_t i) {
    return static_cast<const float4*>(p)[i];
  }
  __device__ static void store4(void* p, int64_t i, float4 v) { static_cast<float4*>(p)[i] = v; }
};
template <> struct Moment<true> {
  __device__ static float load(const void* p, int64_t i) {
    return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  }
  __device__ static void store(void* p, int64_t i, float v) {
    static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
  }
  __device__ static float4 load4(const void* p, int64_t i) {
    const uint2 u = static_cast<const uint2*>(p)[i];   // little-endian: element 4i in u.x low
    return make_float4(bf16_to_f32(uint16_t(u.x & 0xffffu)), bf16_to_f32(uint16_t(u.x >> 16)),
                       bf16_to_f32(uint16_t(u.y & 0xffffu)), bf16_to_f32(uint16_t(u.y >> 16)));
  }
  __device__ static void store4(void* p, int64_t i, float4 v) {
    uint2 u;
    u.x = uint32_t(f32_to_bf16(v.x)) | (uint32_t(f32_to_bf16(v.y)) << 16);
    u.y = uint32_t(f32_to_bf16(v.z)) | (uint32_t(f32_to_bf16(v.w)) << 16);
    static_cast<uint2*>(p)[i] = u;
  }
};

template <bool M16, bool V16>
__global__ void adamw_kernel(float* __restrict__ param, const float* __restrict__ grad,
                             void* __restrict__ mp, void* __restrict__ vp, int64_t n, bool vec,
                             AdamWConsts c) {
  using MM = Moment<M16>;
  using VM = Moment<V16>;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t nv = vec ? n / 4 : 0;
  for (int64_t i = t; i < nv; i += stride) {
    float4 p = reinterpret_cast<const float4*>(param)[i];
    const float4 g = reinterpret_cast<const float4*>(grad)[i];
    float4 m = MM::load4(mp, i), v = VM::load4(vp, i);
    adam_elem(p.x, g.x, m.x, v.x, c);
    adam_elem(p.y, g.y, m.y, v.y, c);
    adam_elem(p.z, g.z, m.z, v.z, c);
    adam_elem(p.w, g.w, m.w, v.w, c);
    reinterpret_cast<float4*>(param)[i] = p;
    MM::store4(mp, i, m);
    VM::store4(vp, i, v);
  }
  for (int64_t i = nv * 4 + t; i < n; i += stride) {
    float p = param[i], m = MM::load(mp, i), v = VM::load(vp, i);
    adam_elem(p, grad[i], m, v, c);
    param[i] = p;
    MM::store(mp, i, m);
    VM::store(vp, i, v);
  }
}

// The many-tensor form: one block per chunk of kMultiChunk elements of one entry.
constexpr int64_t kMultiChunk = 65536;
constexpr int kMultiThreads = 256;
struct MultiEntry {
  AdamWEntry e;
  int64_t first;
  bool vec;
};

template <bool M16, bool V16>
__global__ void adamw_multi_kernel(const MultiEntry* tab, int count) {
  using MM = Moment<M16>;
  using VM = Moment<V16>;
  const int64_t chunk = blockIdx.x;
  const MultiEntry& me = tab[entry_of(tab, count, chunk)];
  const AdamWEntry e = me.e;
  const AdamWConsts c = e.c;
  const ChunkRange r = chunk_range(chunk, me.first, e.n, kMultiChunk);
  const int64_t lo = r.lo, hi = r.lo + r.len;
  int64_t done = lo;
  if (me.vec) {   // lo is a multiple of 4: the float4 / 4-group index lo / 4 + i
    const int64_t n4 = (hi - lo) / 4;
    for (int64_t j = threadIdx.x; j < n4; j += kMultiThreads) {
      const int64_t i = lo / 4 + j;
      float4 p = reinterpret_cast<const float4*>(e.param)[i];
      const float4 g = reinterpret_cast<const float4*>(e.grad)[i];
      float4 m = MM::load4(e.m, i), v = VM::load4(e.v, i);
      adam_elem(p.x, g.x, m.x, v.x, c);
      adam_elem(p.y, g.y, m.y, v.y, c);
      adam_elem(p.z, g.z, m.z, v.z, c);
      adam_elem(p.w, g.w, m.w, v.w, c);
      reinterpret_cast<float4*>(e.param)[i] = p;
      MM::store4(e.m, i, m);
      VM::store4(e.v, i, v);
      if (e.codes) Moment<true>::store4(e.codes, i, p);   // the next step's BF16 operand
    }
    done = lo + n4 * 4;
  }
  for (int64_t i = done + threadIdx.x; i < hi; i += kMultiThreads) {
    float p = e.param[i], m = MM::load(e.m, i), v = VM::load(e.v, i);
    adam_elem(p, e.grad[i], m, v, c);
    e.param[i] = p;
    MM::store(e.m, i, m);
    VM::store(e.v, i, v);
    if (e.codes) e.codes[i] = f32_to_bf16(p);
  }
}

}  // namespace
}  // namespace ds::cuda::adamwk
