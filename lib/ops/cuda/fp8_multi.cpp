// CUDA path of fp8_quantize_transposed and fp8_quantize_blocks_multi (include/ds/ops/fp8.hpp):
// pointers (for the latter a table of weight matrices) for kernels/fp8_quant.cu's quantisers.
// The dispatcher (lib/ops/fp8_grouped.cpp) has checked dtypes and shapes.
#include "kernels/fp8_quant.cuh"
#include "ops_cuda.hpp"

namespace ds::ops::cuda {

void fp8_quantize_transposed(const Context&, const Tensor& x, ScaleFormat fmt, bool act,
                             Tensor& qt, Tensor& st) {
  ds::cuda::fp8_quantize_transposed(x.data<float>(), x.size(0), x.size(1),
                                    fmt == ScaleFormat::ue8m0, act, qt.data<uint8_t>(),
                                    st.data<float>());
}

void fp8_quantize_blocks_multi(const Context&, const std::vector<const Tensor*>& xs,
                               ScaleFormat fmt, const std::vector<Tensor*>& qs,
                               const std::vector<Tensor*>& ss, const std::vector<Tensor*>& qts,
                               const std::vector<Tensor*>& sts) {
  std::vector<ds::cuda::Fp8BlockJob> jobs;
  jobs.reserve(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    ds::cuda::Fp8BlockJob j{};
    j.x = xs[i]->data<float>();
    j.M = xs[i]->size(0);
    j.K = xs[i]->size(1);
    if (!qs.empty()) {
      j.q = qs[i]->data<uint8_t>();
      j.s = ss[i]->data<float>();
    }
    if (!qts.empty()) {
      j.qt = qts[i]->data<uint8_t>();
      j.st = sts[i]->data<float>();
    }
    jobs.push_back(j);
  }
  ds::cuda::fp8_quantize_blocks_multi(jobs.data(), int(jobs.size()), fmt == ScaleFormat::ue8m0);
}

}  // namespace ds::ops::cuda
