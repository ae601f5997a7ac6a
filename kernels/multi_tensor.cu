// Many-tensor launchers (see multi_tensor.cuh): sums of squares, zeroing and BF16 rounding over
// a table of tensors in one launch each. One 256-thread block per chunk of one tensor.
// Per-element arithmetic is that of the one-tensor kernels (elementwise.cu, fp8_quant.cu):
// f32_to_bf16 for the rounding, FP32 squares widened to double for the sums.
#include <vector>

#include "kernels/common.cuh"
#include "kernels/multi_tensor.cuh"
#include "kernels/multi_tensor_table.cuh"

namespace ds::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 65536;          // elements per block (sums, rounding)
constexpr int64_t kZeroChunk = 1 << 20;    // bytes per block (zeroing); a multiple of 16

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

struct SumEntry {
  const float* x;
  int64_t n, first;
  bool vec;   // x 16-byte aligned: float4 loads
};

// partial[c] = sum of squares of chunk c (double; a fixed order within the block).
__global__ void sum_squares_multi_kernel(const SumEntry* tab, int count, double* partial) {
  __shared__ double sh[kThreads / 32];
  const int64_t c = blockIdx.x;
  const SumEntry e = tab[entry_of(tab, count, c)];
  const auto [lo, len] = chunk_range(c, e.first, e.n, kChunk);
  const float* x = e.x + lo;
  double acc = 0;
  int64_t done = 0;
  if (e.vec) {   // lo is a multiple of 4, so x stays 16-byte aligned
    const int64_t n4 = len / 4;
    for (int64_t i = threadIdx.x; i < n4; i += kThreads) {
      const float4 v = reinterpret_cast<const float4*>(x)[i];
      acc += double(v.x) * double(v.x) + double(v.y) * double(v.y) +
             double(v.z) * double(v.z) + double(v.w) * double(v.w);
    }
    done = n4 * 4;
  }
  for (int64_t i = done + threadIdx.x; i < len; i += kThreads) acc += double(x[i]) * double(x[i]);
  acc = warp_sum_d(acc);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) sh[w] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    for (int i = 0; i < kThreads / 32; ++i) s += sh[i];
    partial[c] = s;
  }
}

struct ZeroEntry {
  uint8_t* p;
  int64_t bytes, first;
  bool vec;
};

__global__ void zero_multi_kernel(const ZeroEntry* tab, int count) {
  const int64_t c = blockIdx.x;
  const ZeroEntry e = tab[entry_of(tab, count, c)];
  const auto [lo, len] = chunk_range(c, e.first, e.bytes, kZeroChunk);
  uint8_t* p = e.p + lo;
  int64_t done = 0;
  if (e.vec) {
    const int64_t n16 = len / 16;
    for (int64_t i = threadIdx.x; i < n16; i += kThreads)
      reinterpret_cast<uint4*>(p)[i] = make_uint4(0, 0, 0, 0);
    done = n16 * 16;
  }
  for (int64_t i = done + threadIdx.x; i < len; i += kThreads) p[i] = 0;
}

struct RoundEntry {
  const float* x;
  void* out;
  int64_t n, first;
  bool vec;   // x 16-byte and out 8- (codes) or 16-byte (F32) aligned: 4 elements a thread
};

template <bool CODES>
__global__ void bf16_round_multi_kernel(const RoundEntry* tab, int count) {
  const int64_t c = blockIdx.x;
  const RoundEntry e = tab[entry_of(tab, count, c)];
  const auto [lo, len] = chunk_range(c, e.first, e.n, kChunk);
  const float* x = e.x + lo;
  int64_t done = 0;
  if (e.vec) {   // lo is a multiple of 4: x + lo and out + lo keep their alignment
    void* out = CODES ? static_cast<void*>(static_cast<uint16_t*>(e.out) + lo)
                      : static_cast<void*>(static_cast<float*>(e.out) + lo);
    const int64_t n4 = len / 4;
    for (int64_t i = threadIdx.x; i < n4; i += kThreads)
      store_bf16x4<CODES>(out, i, reinterpret_cast<const float4*>(x)[i]);
    done = 4 * n4;
  }
  for (int64_t i = done + threadIdx.x; i < len; i += kThreads) {
    const uint16_t b = f32_to_bf16(x[i]);
    if (CODES) static_cast<uint16_t*>(e.out)[lo + i] = b;
    else static_cast<float*>(e.out)[lo + i] = bf16_to_f32(b);
  }
}

}  // namespace

