// Optimised MoE routing: tokens in parallel, each routed by the reference per-token kernel
// (ref::moe_route_token), so selection is bitwise identical to the reference.
#include "opt.hpp"

namespace ds::ops::opt {

void moe_route(const float* logits, const float* bias, const RouteParams& p, int64_t N, int64_t E,
               float* scores, int32_t* idx, float* weights, int nt) {
#pragma omp parallel for num_threads(par_threads(N * E * 8, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    ref::moe_route_token(logits + n * E, bias, p, E, scores + n * E, idx + n * p.topk,
                         weights + n * p.topk);
}

void moe_route_backward(const float* scores, const int32_t* idx, const float* dweights,
                        const float* dscores_extra, const RouteParams& p, int64_t N, int64_t E,
                        float* dlogits, int nt) {
#pragma omp parallel for num_threads(par_threads(N * E * 8, nt)) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    ref::moe_route_backward_token(scores + n * E, idx + n * p.topk, dweights + n * p.topk,
                                  dscores_extra ? dscores_extra + n * E : nullptr, p, E,
                                  dlogits + n * E);
}

}  // namespace ds::ops::opt
