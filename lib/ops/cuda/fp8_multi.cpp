// CUDA path of fp8_quantize_transposed, the Linears' backward quantisations (fp8_quantize_dual,
// fp8_requantize_transposed) and fp8_quantize_blocks_multi (include/ds/ops/fp8.hpp):
// pointers (for the latter a table of weight matrices) for kernels/fp8_quant.cu's quantisers.
// The dispatcher (lib/ops/fp8_grouped.cpp) has checked dtypes and shapes.
#include "kernels/fp8_quant.cuh"
#include "ops_cuda.hpp"

namespace ds::ops::cuda {

namespace {

// x (M, K) F32 and the outputs of a quantisation of it; try_tiles runs the tile kernel
// (DS_FP8_QUANT=tiles) where the shapes allow it: false when it did not run.
struct Quant {
  const float* x;
  int64_t M, K;
  bool ue8m0, act;
  uint8_t *q = nullptr, *qt = nullptr;
  float *s = nullptr, *st = nullptr;
  Quant(const Tensor& xt, ScaleFormat fmt, bool act_)
      : x(xt.data<float>()), M(xt.size(0)), K(xt.size(1)), ue8m0(fmt == ScaleFormat::ue8m0),
        act(act_) {}
  bool try_tiles(bool fake) const {
    return fp8_tiles_on() && ds::cuda::fp8_quantize_tiles(x, M, K, ue8m0, act, fake, q, s, qt, st);
  }
};

}  // namespace

void fp8_quantize_transposed(const Context&, const Tensor& x, ScaleFormat fmt, bool act,
                             Tensor& qt, Tensor& st) {
  Quant p(x, fmt, act);
  p.qt = qt.data<uint8_t>();
  p.st = st.data<float>();
  if (p.try_tiles(false)) return;
  ds::cuda::fp8_quantize_transposed(p.x, p.M, p.K, p.ue8m0, act, p.qt, p.st);
}

// One tile kernel when DS_FP8_QUANT=tiles and the shapes allow it, else the two quantisers.
void fp8_quantize_dual(const Context&, const Tensor& x, ScaleFormat fmt, bool act, Tensor& q,
                       Tensor& s, Tensor& qt, Tensor& st) {
  Quant p(x, fmt, act);
  p.q = q.data<uint8_t>();
  p.s = s.data<float>();
  p.qt = qt.data<uint8_t>();
  p.st = st.data<float>();
  if (p.try_tiles(false)) return;
  ds::cuda::fp8_quantize(p.x, p.M, p.K, ds::cuda::Fp8Grouping::row_1x128, p.ue8m0, act, p.q, p.s,
                         nullptr);
  ds::cuda::fp8_quantize_transposed(p.x, p.M, p.K, p.ue8m0, act, p.qt, p.st);
}

// One tile kernel (the round trip in registers) when DS_FP8_QUANT=tiles and the shapes allow
// it, else the round trip into a temporary and the transposed quantiser.
void fp8_requantize_transposed(const Context&, const Tensor& x, ScaleFormat fmt, bool act,
                               Tensor& qt, Tensor& st) {
  Quant p(x, fmt, act);
  p.qt = qt.data<uint8_t>();
  p.st = st.data<float>();
  if (p.try_tiles(true)) return;
  Tensor xc = Tensor::empty(x.shape(), DType::f32, x.device());
  ds::cuda::fp8_quantize(p.x, p.M, p.K, ds::cuda::Fp8Grouping::row_1x128, p.ue8m0, act, nullptr,
                         nullptr, xc.data<float>());
  ds::cuda::fp8_quantize_transposed(xc.data<float>(), p.M, p.K, p.ue8m0, act, p.qt, p.st);
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
  ds::cuda::fp8_quantize_blocks_multi(jobs.data(), int(jobs.size()), fmt == ScaleFormat::ue8m0,
                                      fp8_tiles_on());
}

}  // namespace ds::ops::cuda
