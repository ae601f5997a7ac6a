// AdamW step of the CUDA path (declared in kernels/elementwise.cuh): the launchers of the
// kernels in kernels/adamw_step.cuh (bit-identical to ref::adamw_step). adamw_step_multi_f32
// runs the same element function over a table of tensors in one launch, optionally writing
// each updated weight's BF16 codes too (the next step's GEMM operands).
#include <algorithm>
#include <vector>

#include "kernels/adamw_step.cuh"
#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/multi_tensor_table.cuh"

namespace ds::cuda {

void adamw_step_multi_f32(const AdamWEntry* entries, int count, bool m_bf16, bool v_bf16) {
  using namespace adamwk;
  if (count <= 0) return;
  std::vector<int64_t> ns(static_cast<size_t>(count)), first(size_t(count) + 1);
  for (int i = 0; i < count; ++i) ns[size_t(i)] = entries[i].n;
  const int64_t chunks = chunk_prefix(ns.data(), count, kMultiChunk, first.data());
  if (chunks == 0) return;
  std::vector<MultiEntry> tab(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const AdamWEntry& e = entries[i];
    const bool vec = vectorised(e.param, e.grad, e.m, m_bf16, e.v, v_bf16, e.codes);
    tab[size_t(i)] = MultiEntry{e, first[size_t(i)], vec};
  }
  const PoolBuffer dtab(tab.size() * sizeof(MultiEntry));
  upload_table(tab, dtab);
  auto launch = [&](auto kernel) {
    kernel<<<unsigned(chunks), kMultiThreads, 0, stream()>>>(dtab.as<MultiEntry>(), count);
    DS_CUDA_LAUNCHED();
  };
  if (m_bf16 && v_bf16) launch(adamw_multi_kernel<true, true>);
  else if (m_bf16) launch(adamw_multi_kernel<true, false>);
  else if (v_bf16) launch(adamw_multi_kernel<false, true>);
  else launch(adamw_multi_kernel<false, false>);
}

void adamw_step_f32(float* param, const float* grad, void* m, bool m_bf16, void* v, bool v_bf16,
                    int64_t n, const AdamWConsts& c) {
  using adamwk::adamw_kernel;
  if (n <= 0) return;
  const bool vec = adamwk::vectorised(param, grad, m, m_bf16, v, v_bf16, nullptr);
  const int threads = 256;
  const int sms = sm_count() > 0 ? sm_count() : 132;
  const unsigned blocks = grid_for(vec ? n / 4 + 1 : n, threads, int64_t(sms) * 32);
  auto launch = [&](auto kernel) {
    kernel<<<blocks, threads, 0, stream()>>>(param, grad, m, v, n, vec, c);
    DS_CUDA_LAUNCHED();
  };
  if (m_bf16 && v_bf16) launch(adamw_kernel<true, true>);
  else if (m_bf16) launch(adamw_kernel<true, false>);
  else if (v_bf16) launch(adamw_kernel<false, true>);
  else launch(adamw_kernel<false, false>);
}

}  // namespace ds::cuda
