// ds_bench_ops: times the optimised CPU ops (lib/ops) at the tiny/small preset shapes
// (include/ds/model/config.hpp) and at 2048^3: SGEMM GFLOP/s with 1 and 2 threads (forward NT,
// backward NN/TN, decode M = 1/4; DS_GEMM=blas for OpenBLAS alone), attention forward/backward
// µs, and a few memory-bound ops. Each figure is the median of --reps runs after one warm-up
// run. Results go to stdout, one line per case.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ds/ops/ops.hpp"

using namespace ds;
using namespace ds::ops;

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
