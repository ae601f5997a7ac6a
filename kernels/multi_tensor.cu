// Many-tensor launchers (see multi_tensor.cuh): sums of squares, zeroing and BF16 rounding over
// a table of tensors in one launch each; their kernels are in kernels/multi_tensor_kernels.cuh.
#include <vector>

#include "kernels/common.cuh"
#include "kernels/multi_tensor.cuh"
#include "kernels/multi_tensor_kernels.cuh"
#include "kernels/multi_tensor_table.cuh"

namespace ds::cuda {

using namespace multitensor;

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
  add_partials(first.data(), partial.data(), count, out);
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
    tab[size_t(i)] = RoundEntry{xs[i], outs[i], ns[i], first[size_t(i)],
                                round_vec(xs[i], outs[i], codes)};
  }
  const PoolBuffer dtab(tab.size() * sizeof(RoundEntry));
  upload_table(tab, dtab);
  const RoundEntry* t = dtab.as<RoundEntry>();
  if (codes) bf16_round_multi_kernel<true><<<unsigned(chunks), kThreads, 0, stream()>>>(t, count);
  else bf16_round_multi_kernel<false><<<unsigned(chunks), kThreads, 0, stream()>>>(t, count);
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
