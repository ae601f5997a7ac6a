// Row-softmax losses on the GPU (declared in cross_entropy.cuh): the launchers of the
// kernels in kernels/row_softmax.cuh (cross-entropy forward / backward / fused, and the
// per-token log-probabilities with entropy and their backward; one block per row, an online
// softmax pass and a gradient pass).
#include "kernels/common.cuh"
#include "kernels/cross_entropy.cuh"
#include "kernels/row_softmax.cuh"

namespace ds::cuda {

namespace {

using namespace rowsoftmax;

template <bool ENT, bool GRAD, bool CODES = false>
void launch_rows(const RowArgs& a) {
  if (a.N <= 0) return;
  const bool codes8 = (reinterpret_cast<uintptr_t>(a.dxc) & 7u) == 0;   // null: true
  if (use_vec4(a.V, a.x, a.dx) && codes8) {
    row_softmax_kernel<4, ENT, GRAD, CODES>
        <<<row_grid(a.N), row_threads(a.V / 4), 0, stream()>>>(a);
  } else {
    row_softmax_kernel<1, ENT, GRAD, CODES><<<row_grid(a.N), row_threads(a.V), 0, stream()>>>(a);
  }
  DS_CUDA_LAUNCHED();
}

}  // namespace

void cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, float scale,
                   float* losses, float* dlogits) {
  RowArgs a{logits, targets, N, int(V), scale, losses, nullptr, nullptr, nullptr, dlogits,
            nullptr};
  if (dlogits) launch_rows<false, true>(a);
  else if (losses) launch_rows<false, false>(a);
}

void cross_entropy_codes(const float* logits, const int32_t* targets, int64_t N, int64_t V,
                         float scale, float* losses, uint16_t* dlogits) {
  RowArgs a{logits, targets, N, int(V), scale, losses, nullptr, nullptr, nullptr, nullptr,
            dlogits};
  launch_rows<false, true, true>(a);
}

void token_logprob_forward(const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           float* logp, float* lse, float* entropy) {
  RowArgs a{logits, targets, N, int(V), 1.f, nullptr, logp, lse, entropy, nullptr, nullptr};
  if (entropy) launch_rows<true, false>(a);
  else launch_rows<false, false>(a);
}

namespace {
template <bool CODES>
void logprob_backward(const float* logits, const int32_t* targets, const float* lse,
                      const float* dlogp, int64_t N, int64_t V, float* dx, uint16_t* dxc) {
  if (N <= 0) return;
  if (use_vec4(V, logits, dx) && (reinterpret_cast<uintptr_t>(dxc) & 7u) == 0) {
    logprob_backward_kernel<4, CODES><<<row_grid(N), row_threads(V / 4), 0, stream()>>>(
        logits, targets, lse, dlogp, N, int(V), dx, dxc);
  } else {
    logprob_backward_kernel<1, CODES><<<row_grid(N), row_threads(V), 0, stream()>>>(
        logits, targets, lse, dlogp, N, int(V), dx, dxc);
  }
  DS_CUDA_LAUNCHED();
}
}  // namespace

void token_logprob_backward(const float* logits, const int32_t* targets, const float* lse,
                            const float* dlogp, int64_t N, int64_t V, float* dlogits) {
  logprob_backward<false>(logits, targets, lse, dlogp, N, V, dlogits, nullptr);
}

void token_logprob_backward_codes(const float* logits, const int32_t* targets, const float* lse,
                                  const float* dlogp, int64_t N, int64_t V, uint16_t* dlogits) {
  logprob_backward<true>(logits, targets, lse, dlogp, N, V, nullptr, dlogits);
}

}  // namespace ds::cuda
