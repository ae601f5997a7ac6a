// SwiGLU of the CUDA path (declared in kernels/elementwise.cuh): the launchers of the kernels
// in kernels/swiglu_kernels.cuh.
#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/elementwise_util.cuh"
#include "kernels/swiglu_kernels.cuh"

namespace ds::cuda {
namespace {

using namespace ew;
using namespace swiglu;

template <bool CODES>
void swiglu_forward_launch(const float* gate, const float* up, void* out, int64_t n) {
  if (n <= 0) return;
  const bool vec = aligned16(gate) && aligned16(up) && out_aligned(out, CODES);
  swiglu_fwd_kernel<CODES><<<flat_blocks(vec ? n / 4 + 1 : n), kThreads, 0, stream()>>>(
      gate, up, out, n, vec);
  DS_CUDA_LAUNCHED();
}
template <bool CODES>
void swiglu_backward_launch(const float* gate, const float* up, const float* dout, void* dgate,
                            void* dup, int64_t n) {
  if (n <= 0) return;
  const bool vec = aligned16(gate) && aligned16(up) && aligned16(dout) &&
                   out_aligned(dgate, CODES) && out_aligned(dup, CODES);
  swiglu_bwd_kernel<CODES><<<flat_blocks(vec ? n / 4 + 1 : n), kThreads, 0, stream()>>>(
      gate, up, dout, dgate, dup, n, vec);
  DS_CUDA_LAUNCHED();
}
}  // namespace

void swiglu_forward_f32(const float* gate, const float* up, float* out, int64_t n) {
  swiglu_forward_launch<false>(gate, up, out, n);
}
void swiglu_forward_bf16(const float* gate, const float* up, uint16_t* out, int64_t n) {
  swiglu_forward_launch<true>(gate, up, out, n);
}
void swiglu_backward_f32(const float* gate, const float* up, const float* dout, float* dgate,
                         float* dup, int64_t n) {
  swiglu_backward_launch<false>(gate, up, dout, dgate, dup, n);
}
void swiglu_backward_bf16(const float* gate, const float* up, const float* dout, uint16_t* dgate,
                          uint16_t* dup, int64_t n) {
  swiglu_backward_launch<true>(gate, up, dout, dgate, dup, n);
}

namespace {
// The kernel instances for (CODES, VEC) with BF16IN from a run-time flag.
template <bool C, bool V>
auto fwd_kernel(bool bf16_in) {
  return bf16_in ? swiglu_packed_fwd_kernel<C, V, true> : swiglu_packed_fwd_kernel<C, V, false>;
}
template <bool C, bool V>
auto bwd_kernel(bool bf16_in) {
  return bf16_in ? swiglu_packed_bwd_kernel<C, V, true> : swiglu_packed_bwd_kernel<C, V, false>;
}
}  // namespace

void swiglu_packed_forward(const void* h, bool bf16_in, void* out, bool codes, int64_t M,
                           int64_t I) {
  if (M <= 0 || I <= 0) return;
  const bool vec = packed_vec(I, bf16_in, {h}, out, codes);
  const RowLaunch L = row_launch(M, vec ? I / 4 : I);
  const bool b = bf16_in;
  auto* k = codes ? (vec ? fwd_kernel<true, true>(b) : fwd_kernel<true, false>(b))
                  : (vec ? fwd_kernel<false, true>(b) : fwd_kernel<false, false>(b));
  k<<<L.blocks, kThreads, 0, stream()>>>(h, out, M, I, L.lg);
  DS_CUDA_LAUNCHED();
}

void swiglu_packed_backward(const void* h, const void* dout, bool bf16_in, void* dh, bool codes,
                            int64_t M, int64_t I) {
  if (M <= 0 || I <= 0) return;
  const bool vec = packed_vec(I, bf16_in, {h, dout}, dh, codes);
  const RowLaunch L = row_launch(M, vec ? I / 4 : I);
  const bool b = bf16_in;
  auto* k = codes ? (vec ? bwd_kernel<true, true>(b) : bwd_kernel<true, false>(b))
                  : (vec ? bwd_kernel<false, true>(b) : bwd_kernel<false, false>(b));
  k<<<L.blocks, kThreads, 0, stream()>>>(h, dout, dh, M, I, L.lg);
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
