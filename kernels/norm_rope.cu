// RMSNorm forward/backward and interleaved RoPE of the CUDA path (declared in
// kernels/elementwise.cuh): the launchers of the kernels in kernels/norm_rope_kernels.cuh.
#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/norm_rope_kernels.cuh"

namespace ds::cuda {
namespace {

using namespace normrope;

inline int sms() { return sm_count() > 0 ? sm_count() : 132; }

int max_smem_optin() {
  static const int v = [] {
    int dev = 0, bytes = 48 * 1024;
    if (cudaGetDevice(&dev) == cudaSuccess)
      cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    cudaGetLastError();
    return bytes;
  }();
  return v;
}

template <class VT, bool CODES, bool ADD>
void rmsnorm_fwd_launch(const float* x, const float* a, float* h, const float* g, float eps,
                        void* y, float* rstd, int64_t N, int64_t C) {
  const int64_t Cv = C / Vec<VT>::n;
  const int threads = row_threads(Cv);
  const unsigned blocks = unsigned(std::min<int64_t>(N, 1 << 20));
  rmsnorm_fwd_kernel<VT, CODES, ADD><<<blocks, threads, 0, stream()>>>(
      x, a, h, g, double(eps), y, rstd, N, int(Cv), int(C));
  DS_CUDA_LAUNCHED();
}

// The variants of one forward: float4 rows when every row pointer allows them.
template <bool CODES, bool ADD>
void rmsnorm_fwd_any(const float* x, const float* a, float* h, const float* g, float eps,
                     void* y, float* rstd, int64_t N, int64_t C) {
  if (N <= 0) return;
  const bool vec = rmsnorm_fwd_vec(C, x, a, h, g, y, CODES, ADD);
  if (vec) rmsnorm_fwd_launch<float4, CODES, ADD>(x, a, h, g, eps, y, rstd, N, C);
  else rmsnorm_fwd_launch<float, CODES, ADD>(x, a, h, g, eps, y, rstd, N, C);
}

template <class VT, bool RES, int OUT>
void rmsnorm_bwd_launch(const float* x, const float* g, const float* rstd, const float* dy,
                        const float* res, float* dx, uint16_t* dxc, float* dg, int64_t N,
                        int64_t C) {
  const int64_t Cv = C / Vec<VT>::n;
  const int threads = row_threads(Cv);
  const size_t bytes = size_t(C) * sizeof(double);
  const bool smem = bytes + 1024 <= size_t(max_smem_optin());
  int per_sm = 4;
  if (smem) {
    // beyond 48 KiB per block, static shared memory (sh) included, only with the opt-in
    if (bytes + sizeof(double) * 32 > 48 * 1024) {
      DS_CUDA_CHECK(cudaFuncSetAttribute(rmsnorm_bwd_kernel<VT, false, kOutF32>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      DS_CUDA_CHECK(cudaFuncSetAttribute(rmsnorm_bwd_kernel<VT, RES, OUT>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    }
    // The grid (and so which rows each block's dg partials hold, and their sums' order) from
    // the plain variant for all: the residual and code-writing variants' dg is then the plain
    // one's, bit for bit, even should they compile to different register counts.
    DS_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, rmsnorm_bwd_kernel<VT, false, kOutF32>, threads, bytes));
    per_sm = std::max(per_sm, 1);
  }
  const int nb = int(std::min<int64_t>(N, int64_t(sms()) * per_sm));
  auto* partial = static_cast<double*>(scratch(size_t(nb) * bytes));
  rmsnorm_bwd_kernel<VT, RES, OUT><<<nb, threads, smem ? bytes : 0, stream()>>>(
      x, g, rstd, dy, res, dx, dxc, partial, N, int(Cv), int(C), smem);
  DS_CUDA_LAUNCHED();
  rmsnorm_dg_reduce_kernel<<<unsigned(cdiv(C, 32)), dim3(32, kDgLanes), 0, stream()>>>(
      partial, nb, dg, int(C));
  DS_CUDA_LAUNCHED();
}

}  // namespace

void rmsnorm_forward_f32(const float* x, const float* g, float eps, float* y, float* rstd,
                         int64_t N, int64_t C) {
  rmsnorm_fwd_any<false, false>(x, nullptr, nullptr, g, eps, y, rstd, N, C);
}

void rmsnorm_forward_bf16(const float* x, const float* g, float eps, uint16_t* y, float* rstd,
                          int64_t N, int64_t C) {
  rmsnorm_fwd_any<true, false>(x, nullptr, nullptr, g, eps, y, rstd, N, C);
}

void add_rmsnorm_forward(const float* x, const float* a, float* h, const float* g, float eps,
                         float* y_f32, uint16_t* y_codes, float* rstd, int64_t N, int64_t C) {
  if (y_codes) rmsnorm_fwd_any<true, true>(x, a, h, g, eps, y_codes, rstd, N, C);
  else rmsnorm_fwd_any<false, true>(x, a, h, g, eps, y_f32, rstd, N, C);
}

namespace {
// The row vector type of one backward: float4 rows when every row pointer allows them (rows
// of C % 4 == 0 codes start 8-byte aligned when dxc does).
template <bool RES, int OUT>
void rmsnorm_bwd_any(const float* x, const float* g, const float* rstd, const float* dy,
                     const float* res, float* dx, uint16_t* dxc, float* dg, int64_t N,
                     int64_t C) {
  const bool vec = rmsnorm_bwd_vec(C, x, g, dy, dx, res, dxc);
  if (vec) rmsnorm_bwd_launch<float4, RES, OUT>(x, g, rstd, dy, res, dx, dxc, dg, N, C);
  else rmsnorm_bwd_launch<float, RES, OUT>(x, g, rstd, dy, res, dx, dxc, dg, N, C);
}
}  // namespace

void rmsnorm_backward_f32(const float* x, const float* g, const float* rstd, const float* dy,
                          float* dx, float* dg, int64_t N, int64_t C, const float* res,
                          uint16_t* dx_codes) {
  if (N <= 0 || C <= 0) return;
  if (!dx && (res || !dx_codes))
    raise_cuda("rmsnorm_backward: no output (dx null needs codes and no residual)",
               cudaErrorInvalidValue, __FILE__, __LINE__);
  auto* c = dx_codes;
  if (res && c) rmsnorm_bwd_any<true, kOutF32 | kOutCodes>(x, g, rstd, dy, res, dx, c, dg, N, C);
  else if (res) rmsnorm_bwd_any<true, kOutF32>(x, g, rstd, dy, res, dx, c, dg, N, C);
  else if (!dx) rmsnorm_bwd_any<false, kOutCodes>(x, g, rstd, dy, res, dx, c, dg, N, C);
  else if (c) rmsnorm_bwd_any<false, kOutF32 | kOutCodes>(x, g, rstd, dy, res, dx, c, dg, N, C);
  else rmsnorm_bwd_any<false, kOutF32>(x, g, rstd, dy, res, dx, c, dg, N, C);
}

void rope_f32(const float* x, const int32_t* pos, const float* freqs, float* out, int64_t N,
              int64_t H, int64_t Dr, int dir, int64_t row, int64_t off) {
  const int64_t P = Dr / 2;
  if (N <= 0 || H <= 0 || P <= 0) return;
  if (row < 0) row = Dr;
  if (row % 2 != 0 || off % 2 != 0)
    raise_cuda("rope: row length and offset must be even", cudaErrorInvalidValue, __FILE__,
               __LINE__);
  const RopeChunks rc = rope_chunks(N, H, P, int64_t(sms()) * 2048);
  const int64_t pairs = N * P, nhc = rc.nhc, hchunk = rc.hchunk;
  const int threads = 256;
  const unsigned blocks = grid_for(pairs * nhc, threads, int64_t(sms()) * 32);
  const double d = dir >= 0 ? 1.0 : -1.0;
  if (aligned_to(x, 8) && aligned_to(out, 8))
    rope_kernel<true><<<blocks, threads, 0, stream()>>>(x, pos, freqs, out, N, int(H), int(P),
                                                        int(hchunk), int(nhc), d, row, off);
  else
    rope_kernel<false><<<blocks, threads, 0, stream()>>>(x, pos, freqs, out, N, int(H), int(P),
                                                         int(hchunk), int(nhc), d, row, off);
  DS_CUDA_LAUNCHED();
}

void rope_tail_codes(const float* x, const int32_t* pos, const float* freqs, uint16_t* out,
                     int64_t N, int64_t H, int64_t D, int64_t Dr, int dir) {
  if (N <= 0 || H <= 0 || D <= 0) return;
  if (D % 2 != 0 || Dr % 2 != 0 || Dr > D)
    raise_cuda("rope_tail_codes: D and Dr must be even, Dr <= D", cudaErrorInvalidValue,
               __FILE__, __LINE__);
  const int64_t work = N * (D / 2);   // (n, pair) threads, each over the H heads
  const int threads = 256;
  const unsigned blocks = grid_for(work, threads, int64_t(sms()) * 32);
  const double d = dir >= 0 ? 1.0 : -1.0;
  const int Ph = int(D / 2), P0 = int((D - Dr) / 2);
  if (aligned_to(x, 8) && aligned_to(out, 4))
    rope_tail_codes_kernel<true><<<blocks, threads, 0, stream()>>>(x, pos, freqs, out, N,
                                                                   int(H), Ph, P0, d);
  else
    rope_tail_codes_kernel<false><<<blocks, threads, 0, stream()>>>(x, pos, freqs, out, N,
                                                                    int(H), Ph, P0, d);
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
