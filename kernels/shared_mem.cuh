// DS_DYNAMIC_SHARED(name): a kernel's dynamic shared memory as `unsigned char name[]`,
// 16-byte aligned. The host emulator (tests/kernels/cuda_emu.hpp) defines it first, its own
// way, for the plain CUDA C++ kernels it runs (kernels/moe_router.cuh, norm_rope_kernels.cuh).
#pragma once

#ifndef DS_DYNAMIC_SHARED
#define DS_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif
