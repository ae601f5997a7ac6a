// GPU timings of the per-token losses and the MoE router at training sizes: cross-entropy over
// DeepSeek-V3's 129280-token vocabulary (forward, and the fused forward+backward in place),
// token log-probabilities with entropy, and the group-limited top-8-of-256 routing with its
// backward and the balance loss. Random inputs; medians of timed repetitions. Bandwidth
// counts the logits read (and written) once per pass.
// Usage: bench_losses. Prints a table and one JSON line per row.
#include <cstdio>
#include <random>

#include "ds/ops/ops.hpp"
#include "gpu_timer.hpp"

using namespace ds;

namespace {

Tensor rand_gpu(const Shape& s, float lo, float hi, uint64_t seed) {
  Tensor h = Tensor::empty(s);
  std::mt19937_64 r(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] = d(r);
  Tensor g = Tensor::empty(s, DType::f32, Device::cuda);
  g.copy_from(h);
  return g;
}

Tensor rand_ids(int64_t n, int hi, uint64_t seed) {
  Tensor h = Tensor::empty({n}, DType::i32);
  std::mt19937_64 r(seed);
  for (int64_t i = 0; i < n; ++i) h.i32()[i] = int32_t(r() % uint64_t(hi));
  Tensor g = Tensor::empty({n}, DType::i32, Device::cuda);
  g.copy_from(h);
  return g;
}

}  // namespace

int main() {
  if (!bench::gpu_ready("bench_losses")) return 77;
  try {
    ops::Context ctx;
    ctx.device = Device::cuda;
    const int64_t N = 4096, V = 129280;
    const Tensor x = rand_gpu({N, V}, -8.0f, 8.0f, 1), t = rand_ids(N, int(V), 2);
    Tensor loss = Tensor::empty({N}, DType::f32, Device::cuda);
    Tensor d = Tensor::empty({N, V}, DType::f32, Device::cuda);
    Tensor lse = Tensor::empty({N}, DType::f32, Device::cuda),
           ent = Tensor::empty({N}, DType::f32, Device::cuda);
    const double gb = double(N) * double(V) * 4 / 1e9;
    const double fwd =
        bench::median_seconds([&] { ops::cross_entropy_forward(ctx, x, t, loss); }, 2, 15);
    const double fb = bench::median_seconds(
        [&] { ops::cross_entropy_forward_backward(ctx, x, t, 1.0f, loss, d); }, 2, 15);
    const double tlp = bench::median_seconds(
        [&] { ops::token_logprob_forward(ctx, x, t, loss, lse, ent); }, 2, 15);
    std::printf("cross_entropy N=%ld V=%ld: forward %.3f ms (%.0f GB/s), fused fwd+bwd %.3f ms "
                "(%.0f GB/s: 2 reads + 1 write), token_logprob+entropy %.3f ms (%.0f GB/s)\n",
                long(N), long(V), fwd * 1e3, gb / fwd, fb * 1e3, 3 * gb / fb, tlp * 1e3, gb / tlp);
    std::printf(
        "{\"bench\":\"cross_entropy\",\"N\":%ld,\"V\":%ld,\"fwd_ms\":%.4f,\"fused_ms\":%.4f,"
        "\"token_logprob_ms\":%.4f,\"fwd_gbps\":%.1f,\"fused_gbps\":%.1f}\n",
        long(N), long(V), fwd * 1e3, fb * 1e3, tlp * 1e3, gb / fwd, 3 * gb / fb);
    const int64_t T = 16384, E = 256, K = 8;
    ops::RouteParams p;
    p.n_groups = 8;
    p.topk_groups = 4;
    p.topk = int(K);
    p.route_scale = 2.5f;
    const Tensor lg = rand_gpu({T, E}, -3.0f, 3.0f, 3), b = rand_gpu({E}, -0.1f, 0.1f, 4);
    Tensor s = Tensor::empty({T, E}, DType::f32, Device::cuda);
    Tensor idx = Tensor::empty({T, K}, DType::i32, Device::cuda),
           w = Tensor::empty({T, K}, DType::f32, Device::cuda);
    const double rt =
        bench::median_seconds([&] { ops::moe_route(ctx, lg, b, p, s, idx, w); }, 2, 15);
    Tensor dl = Tensor::empty({T, E}, DType::f32, Device::cuda),
           ds_ = Tensor::empty({T, E}, DType::f32, Device::cuda);
    const Tensor dw = rand_gpu({T, K}, -1.0f, 1.0f, 5);
    const double rb = bench::median_seconds(
        [&] { ops::moe_route_backward(ctx, s, idx, dw, Tensor(), p, dl); }, 2, 15);
    const double bl = bench::median_seconds(
        [&] { ops::moe_balance_loss(ctx, s, idx, 4, int(T / 4), 1e-4f, ds_); }, 2, 15);
    std::printf("moe routing T=%ld E=256 K=8 groups 8/4: route %.3f ms, backward %.3f ms, balance "
                "loss + grad %.3f ms\n", long(T), rt * 1e3, rb * 1e3, bl * 1e3);
    std::printf(
        "{\"bench\":\"moe_route\",\"T\":%ld,\"E\":256,\"K\":8,\"route_ms\":%.4f,"
        "\"backward_ms\":%.4f,\"balance_ms\":%.4f}\n",
        long(T), rt * 1e3, rb * 1e3, bl * 1e3);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_losses: %s\n", e.what());
    return 1;
  }
  return 0;
}