void sum_squares_multi_f32(const float* const* xs, const int64_t* ns, int count, double* out) {
  if (count <= 0) return;
  std::vector<int64_t> first(size_t(count) + 1);
  const int64_t chunks = chunk_prefix(ns, count, kChunk, first.data());
  std::vector<SumEntry> tab(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i)
    tab[size_t(i)] = SumEntry{xs[i], ns[i], first[size_t(i)], aligned16(xs[i])};
  std::vector<double> partial(static_cast<size_t>(chunks));
  if (chunks > 0) {
    const PoolBuffer dtab(tab.size() * sizeof(SumEntry)), dpart(size_t(chunks) * sizeof(double));
    upload_table(tab, dtab);
    sum_squares_multi_kernel<<<unsigned(chunks), kThreads, 0, stream()>>>(
        dtab.as<SumEntry>(), count, dpart.as<double>());
    DS_CUDA_LAUNCHED();
    // the one synchronisation: copy the partial sums back once the kernel is done
    DS_CUDA_CHECK(cudaMemcpyAsync(partial.data(), dpart.as<void>(),
                                  size_t(chunks) * sizeof(double), cudaMemcpyDeviceToHost,
                                  stream()));
    DS_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }
  for (int i = 0; i < count; ++i) {
    double s = 0;
    for (int64_t c = first[size_t(i)]; c < first[size_t(i) + 1]; ++c) s += partial[size_t(c)];
    out[i] = s;
  }
}

void zero_multi(void* const* ptrs, const int64_t* bytes, int count) {
  if (count <= 0) return;
  std::vector<int64_t> first(size_t(count) + 1);
  const int64_t chunks = chunk_prefix(bytes, count, kZeroChunk, first.data());
  if (chunks == 0) return;
  std::vector<ZeroEntry> tab(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i)
    tab[size_t(i)] = ZeroEntry{static_cast<uint8_t*>(ptrs[i]), bytes[i], first[size_t(i)],
                               aligned16(ptrs[i])};
  const PoolBuffer dtab(tab.size() * sizeof(ZeroEntry));
  upload_table(tab, dtab);
  zero_multi_kernel<<<unsigned(chunks), kThreads, 0, stream()>>>(dtab.as<ZeroEntry>(), count);
  DS_CUDA_LAUNCHED();
}

void bf16_round_multi(const float* const* xs, void* const* outs, bool codes, const int64_t* ns,
                      int count) {
  if (count <= 0) return;
  std::vector<int64_t> first(size_t(count) + 1);
  const int64_t chunks = chunk_prefix(ns, count, kChunk, first.data());
  if (chunks == 0) return;
  std::vector<RoundEntry> tab(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const bool out_ok =
        codes ? (reinterpret_cast<uintptr_t>(outs[i]) & 7u) == 0 : aligned16(outs[i]);
    tab[size_t(i)] = RoundEntry{xs[i], outs[i], ns[i], first[size_t(i)],
                                aligned16(xs[i]) && out_ok};
  }
  const PoolBuffer dtab(tab.size() * sizeof(RoundEntry));
  upload_table(tab, dtab);
  const RoundEntry* t = dtab.as<RoundEntry>();
  if (codes) bf16_round_multi_kernel<true><<<unsigned(chunks), kThreads, 0, stream()>>>(t, count);
  else bf16_round_multi_kernel<false><<<unsigned(chunks), kThreads, 0, stream()>>>(t, count);
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
