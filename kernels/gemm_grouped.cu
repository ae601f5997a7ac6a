// Grouped GEMMs (see gemm_grouped.cuh). BF16 operands with GroupedGemmImpl::kernel go to our
// kernel (gemm_grouped_bf16.cu) when the call fits it. Otherwise cublasGemmGroupedBatchedEx:
// one group per product (group size 1), host arrays for the shapes and scalars, device arrays
// for the operand pointers; where it rejects the types (BF16 in, F32 out, on CUDA 13; BF16 in
// and out is in its documented set), one cuBLAS call per product spread over side streams.
// Row-major products become column-major ones with the operands swapped, as in gemm.cu:
// c^T (N, M) = op(b)^T op(a)^T.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <cstdint>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/gemm.cuh"
#include "kernels/gemm_grouped.cuh"
#include "kernels/gemm_grouped_bf16.cuh"
#include "kernels/sm90_wgmma.cuh"   // sm90a_loaded

namespace ds::cuda {

namespace {
// -1 unknown, 0 rejected (per-product fallback), 1 works; per type combination (F32, BF16 in
// with F32 out, BF16 in and out).
int g_native[3] = {-1, -1, -1};
int combo(bool bf16, bool c_bf16) { return c_bf16 ? 2 : bf16 ? 1 : 0; }
bool g_used_native = false;
int64_t g_kernel_launches = 0;
int64_t g_wgmma_launches = 0;
int64_t g_side_products = 0;
// -1: not read from DS_GROUPED_GEMM yet, else int(GroupedGemmImpl).
int g_impl = -1;

GroupedGemmImpl impl_from_env() {
  const char* v = std::getenv("DS_GROUPED_GEMM");
  // kernel by default: on the H200 (commit c135dd4) it passed its tests and took the 1b bf16
  // step from 318 to 193 ms against the per-expert cuBLAS calls (docs/benchmarks.md)
  if (!v || !*v || std::strcmp(v, "kernel") == 0) return GroupedGemmImpl::kernel;
  if (std::strcmp(v, "cublas") == 0) return GroupedGemmImpl::cublas;
  if (std::strcmp(v, "wgmma") == 0) return GroupedGemmImpl::wgmma;
  throw_cuda_error(std::string("DS_GROUPED_GEMM=") + v + ": expected cublas, kernel or wgmma",
                   __FILE__, __LINE__);
}

// -1: not read from DS_GROUPED_GEMM_STREAMS yet, else the stream count.
int g_streams = -1;
constexpr int kMaxStreams = 16;

int streams_from_env() {
  const char* v = std::getenv("DS_GROUPED_GEMM_STREAMS");
  // 1 by default: on the H200 (commit 029fe18) the 1b bf16 step through the cuBLAS path took
  // 349 ms with 4 side streams, 325 ms with none
  if (!v || !*v) return 1;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 1 || n > kMaxStreams)
    throw_cuda_error(std::string("DS_GROUPED_GEMM_STREAMS=") + v + ": expected 1 to " +
                         std::to_string(kMaxStreams), __FILE__, __LINE__);
  return int(n);
}

// A side stream with its own cuBLAS handle (and so its own workspace: handles must not be
// shared by concurrent streams) and the event that ends its share of a call. Created on
// first use, kept for the process (as the main handle is).
struct Side {
  cudaStream_t s = nullptr;
  cublasHandle_t h = nullptr;
  cudaEvent_t done = nullptr;
};
Side g_side[kMaxStreams];
cudaEvent_t g_fork = nullptr;

Side& side(int i) {
  Side& x = g_side[i];
  if (!x.s) {
    DS_CUDA_CHECK(cudaStreamCreateWithFlags(&x.s, cudaStreamNonBlocking));
    DS_CUBLAS_CHECK(cublasCreate(&x.h));
    DS_CUBLAS_CHECK(cublasSetStream(x.h, x.s));
    DS_CUDA_CHECK(cudaEventCreateWithFlags(&x.done, cudaEventDisableTiming));
  }
  return x;
}

void product_on(cublasHandle_t h, const GemmDesc& x, bool ta, bool tb, bool bf16, float alpha,
                float beta, bool c_bf16) {
  if (c_bf16)   // (beta 0, checked by grouped_gemm_rm)
    bf16_gemm_rm_bf16out_on(h, static_cast<const uint16_t*>(x.a),
                            static_cast<const uint16_t*>(x.b), static_cast<uint16_t*>(x.c), x.M,
                            x.N, x.K, ta, tb, alpha);
  else if (bf16)
    bf16_gemm_rm_on(h, static_cast<const uint16_t*>(x.a), static_cast<const uint16_t*>(x.b),
                    static_cast<float*>(x.c), x.M, x.N, x.K, ta, tb, alpha, beta);
  else
    sgemm_rm_on(h, static_cast<const float*>(x.a), static_cast<const float*>(x.b),
                static_cast<float*>(x.c), x.M, x.N, x.K, ta, tb, alpha, beta);
}

// One cuBLAS call per product. A MoE layer's products are small (one expert's rows: a few
// dozen 128x128 tiles for 132 SMs), so with several products they are spread round-robin over
// side streams forked from stream() and joined back into it: up to grouped_gemm_streams() of
// them run at once. Each product is the same cuBLAS call on an identically configured handle
// as on the main one, and writes its own c: the results do not depend on the stream count.
void per_product(const GemmDesc* d, int count, bool ta, bool tb, bool bf16, float alpha,
                 float beta, bool c_bf16) {
  std::vector<int> live;
  for (int i = 0; i < count; ++i)
    if (d[i].M != 0 && d[i].N != 0) live.push_back(i);
  const int k = int(std::min<size_t>(size_t(grouped_gemm_streams()), live.size()));
  if (k <= 1) {
    for (int i : live) product_on(cublas(), d[i], ta, tb, bf16, alpha, beta, c_bf16);
    return;
  }
  if (!g_fork) DS_CUDA_CHECK(cudaEventCreateWithFlags(&g_fork, cudaEventDisableTiming));
  DS_CUDA_CHECK(cudaEventRecord(g_fork, stream()));
  for (int j = 0; j < k; ++j) DS_CUDA_CHECK(cudaStreamWaitEvent(side(j).s, g_fork, 0));
  // The join runs even when a call throws, so that stream() never runs ahead of (or frees
  // memory under) work still queued on a side stream; should the join itself fail, the host
  // waits for that side stream instead (and the error is raised when no exception is already
  // on its way).
  struct Join {
    int k;
    cudaError_t err = cudaSuccess;
    void run() noexcept {
      for (int j = 0; j < k; ++j) {
        cudaError_t e = cudaEventRecord(g_side[j].done, g_side[j].s);
        if (e == cudaSuccess) e = cudaStreamWaitEvent(stream(), g_side[j].done, 0);
        if (e != cudaSuccess) {
          if (err == cudaSuccess) err = e;
          cudaStreamSynchronize(g_side[j].s);
        }
      }
      k = 0;
    }
    ~Join() { run(); }
  } join{k};
  for (size_t i = 0; i < live.size(); ++i) {
    product_on(g_side[i % size_t(k)].h, d[live[i]], ta, tb, bf16, alpha, beta, c_bf16);
    ++g_side_products;
  }
  join.run();
  if (join.err != cudaSuccess) raise_cuda("grouped GEMM: joining the side streams", join.err,
                                          __FILE__, __LINE__);
}
}  // namespace

