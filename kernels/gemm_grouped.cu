// Grouped GEMMs (see gemm_grouped.cuh). BF16 operands with GroupedGemmImpl::kernel go to our
// kernel (gemm_grouped_bf16.cu) when the call fits it. Otherwise cublasGemmGroupedBatchedEx:
// one group per product (group size 1), host arrays for the shapes and scalars, device arrays
// for the operand pointers. Row-major products become column-major ones with the operands
// swapped, as in gemm.cu: c^T (N, M) = op(b)^T op(a)^T.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/gemm.cuh"
#include "kernels/gemm_grouped.cuh"
#include "kernels/gemm_grouped_bf16.cuh"

namespace ds::cuda {

namespace {
// -1 unknown, 0 rejected (per-product fallback), 1 works; per operand dtype.
int g_native[2] = {-1, -1};
bool g_used_native = false;
int64_t g_kernel_launches = 0;
// -1: not read from DS_GROUPED_GEMM yet, else int(GroupedGemmImpl).
int g_impl = -1;

GroupedGemmImpl impl_from_env() {
  const char* v = std::getenv("DS_GROUPED_GEMM");
  if (!v || !*v || std::strcmp(v, "cublas") == 0) return GroupedGemmImpl::cublas;
  if (std::strcmp(v, "kernel") == 0) return GroupedGemmImpl::kernel;
  throw_cuda_error(std::string("DS_GROUPED_GEMM=") + v + ": expected cublas or kernel",
                   __FILE__, __LINE__);
}

void per_product(const GemmDesc* d, int count, bool ta, bool tb, bool bf16, float alpha,
                 float beta) {
  for (int i = 0; i < count; ++i) {
    if (d[i].M == 0 || d[i].N == 0) continue;
    if (bf16)
      bf16_gemm_rm(static_cast<const uint16_t*>(d[i].a), static_cast<const uint16_t*>(d[i].b),
                   d[i].c, d[i].M, d[i].N, d[i].K, ta, tb, alpha, beta);
    else
      sgemm_rm(static_cast<const float*>(d[i].a), static_cast<const float*>(d[i].b), d[i].c,
               d[i].M, d[i].N, d[i].K, ta, tb, alpha, beta);
  }
}
}  // namespace

bool grouped_gemm_native() { return g_used_native; }
int64_t grouped_gemm_kernel_launches() { return g_kernel_launches; }

GroupedGemmImpl grouped_gemm_impl() {
  if (g_impl < 0) g_impl = int(impl_from_env());
  return GroupedGemmImpl(g_impl);
}
void set_grouped_gemm_impl(GroupedGemmImpl impl) { g_impl = int(impl); }

void grouped_gemm_rm(const GemmDesc* d, int count, bool ta, bool tb, bool bf16, float alpha,
                     float beta) {
  int& native = g_native[bf16 ? 1 : 0];
  std::vector<int> keep;
  for (int i = 0; i < count; ++i)
    if (d[i].M > 0 && d[i].N > 0 && d[i].K > 0) keep.push_back(i);
    else if (d[i].M > 0 && d[i].N > 0) per_product(d + i, 1, ta, tb, bf16, alpha, beta);  // K 0
  if (keep.empty()) return;
  if (bf16 && grouped_gemm_impl() == GroupedGemmImpl::kernel) {
    std::vector<GemmDesc> kd;
    kd.reserve(keep.size());
    for (int i : keep) kd.push_back(d[i]);
    if (grouped_bf16_kernel_fits(kd.data(), int(kd.size()), ta, tb)) {
      grouped_bf16_kernel(kd.data(), int(kd.size()), ta, tb, alpha, beta);
      ++g_kernel_launches;
      return;
    }
    // Shapes or alignment the kernel does not take: the cuBLAS path below for this call.
  }
  if (native == 0 || keep.size() == 1) {
    for (int i : keep) per_product(d + i, 1, ta, tb, bf16, alpha, beta);
    return;
  }
  const int G = int(keep.size());
  const size_t ng = keep.size();
  std::vector<cublasOperation_t> op_b(ng, tb ? CUBLAS_OP_T : CUBLAS_OP_N);
  std::vector<cublasOperation_t> op_a(ng, ta ? CUBLAS_OP_T : CUBLAS_OP_N);
  std::vector<int> m(ng), n(ng), k(ng), ldb(ng), lda(ng), ldc(ng), size(ng, 1);
  std::vector<float> alphas(ng, alpha), betas(ng, beta);
  std::vector<const void*> ptrs(3 * ng);   // b pointers, a pointers, c pointers
  for (int g = 0; g < G; ++g) {
    const GemmDesc& x = d[keep[size_t(g)]];
    m[size_t(g)] = int(x.N);
    n[size_t(g)] = int(x.M);
    k[size_t(g)] = int(x.K);
    ldb[size_t(g)] = int(tb ? x.K : x.N);   // row length of b
    lda[size_t(g)] = int(ta ? x.M : x.K);   // row length of a
    ldc[size_t(g)] = int(x.N);
    ptrs[size_t(g)] = x.b;
    ptrs[size_t(G + g)] = x.a;
    ptrs[size_t(2 * G + g)] = x.c;
  }
  // The pointer arrays live on the device (copied through pinned staging, no wait for the
  // stream); the stream-ordered free runs after the GEMM.
  void* dptr = pool_alloc(ptrs.size() * sizeof(void*));
  copy_to_device_async(dptr, ptrs.data(), ptrs.size() * sizeof(void*));
  auto** dp = static_cast<const void**>(dptr);
  cublasHandle_t h = cublas();
  DS_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  DS_CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
  const cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasStatus_t s = cublasGemmGroupedBatchedEx(
      h, op_b.data(), op_a.data(), m.data(), n.data(), k.data(), alphas.data(), dp, t,
      ldb.data(), dp + G, t, lda.data(), betas.data(), const_cast<void* const*>(dp + 2 * G),
      CUDA_R_32F, ldc.data(), G, size.data(), CUBLAS_COMPUTE_32F);
  pool_free(dptr);
  if (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_INVALID_VALUE) {
    native = 0;   // this type combination is not offered: one call per product from now on
    for (int i : keep) per_product(d + i, 1, ta, tb, bf16, alpha, beta);
    return;
  }
  DS_CUBLAS_CHECK(s);
  native = 1;
  g_used_native = true;
}

}  // namespace ds::cuda
