// CUDA path of the grouped GEMMs (ops::grouped_matmul, grouped_matmul_wgrad): the row blocks
// and per-group weights become GemmDesc entries of one cuBLAS grouped call
// (kernels/gemm_grouped.cu). Shapes and devices were checked by the dispatchers in ops.cpp.
#include <vector>

#include "ds/core/error.hpp"
#include "kernels/gemm_grouped.cuh"
#include "ops_cuda.hpp"

namespace ds::ops::cuda {

namespace {
bool bf16_operands(DType a, DType b, const char* op) {
  DS_CHECK((a == DType::f32 || a == DType::bf16) && a == b,
           "{} (cuda): operands must both be F32 or both BF16, got {} and {}", op, dtype_name(a),
           dtype_name(b));
  return a == DType::bf16;
}
size_t row_bytes(const Tensor& t) { return size_t(t.size(1)) * dtype_size(t.dtype()); }
}  // namespace

void grouped_matmul(const Context&, const Tensor& x, const std::vector<Tensor>& w, bool trans_w,
                    const std::vector<int64_t>& offsets, Tensor& y, float beta) {
  const bool bf16 =
      bf16_operands(x.dtype(), w.empty() ? x.dtype() : w[0].dtype(), "grouped_matmul");
  const bool c_bf16 = y.dtype() == DType::bf16;   // (beta 0, checked in ops.cpp)
  DS_CHECK(!c_bf16 || bf16, "grouped_matmul (cuda): a BF16 y needs BF16 operands");
  const auto* xb = static_cast<const uint8_t*>(x.raw());
  std::vector<ds::cuda::GemmDesc> d;
  d.reserve(w.size());
  for (size_t g = 0; g < w.size(); ++g) {
    const int64_t r0 = offsets[g], M = offsets[g + 1] - r0;
    if (M == 0) continue;
    ds::cuda::GemmDesc e;
    e.a = xb + size_t(r0) * row_bytes(x);
    e.b = w[g].raw();
    e.c = static_cast<uint8_t*>(y.raw()) + size_t(r0) * row_bytes(y);
    e.M = M;
    e.N = y.size(1);
    e.K = x.size(1);
    d.push_back(e);
  }
  ds::cuda::grouped_gemm_rm(d.data(), int(d.size()), false, trans_w, bf16, 1.0f, beta, c_bf16);
}

void grouped_matmul_wgrad(const Context&, const Tensor& dy, const Tensor& x,
                          const std::vector<int64_t>& offsets, std::vector<Tensor>& dw) {
  const bool bf16 = bf16_operands(dy.dtype(), x.dtype(), "grouped_matmul_wgrad");
  const auto* dyb = static_cast<const uint8_t*>(dy.raw());
  const auto* xb = static_cast<const uint8_t*>(x.raw());
  std::vector<ds::cuda::GemmDesc> d;
  d.reserve(dw.size());
  for (size_t g = 0; g < dw.size(); ++g) {
    const int64_t r0 = offsets[g], M = offsets[g + 1] - r0;
    if (M == 0) continue;
    DS_CHECK(dw[g].dtype() == DType::f32, "grouped_matmul_wgrad (cuda): dw must be F32");
    ds::cuda::GemmDesc e;
    e.a = dyb + size_t(r0) * row_bytes(dy);   // (M, O) read transposed
    e.b = xb + size_t(r0) * row_bytes(x);     // (M, I)
    e.c = dw[g].data<float>();
    e.M = dy.size(1);
    e.N = x.size(1);
    e.K = M;
    d.push_back(e);
  }
  ds::cuda::grouped_gemm_rm(d.data(), int(d.size()), true, false, bf16, 1.0f, 1.0f);
}

}  // namespace ds::ops::cuda
