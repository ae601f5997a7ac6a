// The MoE balance loss's and expert counts' kernels (kernels/moe_balance.cuh:
// ops::moe_balance_loss and ops::moe_count on the GPU) run on the CPU by the host emulator
// (cuda_emu.hpp: a fiber per CUDA thread, atomics as std::atomic_ref) against the CPU
// reference. The loss goes through the launcher's five kernels in its order (moe_route.cu:
// per-token sums and per-sequence hits, per-chunk partial sums of P, per-sequence f.P, the
// total, the gradient), with sequences shorter and longer than a 64-token chunk, and padded
// sequences (lengths inside and across chunks, empty and full); it agrees with
// the reference to 1e-12 (another order of double sums) and dscores to 1e-6 relative. The
// counts use the shared-memory histogram (E <= 8192) and the global atomics (E = 10000),
// skip indices outside [0, E), add to what the counts held, and must equal the CPU's exactly.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "kernels/moe_balance.cuh"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "ds/ops/ops.hpp"
#include "moe_pairs_util.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::ref_ctx;
using ds::test::cuda_emu::Guarded;
using ds::test::cuda_emu::launch;
namespace mb = ds::cuda::moebalance;

// The loss (and dscores into `ds` when not null) as moe_route.cu's launcher computes it, with
// at most 3 blocks where it takes a grid-stride loop.
double emulated_balance_loss(const Tensor& scores, const Tensor& idx, int64_t n_seq,
                             int64_t seq_len, float alpha, float* ds,
                             const std::vector<int32_t>& lengths) {
  const int32_t* len = lengths.empty() ? nullptr : lengths.data();
  const int64_t N = n_seq * seq_len, E = scores.size(1), K = idx.size(1);
  const int64_t nchunk = (seq_len + mb::kBalanceChunk - 1) / mb::kBalanceChunk;
  std::vector<double> S(size_t(N), NAN), partial(size_t(n_seq * nchunk * E), NAN),
      cf(size_t(n_seq * E), NAN), lseq(size_t(n_seq), NAN), total(1, NAN);
  std::vector<int> counts(size_t(n_seq * E), 0);
  const unsigned warp_blocks = unsigned(std::min<int64_t>((N + 7) / 8, 3));
  launch(mb::balance_stats_kernel, dim3(warp_blocks), dim3(256),
         static_cast<const float*>(scores.f32()), static_cast<const int32_t*>(idx.i32()), N,
         int(E), int(K), seq_len, len, S.data(), counts.data());
  launch(mb::balance_partial_kernel, dim3(unsigned(nchunk), unsigned(n_seq)), dim3(256),
         static_cast<const float*>(scores.f32()), static_cast<const double*>(S.data()), int(E),
         seq_len, len, partial.data());
  launch(mb::balance_finish_kernel, dim3(unsigned(n_seq)), dim3(256),
         static_cast<const double*>(partial.data()), static_cast<const int*>(counts.data()),
         int(nchunk), int(E), int(K), seq_len, len, n_seq, double(alpha), cf.data(),
         lseq.data());
  launch(mb::balance_total_kernel, dim3(1), dim3(32), static_cast<const double*>(lseq.data()),
         n_seq, total.data());
  if (ds)
    launch(mb::balance_grad_kernel, dim3(warp_blocks), dim3(256),
           static_cast<const float*>(scores.f32()), static_cast<const double*>(S.data()),
           static_cast<const double*>(cf.data()), N, int(E), seq_len, len, ds);
  return total[0];
}

