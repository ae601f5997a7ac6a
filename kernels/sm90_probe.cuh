// Probes of Hopper features the kernels do not use yet, for the GPU tests
// (tests/kernels/test_ops_sm90_probe.cpp) to settle on the card what the PTX ISA leaves to
// reading: how a TMA box lands in shared memory, and how wgmma reads operands stored MN-major
// (the transposed layouts a grouped GEMM's input and weight gradients, the attention's
// dS^T Q and P^T dO, and MLA decode's P V would read without transposed copies). Plain C++
// header; pointers are device pointers; each needs its *_supported() (else a CudaError).
#pragma once
#include <cstdint>

namespace ds::cuda {

// Whether the probes can run: an sm_90 device running the sm_90a build; for the TMA probe
// also the driver's tensor-map encoder.
bool sm90_probes_supported();
bool tma_probe_supported();

// out (64 x 64 codes) = the raw shared-memory image, element by element, of the 64 x 64 box at
// (row r0, column c0) of x (rows x cols BF16 codes, row-major, cols a multiple of 8), copied
// by one TMA load with the 128-byte swizzle. Waits for the GPU; a ds::CudaError when the
// load never completes on its mbarrier (the kernel gives up instead of hanging).
void tma_probe_box(const uint16_t* x, int rows, int cols, int r0, int c0, uint16_t* out);

// One operand's shared-memory image for wgmma_probe: `bytes` bytes copied to a 1024-aligned
// address, read through a descriptor with the 128-byte swizzle and the given leading and
// stride byte offsets (multiples of 16); mn_major: the instruction's transpose flag.
struct WgmmaProbeOperand {
  const uint8_t* image;
  int bytes;
  uint32_t lbo, sbo;
  bool mn_major;
};
// d (64 x 128, F32, row-major) = A (64 x 16) B (16 x 128) by one wgmma.m64n128k16 (BF16,
// FP32 accumulation) on the two images.
void wgmma_probe(const WgmmaProbeOperand& a, const WgmmaProbeOperand& b, float* d);

}  // namespace ds::cuda
