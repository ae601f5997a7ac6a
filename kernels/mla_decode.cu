// Absorbed-MLA inference kernels (see mla_decode.cuh): head_matmul over cuBLAS and the latent
// attention over the (S, L, R) latent cache + (S, L, Dr) rope-key cache, exact FP32.
// Latent attention is MQA with one shared 576-wide key/value row per position, so the kernel
// reads each cache row once per 16 heads (a head group) and splits the keys of a row across
// CTAs ("flash-decoding"): CTA (n, head group, split) keeps an unnormalised partial output,
// its max and sum; a combine kernel merges the splits. With many rows (prefill) there is one
// split and the CTA writes the normalised output directly. Per 32-key tile (cp.async, double
// buffered; [latent | rope] concatenated in shared memory):
//   1. partial scores: 8 warps = 4 slices of the 576 dims x 2 head halves; a lane computes
//      4 heads x 2 keys with float4 loads (rows padded so 8 lanes hit distinct banks);
//   2. online softmax: warp w owns heads 2w, 2w+1, a lane one key;
//   3. accumulate: a thread owns 8 heads x 4 latent columns (x2 for R > 512).
// Dims beyond the fast kernel's shared memory (R + Dr > 640) use a simple block-per-head one.
// Measured on an H200 (R 512, Dr 64, FP32 cache): 16 heads ~0.5-1 TB/s of cache; 128 heads
// are FP32-FMA bound (~15 TFLOP/s, ~130 GB/s). A BF16 cache runs the tensor-core kernel of
// mla_decode_tc.cu instead (it shares the combine kernel below).
// reference: spec §2.1; Dao et al., "Flash-Decoding for long-context inference" (2023).
#include <algorithm>
#include <atomic>

#include "kernels/common.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/mla_decode_kernels.cuh"

namespace ds::cuda {

void head_matmul(const float* x, const float* w, bool trans_w, float* y, int64_t N, int64_t H,
                 int64_t I, int64_t O) {
  if (N == 0 || H == 0 || O == 0) return;
  if (I == 0) {
    DS_CUDA_CHECK(cudaMemsetAsync(y, 0, size_t(N * H * O) * sizeof(float), stream()));
    return;
  }
  // Column-major view per head h: Y_h^T (O x N, ld H*O) = op(W_h) (O x I) X_h^T (I x N,
  // ld H*I); W_h row-major (I, O) is W_h^T column-major (ld O), (O, I) needs OP_T (ld I).
  cublasHandle_t hd = cublas();
  cublasMath_t math;
  cublasPointerMode_t pm;
  DS_CUBLAS_CHECK(cublasGetMathMode(hd, &math));
  DS_CUBLAS_CHECK(cublasGetPointerMode(hd, &pm));
  DS_CUBLAS_CHECK(cublasSetMathMode(hd, CUBLAS_DEFAULT_MATH));
  DS_CUBLAS_CHECK(cublasSetPointerMode(hd, CUBLAS_POINTER_MODE_HOST));
  const float one = 1.f, zero = 0.f;
  const cublasStatus_t st = cublasSgemmStridedBatched(
      hd, trans_w ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, int(O), int(N), int(I), &one, w,
      int(trans_w ? I : O), I * O, x, int(H * I), I, &zero, y, int(H * O), O, int(H));
  cublasSetMathMode(hd, math);
  cublasSetPointerMode(hd, pm);
  DS_CUBLAS_CHECK(st);
}

namespace {

using namespace mla;   // the kernels (mla_decode_kernels.cuh)

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Opts a kernel in to `bytes` of dynamic shared memory, once per larger size (each call costs
// host time on every layer and step).
template <typename Kernel>
void opt_in_smem(Kernel* k, std::atomic<size_t>& done, size_t bytes) {
  if (bytes <= done.load()) return;
  DS_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  size_t prev = done.load();
  while (prev < bytes && !done.compare_exchange_weak(prev, bytes)) {
  }
}

std::atomic<size_t> g_simple_smem{0}, g_split_smem[2] = {};

}  // namespace

void mla_latent_attention(const float* q_lat, const float* q_pe, const float* ckv,
                          const float* kpe, const int32_t* slot, const int32_t* len, float scale,
                          float* out, const MlaShape& s) {
  if (s.N == 0 || s.H == 0 || s.R == 0) return;
  const SplitPlan plan = split_plan(s.N, s.H, s.R, s.Dr, s.L, sm_count());
  const int64_t DP = plan.DP;
  const size_t smem = plan.smem;
  // The simple kernel for widths past the tiled one's, and where its tiles do not fit the
  // device's shared memory (R 512 + Dr 64 needs 191 KiB: more than an A100's 163 KiB).
  if (DP > kMaxDP || s.S == 0 || s.L == 0 || smem > size_t(mla_max_smem_optin())) {
    const size_t ssmem = size_t(s.R) * sizeof(float);
    opt_in_smem(mla_simple_kernel, g_simple_smem, ssmem);
    mla_simple_kernel<<<unsigned(s.N * s.H), 128, ssmem, stream()>>>(
        q_lat, q_pe, ckv, kpe, slot, len, scale, out, int(s.H), int(s.R), int(s.Dr), int(s.S),
        int(s.L));
    DS_CUDA_LAUNCHED();
    return;
  }
  MlaArgs a{};
  a.q_lat = q_lat; a.q_pe = q_pe; a.ckv = ckv; a.kpe = kpe; a.slot = slot; a.len = len;
  a.scale = scale; a.out = out;
  a.H = int(s.H); a.R = int(s.R); a.Dr = int(s.Dr); a.S = int(s.S); a.L = int(s.L);
  a.DP = int(DP);
  a.CS = int(plan.CS);
  a.vec = s.R % 4 == 0 && s.Dr % 4 == 0 && aligned16(ckv) && aligned16(kpe);
  const int64_t groups = cdiv(s.H, kMH), splits = plan.splits;
  a.KS = int(plan.KS);
  a.splits = int(splits);
  if (splits > 1) {
    const size_t npart = size_t(s.N * splits * s.H);
    const size_t po_bytes = (npart * size_t(s.R) * sizeof(float) + 255) / 256 * 256;
    const size_t pm_bytes = (npart * sizeof(float) + 255) / 256 * 256;
    char* base_ptr = static_cast<char*>(scratch(po_bytes + 2 * pm_bytes));
    a.po = reinterpret_cast<float*>(base_ptr);
    a.pm = reinterpret_cast<float*>(base_ptr + po_bytes);
    a.pl = reinterpret_cast<float*>(base_ptr + po_bytes + pm_bytes);
  }
  const dim3 grid(unsigned(s.N), unsigned(groups), unsigned(splits));
  if (cdiv(s.R, 4) <= 128) {
    opt_in_smem(mla_split_kernel<1>, g_split_smem[0], smem);
    mla_split_kernel<1><<<grid, kMT, smem, stream()>>>(a);
  } else {
    opt_in_smem(mla_split_kernel<2>, g_split_smem[1], smem);
    mla_split_kernel<2><<<grid, kMT, smem, stream()>>>(a);
  }
  DS_CUDA_LAUNCHED();
  if (splits > 1) mla_combine(a.po, a.pm, a.pl, out, s.N, s.H, s.R, splits);
}

void mla_combine(const float* po, const float* pm, const float* pl, float* out, int64_t N,
                 int64_t H, int64_t R, int64_t splits) {
  const dim3 cgrid(unsigned(N * H), unsigned(cdiv(R, 128)));
  mla_combine_kernel<<<cgrid, 128, size_t(splits) * sizeof(float), stream()>>>(
      po, pm, pl, out, int(H), int(R), int(splits));
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
