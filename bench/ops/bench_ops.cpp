// ds_bench_ops: times the optimised CPU ops (lib/ops) at the tiny/small preset shapes
// (include/ds/model/config.hpp) and at 2048^3: SGEMM GFLOP/s with 1 and 2 threads (forward NT,
// backward NN/TN, decode M = 1/4; DS_GEMM=blas for OpenBLAS alone), the small-M (decode)
// kernels side by side in every flavour this CPU runs (portable, AVX2, AVX-512; F32 and BF16
// weights, one thread), attention forward/backward µs, and a few memory-bound ops. Each
// figure is the median of --reps runs after one warm-up run. Results go to stdout, one line
// per case.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/gemm_kernels.hpp"
#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"

using namespace ds;
using namespace ds::ops;
namespace gemm = ds::ops::opt::gemm;

namespace {

Tensor rand_tensor(const Shape& s, uint64_t seed) {
  Tensor t = Tensor::empty(s);
  std::mt19937_64 r(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = u(r);
  return t;
}

double median_us(int reps, const std::function<void()>& fn) {
  fn();   // warm-up
  std::vector<double> us;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    auto t1 = std::chrono::steady_clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

// linear_forward y(M,N) = x(M,K) w(N,K)^T
void bench_gemm(const char* name, int64_t M, int64_t N, int64_t K, int threads, int reps) {
  set_cpu_threads(threads);
  Context ctx;
  ctx.threads = threads;
  Tensor x = rand_tensor({M, K}, 1), w = rand_tensor({N, K}, 2), y = Tensor::empty({M, N});
  double us = median_us(reps, [&] { linear_forward(ctx, x, w, y); });
  std::printf("gemm %-22s M=%-5lld N=%-5lld K=%-5lld threads=%d  %9.1f us  %7.1f GFLOP/s\n", name,
              (long long)M, (long long)N, (long long)K, threads, us, 2.0 * M * N * K / us * 1e-3);
}

// matmul c(M,N) = op(a) op(b) + beta c for the backward (NN dx, TN dW) and decode shapes
void bench_mm(const char* name, int64_t M, int64_t N, int64_t K, bool ta, bool tb, float beta,
              int threads, int reps) {
  set_cpu_threads(threads);
  Context ctx;
  ctx.threads = threads;
  Tensor a = rand_tensor(ta ? Shape{K, M} : Shape{M, K}, 1);
  Tensor b = rand_tensor(tb ? Shape{N, K} : Shape{K, N}, 2), c = rand_tensor({M, N}, 3);
  double us = median_us(reps, [&] { matmul(ctx, a, b, c, ta, tb, 1.0f, beta); });
  std::printf("mm   %-22s M=%-5lld N=%-5lld K=%-5lld threads=%d  %9.1f us  %7.1f GFLOP/s\n", name,
              (long long)M, (long long)N, (long long)K, threads, us, 2.0 * M * N * K / us * 1e-3);
}

// One small-M kernel flavour on c(M,N) = x(M,K) w(N,K)^T, one thread: GFLOP/s and the weight
// stream's GB/s (the bound at decode sizes).
void bench_small(const char* flavour, const char* name, int64_t M, int64_t N, int64_t K,
                 gemm::SmallMKernel f32, gemm::SmallMBf16Kernel bf16, int reps) {
  Tensor x = rand_tensor({M, K}, 1), w = rand_tensor({N, K}, 2), c = Tensor::empty({M, N});
  std::vector<uint16_t> wb(size_t(N * K));
  for (int64_t i = 0; i < N * K; ++i) wb[size_t(i)] = f32_to_bf16(w.f32()[i]);
  auto run = [&](const char* type, double bytes, const std::function<void()>& fn) {
    const double us = median_us(reps, fn);
    std::printf("small-M %-8s %-4s %-14s M=%-2lld N=%-5lld K=%-5lld %9.1f us  %6.1f GFLOP/s  "
                "%6.1f GB/s\n", flavour, type, name, (long long)M, (long long)N, (long long)K, us,
                2.0 * M * N * K / us * 1e-3, bytes / us * 1e-3);
  };
  run("f32", 4.0 * N * K, [&] {
    for (int64_t r = 0; r < M; r += gemm::kSmallM)
      f32(x.f32() + r * K, K, false, w.f32(), K, true, c.f32() + r * N, N,
          std::min(gemm::kSmallM, M - r), N, K, 1.0f, 0.0f);
  });
  run("bf16", 2.0 * N * K, [&] {
    for (int64_t r = 0; r < M; r += gemm::kSmallM)
      bf16(x.f32() + r * K, K, wb.data(), K, c.f32() + r * N, N, std::min(gemm::kSmallM, M - r),
           N, K);
  });
}

void bench_small_kernels(int reps) {
  set_cpu_threads(1);
  struct Flavour {
    const char* name;
    gemm::SmallMKernel f32;
    gemm::SmallMBf16Kernel bf16;
  };
  std::vector<Flavour> fl{{"portable", gemm::small_m_portable, gemm::small_m_bf16_portable}};
  if (gemm::avx2_available()) fl.push_back({"avx2", gemm::small_m_avx2, gemm::small_m_bf16_avx2});
  if (gemm::avx512_available())
    fl.push_back({"avx512", gemm::small_m_avx512, gemm::small_m_bf16_avx512});
  for (auto [name, M, N, K] : {std::tuple<const char*, int64_t, int64_t, int64_t>{
                                   "small w1", 1, 1536, 512},
                               {"small w2", 1, 512, 1536},
                               {"small w1", 4, 1536, 512},
                               {"small head", 1, 32000, 512},
                               {"small head", 4, 32000, 512}})
    for (const Flavour& f : fl)   // flavours side by side per shape
      bench_small(f.name, name, M, N, K, f.f32, f.bf16, N > 4096 ? reps * 4 : reps * 20);
}

void bench_attention(const char* name, int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv,
                     int threads, int reps) {
  set_cpu_threads(threads);
  Context ctx;
  ctx.threads = threads;
  Tensor q = rand_tensor({B, T, H, Dk}, 3), k = rand_tensor({B, T, H, Dk}, 4);
  Tensor v = rand_tensor({B, T, H, Dv}, 5), dout = rand_tensor({B, T, H, Dv}, 6);
  Tensor out = Tensor::empty({B, T, H, Dv}), lse = Tensor::empty({B, H, T});
  Tensor dq = Tensor::empty({B, T, H, Dk}), dk = Tensor::empty({B, T, H, Dk});
  Tensor dv = Tensor::empty({B, T, H, Dv}), seg;
  const float scale = 0.1f;
  double fwd = median_us(reps, [&] { attention_forward(ctx, q, k, v, seg, scale, out, lse); });
  double bwd = median_us(reps, [&] {
    attention_backward(ctx, q, k, v, seg, scale, out, lse, dout, dq, dk, dv);
  });
  // causal: half of the T x T products; forward 2 GEMMs, backward 4 (+ recomputed scores)
  const double f = double(B) * H * T * T * (Dk + Dv);   // = 2 * flops/2 per causal GEMM pair
  std::printf(
      "attn %-22s B=%lld T=%-5lld H=%lld Dk=%lld Dv=%lld threads=%d  fwd %9.1f us (%5.1f GFLOP/s)"
      "  bwd %9.1f us (%5.1f GFLOP/s)\n",
      name, (long long)B, (long long)T, (long long)H, (long long)Dk, (long long)Dv, threads, fwd,
      f / fwd * 1e-3, bwd, (f + 2.0 * f) / bwd * 1e-3);
}

void bench_misc(int64_t N, int64_t C, int64_t V, int threads, int reps) {
  set_cpu_threads(threads);
  Context ctx;
  ctx.threads = threads;
  Tensor x = rand_tensor({N, C}, 7), g = rand_tensor({C}, 8), y = Tensor::empty({N, C});
  Tensor r = Tensor::empty({N}), dx = Tensor::empty({N, C}), dg = Tensor::zeros({C});
  double fn = median_us(reps, [&] { rmsnorm_forward(ctx, x, g, 1e-6f, y, r); });
  double bn = median_us(reps, [&] { rmsnorm_backward(ctx, x, g, r, y, dx, dg); });
  std::printf("rmsnorm   N=%lld C=%lld threads=%d  fwd %8.1f us  bwd %8.1f us\n", (long long)N,
              (long long)C, threads, fn, bn);
  Tensor logits = rand_tensor({N, V}, 9), tg = Tensor::empty({N}, DType::i32);
  for (int64_t i = 0; i < N; ++i) tg.i32()[i] = int32_t((i * 13) % V);
  Tensor losses = Tensor::empty({N}), dl = Tensor::empty({N, V});
  double fc = median_us(reps, [&] { cross_entropy_forward(ctx, logits, tg, losses); });
  double bc = median_us(reps, [&] { cross_entropy_backward(ctx, logits, tg, 1.0f, dl); });
  std::printf("xent      N=%lld V=%lld threads=%d  fwd %8.1f us  bwd %8.1f us\n", (long long)N,
              (long long)V, threads, fc, bc);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ds_bench_ops: CPU op throughput (median of runs)"};
  int reps = 5;
  bool quick = false;
  app.add_option("--reps", reps, "timed runs per case (median reported)")
      ->check(CLI::Range(1, 1000));
  app.add_flag("--quick", quick, "skip the 2048^3 and T=4096 cases");
  bool gemm_only = false;
  app.add_flag("--gemm-only", gemm_only, "only the GEMM cases");
  CLI11_PARSE(app, argc, argv);
  bench_small_kernels(reps);
  for (int th : {1, 2}) {
    // tiny preset: dim 128, inter 384, vocab 4096, 4 heads, qk 48 / v 32; 8 x 256 tokens
    bench_gemm("tiny w1 (N,dim)x(inter)", 2048, 384, 128, th, reps);
    bench_gemm("tiny head", 2048, 4096, 128, th, reps);
    // small preset: dim 512, inter 1536, vocab 32000, 8 heads, qk 96 / v 64; 2 x 1024 tokens
    bench_gemm("small w1", 2048, 1536, 512, th, reps);
    bench_gemm("small w2", 2048, 512, 1536, th, reps);
    bench_gemm("small head", 2048, 32000, 512, th, reps);
    if (!quick) bench_gemm("square 2048^3", 2048, 2048, 2048, th, reps);
    bench_mm("tiny dx NN", 2048, 128, 384, false, false, 0.0f, th, reps);
    bench_mm("tiny dW TN", 384, 128, 2048, true, false, 1.0f, th, reps);
    bench_mm("small dx NN", 2048, 512, 1536, false, false, 0.0f, th, reps);
    bench_mm("small dW TN", 1536, 512, 2048, true, false, 1.0f, th, reps);
    bench_mm("small head dx NN", 2048, 512, 32000, false, false, 0.0f, th, reps);
    bench_mm("small head dW TN", 32000, 512, 2048, true, false, 1.0f, th, reps);
    bench_mm("decode w1 M=1 NT", 1, 1536, 512, false, true, 0.0f, th, reps * 20);
    bench_mm("decode w2 M=1 NT", 1, 512, 1536, false, true, 0.0f, th, reps * 20);
    bench_mm("decode head M=1 NT", 1, 32000, 512, false, true, 0.0f, th, reps * 4);
    bench_mm("decode head M=4 NT", 4, 32000, 512, false, true, 0.0f, th, reps * 4);
  }
  if (gemm_only) return 0;
  for (int th : {1, 2}) {
    bench_attention("tiny", 8, 256, 4, 48, 32, th, reps);
    bench_attention("small", 2, 1024, 8, 96, 64, th, reps);
    if (!quick) bench_attention("small T=4096", 1, 4096, 8, 96, 64, th, reps);
    bench_misc(2048, 512, 32000, th, reps);
  }
  return 0;
}