bool grouped_gemm_native() { return g_used_native; }
bool grouped_gemm_native(bool bf16, bool c_bf16) { return g_native[combo(bf16, c_bf16)] == 1; }
int64_t grouped_gemm_kernel_launches() { return g_kernel_launches; }
int64_t grouped_gemm_wgmma_launches() { return g_wgmma_launches; }
bool grouped_gemm_wgmma_available() { return sm90a_loaded(); }
int64_t grouped_gemm_side_products() { return g_side_products; }

int grouped_gemm_streams() {
  if (g_streams < 0) g_streams = streams_from_env();
  return g_streams;
}
void set_grouped_gemm_streams(int n) {
  if (n < 1 || n > kMaxStreams)
    throw_cuda_error("set_grouped_gemm_streams: expected 1 to " + std::to_string(kMaxStreams),
                     __FILE__, __LINE__);
  g_streams = n;
}

GroupedGemmImpl grouped_gemm_impl() {
  if (g_impl < 0) g_impl = int(impl_from_env());
  return GroupedGemmImpl(g_impl);
}
void set_grouped_gemm_impl(GroupedGemmImpl impl) { g_impl = int(impl); }

void grouped_gemm_rm(const GemmDesc* d, int count, bool ta, bool tb, bool bf16, float alpha,
                     float beta, bool c_bf16) {
  if (c_bf16 && (!bf16 || beta != 0.0f))
    throw_cuda_error("grouped_gemm_rm: a BF16 c needs BF16 operands and beta 0", __FILE__,
                     __LINE__);
  int& native = g_native[combo(bf16, c_bf16)];
  std::vector<int> keep;
  std::vector<GemmDesc> kd, k0;   // the products with K > 0; those with K 0 (c = beta * c)
  for (int i = 0; i < count; ++i)
    if (d[i].M > 0 && d[i].N > 0 && d[i].K > 0) {
      keep.push_back(i);
      kd.push_back(d[i]);
    } else if (d[i].M > 0 && d[i].N > 0) {
      k0.push_back(d[i]);
    }
  if (!k0.empty()) per_product(k0.data(), int(k0.size()), ta, tb, bf16, alpha, beta, c_bf16);
  if (keep.empty()) return;
  const GroupedGemmImpl impl = grouped_gemm_impl();
  if (bf16 && !c_bf16 && impl != GroupedGemmImpl::cublas) {
    if (grouped_bf16_kernel_fits(kd.data(), int(kd.size()), ta, tb)) {
      // wgmma: the warpgroup-MMA kernel where the sm_90a build runs, else the mma.sync one
      const bool wg = impl == GroupedGemmImpl::wgmma && sm90a_loaded();
      grouped_bf16_kernel(kd.data(), int(kd.size()), ta, tb, alpha, beta, wg);
      ++g_kernel_launches;
      if (wg) ++g_wgmma_launches;
      return;
    }
    // Shapes or alignment the kernel does not take: the cuBLAS path below for this call.
  }
  // The grouped entry point reads its pointers on the device, where cuBLAS cannot check their
  // alignment: a product slice that is not 16-byte aligned (a row offset times an odd row
  // length) goes through one call per product, which cuBLAS checks and handles.
  bool aligned = true;
  for (const GemmDesc& x : kd)
    aligned = aligned && ((reinterpret_cast<uintptr_t>(x.a) | reinterpret_cast<uintptr_t>(x.b) |
                           reinterpret_cast<uintptr_t>(x.c)) & 15) == 0;
  if (native == 0 || keep.size() == 1 || !aligned) {   // one call per product, side streams
    per_product(kd.data(), int(kd.size()), ta, tb, bf16, alpha, beta, c_bf16);
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
  // BF16 outputs: FP32 sums rounded once (no split-K partial sums reduced in BF16)
  DS_CUBLAS_CHECK(cublasSetMathMode(
      h, c_bf16 ? cublasMath_t(CUBLAS_DEFAULT_MATH |
                               CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)
                : CUBLAS_DEFAULT_MATH));
  DS_CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
  const cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasStatus_t s = cublasGemmGroupedBatchedEx(
      h, op_b.data(), op_a.data(), m.data(), n.data(), k.data(), alphas.data(), dp, t,
      ldb.data(), dp + G, t, lda.data(), betas.data(), const_cast<void* const*>(dp + 2 * G),
      c_bf16 ? CUDA_R_16BF : CUDA_R_32F, ldc.data(), G, size.data(), CUBLAS_COMPUTE_32F);
  pool_free(dptr);
  if (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_INVALID_VALUE) {
    native = 0;   // this type combination is not offered: one call per product from now on
    per_product(kd.data(), int(kd.size()), ta, tb, bf16, alpha, beta, c_bf16);
    return;
  }
  DS_CUBLAS_CHECK(s);
  native = 1;
  g_used_native = true;
}

}  // namespace ds::cuda