// lengths: empty (every token counts) or (n_seq) leading tokens of each sequence.
void check_balance(int64_t E, int K, int G, int TG, int64_t n_seq, int64_t seq_len,
                   uint64_t seed, const std::vector<int32_t>& lengths = {}) {
  INFO("E=" << E << " K=" << K << " n_seq=" << n_seq << " seq_len=" << seq_len
            << " lengths=" << lengths.size());
  const int64_t N = n_seq * seq_len;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  Tensor x = Tensor::empty({N, E});
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = u(rng);
  ds::ops::RouteParams p;
  p.n_groups = G;
  p.topk_groups = TG;
  p.topk = K;
  Tensor s = Tensor::empty({N, E}), idx = Tensor::empty({N, K}, DType::i32),
         w = Tensor::empty({N, K});
  ds::ops::moe_route(ref_ctx(), x, Tensor(), p, s, idx, w);
  const float alpha = 0.013f;
  Tensor want = Tensor::empty({N, E});
  const double l_ref = ds::ops::moe_balance_loss(ref_ctx(), s, idx, int(n_seq), int(seq_len),
                                                 alpha, want, lengths);

  Guarded<float> got(size_t(N * E));
  const double l = emulated_balance_loss(s, idx, n_seq, seq_len, alpha, got.data(), lengths);
  INFO("loss emulated " << l << " reference " << l_ref);
  CHECK(std::fabs(l - l_ref) <= 1e-12 * std::fabs(l_ref));
  CHECK(got.guards_intact());
  double scale = 0;
  for (int64_t i = 0; i < N * E; ++i) scale = std::max(scale, double(std::fabs(want.f32()[i])));
  int64_t bad = 0;   // a few float roundings apart at most (double sums in another order)
  for (int64_t i = 0; i < N * E; ++i) {
    const double g = got.data()[i], r = want.f32()[i];
    bad += !(std::fabs(g - r) <= 1e-6 * std::fabs(r) + 1e-12 * scale);
  }
  CHECK(bad == 0);
  CHECK(emulated_balance_loss(s, idx, n_seq, seq_len, alpha, nullptr, lengths) == l);
}

// counts += the hits of idx (n entries, those outside [0, E) skipped), with `blocks` blocks
// of 256 threads, as moe_route.cu's moe_count launches it.
void check_count(int64_t E, int64_t n, unsigned blocks, uint64_t seed) {
  INFO("moe_count E=" << E << " n=" << n << " blocks=" << blocks);
  std::mt19937_64 rng(seed);
  std::vector<int32_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = int32_t(rng() % uint64_t(E));
  idx[3 % n] = int32_t(E);   // skipped
  idx[17 % n] = -1;          // skipped
  Guarded<int32_t> got(static_cast<size_t>(E));
  std::vector<int32_t> want(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) want[size_t(e)] = got.data()[e] = int32_t(rng() % 5);
  for (int32_t e : idx)
    if (e >= 0 && e < E) ++want[size_t(e)];
  launch(mb::count_kernel, dim3(blocks), dim3(256), static_cast<const int32_t*>(idx.data()), n,
         int(E), got.data());
  CHECK(got.guards_intact());
  int64_t bad = 0;
  for (int64_t e = 0; e < E; ++e) bad += got.data()[e] != want[size_t(e)];
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("emulated balance-loss kernels equal the CPU reference") {
  uint64_t seed = 1;
  for (int64_t n_seq : {1, 3})
    for (int64_t seq_len : {1, 37, 130}) {
      check_balance(256, 8, 8, 4, n_seq, seq_len, seed++);   // DeepSeek-V3
      check_balance(100, 5, 1, 1, n_seq, seq_len, seed++);   // E not a multiple of 32
    }
  // padded sequences: lengths inside a chunk, across chunks, empty, full
  check_balance(256, 8, 8, 4, 4, 130, seed++, {130, 0, 65, 7});
  check_balance(100, 5, 1, 1, 3, 37, seed++, {1, 36, 0});
}

TEST_CASE("emulated count kernel equals the CPU's counts") {
  check_count(16, 517 * 8, 3, 1);      // shared-memory histogram, many hits an expert
  check_count(256, 517 * 8, 2, 2);
  check_count(8192, 3000, 1, 3);       // the largest shared histogram
  check_count(10000, 4136, 3, 4);      // over 8192 experts: global atomics
  check_count(12, 40, 1, 5);           // fewer entries than threads
}
