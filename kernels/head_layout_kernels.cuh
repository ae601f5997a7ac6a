// The head-layout kernels of the CUDA path: split and concat along the last dim, one head
// broadcast to all and the heads summed (its backward), MLA's key/value split from kv_b_proj's
// output and its backward; semantics follow lib/ops/cpu/ref_*.cpp. Included by
// kernels/elementwise.cu, which launches them, and by the host emulation test
// tests/kernels/test_emu_head_layout.cpp, which runs this same source on a CPU against the
// reference. Plain CUDA C++ without inline PTX, so that the emulator (tests/kernels/
// cuda_emu.hpp) can run it.
#pragma once
#include <cstdint>

#include "kernels/bf16_io.cuh"
#include "kernels/flat_loops.cuh"

// Internal linkage: each including translation unit has its own copy.
namespace ds::cuda::elem {
namespace {

using namespace ew;

// I: uint32_t when every index fits in 31 bits (fast division), else int64_t.
template <class VT, class I, bool SPLIT>
__global__ void split_concat_kernel(VT* x, VT* a, VT* b, I R, I Av, I Bv) {
  const I W = Av + Bv, total = R * W;
  const I stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const I r = i / W, c = i - r * W;
    VT* y = c < Av ? a + (r * Av + c) : b + (r * Bv + (c - Av));
    if constexpr (SPLIT) *y = x[i];
    else x[i] = *y;
  }
}

template <class VT, class I>
__global__ void broadcast_heads_kernel(const VT* __restrict__ x, VT* __restrict__ out, I N, I H,
                                       I Dv) {
  const I total = N * H * Dv, stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const I nh = i / Dv, d = i - nh * Dv;
    out[i] = x[(nh / H) * Dv + d];
  }
}


// dx[n, d] = sum over heads in order (FP32, the reference's order: bit-identical).
template <class VT, class I>
__global__ void sum_heads_kernel(const VT* __restrict__ dout, VT* __restrict__ dx, I N, I H,
                                 I Dv) {
  const I total = N * Dv, stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const I n = i / Dv, d = i - n * Dv;
    const VT* p = dout + n * H * Dv + d;
    VT acc = vzero<VT>();
    for (I h = 0; h < H; ++h) acc = vadd(acc, p[h * Dv]);
    dx[i] = acc;
  }
}

// One element (or 4) of an output held as F32 or, when CODES, as BF16 codes (RNE).
template <bool CODES, class VT, class I>
__device__ __forceinline__ void put_value(void* out, I i, VT x) {
  if constexpr (!CODES) static_cast<VT*>(out)[i] = x;
  else if constexpr (sizeof(VT) == 16) store_bf16x4<true>(out, i, x);
  else static_cast<uint16_t*>(out)[i] = f32_to_bf16(x);
}

// MLA's keys and values in one pass: per (token, head) row, k = [kv[:Dn] | k_rot[token]],
// v = kv[Dn:] (widths in VT units). Thread i covers element c of row r of the (Dn+Dr+Dv)-wide
// concatenation of k's and v's rows.
template <class VT, class I, bool CODES>
__global__ void mla_kv_split_kernel(const VT* __restrict__ kv, const VT* __restrict__ krot,
                                    void* __restrict__ k, void* __restrict__ v, I N, I H, I Dn,
                                    I Dr, I Dv) {
  const I W = Dn + Dr + Dv, total = N * H * W, stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const I r = i / W, c = i - r * W;
    if (c < Dn) put_value<CODES>(k, r * (Dn + Dr) + c, kv[r * (Dn + Dv) + c]);
    else if (c < Dn + Dr) put_value<CODES>(k, r * (Dn + Dr) + c, krot[(r / H) * Dr + (c - Dn)]);
    else put_value<CODES>(v, r * Dv + (c - Dn - Dr), kv[r * (Dn + Dv) + (c - Dr)]);
  }
}

// Its backward: dkv rows = [dk[:Dn] | dv] (F32, or BF16 codes when CODES), then dk_rot (N, Dr) =
// the heads' dk[Dn:] summed in head order from zero (sum_heads' order: bit-identical).
template <class VT, class I, bool CODES>
__global__ void mla_kv_split_bwd_kernel(const VT* __restrict__ dk, const VT* __restrict__ dv,
                                        void* __restrict__ dkv, VT* __restrict__ dkrot, I N, I H,
                                        I Dn, I Dr, I Dv) {
  const I W = Dn + Dv, rows = N * H * W, total = rows + N * Dr;
  const I stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    if (i < rows) {
      const I r = i / W, c = i - r * W;
      put_value<CODES>(dkv, i, c < Dn ? dk[r * (Dn + Dr) + c] : dv[r * Dv + (c - Dn)]);
    } else {
      const I j = i - rows, n = j / Dr, d = j - n * Dr;
      const VT* p = dk + n * H * (Dn + Dr) + Dn + d;
      VT acc = vzero<VT>();
      for (I h = 0; h < H; ++h) acc = vadd(acc, p[h * (Dn + Dr)]);
      dkrot[j] = acc;
    }
  }
}

}  // namespace
}  // namespace ds::cuda::elem
