// Grouped GEMMs on the GPU (cuBLAS grouped batched GEMM) against the CPU loop of matmuls:
// forward (trans_w) and input-gradient layouts, beta accumulation, weight gradients, F32
// exact and BF16 operands, with empty groups and odd sizes. Guard bytes checked.
#include <vector>

#include "gpu_harness.hpp"
#include "kernels/gemm_grouped.cuh"

namespace {

using namespace ds;
using namespace ds::gpu_test;

// Rows per group, some empty.
std::vector<int64_t> offsets_of(const std::vector<int64_t>& rows) {
  std::vector<int64_t> o{0};
  for (int64_t r : rows) o.push_back(o.back() + r);
  return o;
}

Tensor rounded(const Tensor& x) {   // BF16 values of a CPU F32 tensor
  Tensor r = Tensor::empty(x.shape());
  ops::bf16_round(cpu_ref(), x, r);
  return r;
}

void run_case(const std::vector<int64_t>& rows, int64_t K, int64_t N, bool trans_w, bool bf16,
              float beta) {
  CAPTURE(K);
  CAPTURE(N);
  CAPTURE(trans_w);
  CAPTURE(bf16);
  const std::vector<int64_t> off = offsets_of(rows);
  const int64_t M = off.back();
  Arena ar;
  Tensor x = rand_f32({M, K});
  if (bf16) x = rounded(x);
  std::vector<Tensor> w_cpu, w_gpu;
  for (size_t g = 0; g < rows.size(); ++g) {
    Tensor w = rand_f32(trans_w ? Shape{N, K} : Shape{K, N});
    if (bf16) w = rounded(w);
    w_cpu.push_back(w);
    if (bf16) {
      Tensor wb = ar.empty(w.shape(), DType::bf16);
      ops::bf16_round(gpu(), ar.upload(w), wb);
      w_gpu.push_back(wb);
    } else {
      w_gpu.push_back(ar.upload(w));
    }
  }
  Tensor xg = ar.upload(x);
  if (bf16) {
    Tensor xb = ar.empty(x.shape(), DType::bf16);
    ops::bf16_round(gpu(), xg, xb);
    xg = xb;
  }
  Tensor y0 = rand_f32({M, N});
  Tensor y_cpu = y0.clone(), y_gpu = beta != 0 ? ar.upload(y0) : ar.empty({M, N});
  ops::grouped_matmul(cpu_ref(), x, w_cpu, trans_w, off, y_cpu, beta);
  ops::grouped_matmul(gpu(), xg, w_gpu, trans_w, off, y_gpu, beta);
  expect_close(y_gpu, y_cpu, bf16 ? 1e-9 : 1e-10, "grouped_matmul y");
  // weight gradients: dw[g] += dy[rows_g]^T x[rows_g], dw (N, K) from nonzero values
  Tensor dy = rand_f32({M, N});
  if (bf16) dy = rounded(dy);
  std::vector<Tensor> dw_cpu, dw_gpu;
  for (size_t g = 0; g < rows.size(); ++g) {
    Tensor d0 = rand_f32({N, K});
    dw_cpu.push_back(d0.clone());
    dw_gpu.push_back(ar.upload(d0));
  }
  Tensor dyg = ar.upload(dy);
  if (bf16) {
    Tensor db = ar.empty(dy.shape(), DType::bf16);
    ops::bf16_round(gpu(), dyg, db);
    dyg = db;
  }
  ops::grouped_matmul_wgrad(cpu_ref(), dy, x, off, dw_cpu);
  ops::grouped_matmul_wgrad(gpu(), dyg, xg, off, dw_gpu);
  for (size_t g = 0; g < rows.size(); ++g) expect_close(dw_gpu[g], dw_cpu[g], 1e-9, "grouped dw");
  CHECK(ar.check());
}

}  // namespace

TEST_CASE("gpu grouped_matmul / grouped_matmul_wgrad against the CPU loop") {
  const std::vector<int64_t> rows = {5, 0, 130, 1, 0, 64, 33};
  for (bool bf16 : {false, true})
    for (bool trans_w : {true, false}) {
      run_case(rows, 48, 40, trans_w, bf16, 0.0f);
      run_case(rows, 17, 9, trans_w, bf16, 1.0f);
    }
  run_case({300, 257, 0, 128}, 256, 384, true, true, 0.0f);   // MoE-like sizes
  run_case({0, 0, 0}, 8, 8, true, false, 0.0f);               // no rows at all
  std::printf("grouped GEMM: cuBLAS grouped entry point %s\n",
              ds::cuda::grouped_gemm_native() ? "used" : "rejected (per-product fallback)");
}
