// PTX wrappers of the sm_80+ tensor-core kernels (flash_attention_tc.cu, gemm_grouped_bf16.cu,
// mla_decode_tc.cu; the cp.async ones also serve sm90_fp8_gemm.cu): cp.async 16-byte copies
// with zero fill, ldmatrix.x4 (.trans), and the BF16 mma.sync m16n8k16 with FP32
// accumulation. Their semantics, as the host emulator tests/kernels/warp_emu.hpp models them
// for the CPU layout tests, follow the PTX ISA sections "cp.async", "ldmatrix" and "Matrix
// Fragments for mma.m16n8k16". CUDA only.
#pragma once
#include <cstdint>

namespace ds::cuda::ptx {

// Shared-state address of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte async copy global -> shared; pred false reads nothing and zero-fills the 16 bytes
// (src-size 0), so src may then be any valid address.
__device__ __forceinline__ void cp16(uint32_t dst, const void* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst),
               "l"(__cvta_generic_to_global(src)), "r"(pred ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are pending.
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Four 8x8 b16 matrices: lanes 8j..8j+7 give the row addresses of matrix j (register j);
// lane l receives row l/4, columns 2(l%4), 2(l%4)+1 of each (of the transpose with .trans).
__device__ __forceinline__ void ldsm4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm4t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// c (16x8) += a (16x16, row) * b (16x8, col); BF16 in, FP32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace ds::cuda::ptx
