// GPU timings of the FP8 Linears' quantisations, the plain quantisers against the tile ones
// (DS_FP8_QUANT=tiles; kernels/fp8_quant_tiles.cuh) side by side in one process: the
// forward's 1x128 codes of an activation, the transposed 128x1 codes, dy's two operands
// (fp8_quantize_dual) and the input's Wgrad operand (fp8_requantize_transposed), on the
// token count of the 1b step (B 4 x T 4096) at the 1b preset's widths (dim 1024, the dense
// MLP's 4096) and DeepSeek-V3's (7168).
// CUDA-event medians with L2 flushed. GB/s counts the least traffic an op needs (x read once,
// each output written once), the same bytes for both, so the two columns compare as times.
// Usage: bench_fp8_quant [--quick]. Prints a table and one JSON line per row.
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>

#include "ds/ops/fp8.hpp"
#include "gpu_timer.hpp"
#include "kernels/fp8_quant.cuh"

using namespace ds;
using ops::Fp8Group;
using ops::ScaleFormat;

namespace {

Tensor rand_gpu(int64_t M, int64_t K, uint64_t seed) {
  Tensor h = Tensor::empty({M, K});
  std::mt19937_64 r(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] = d(r);
  Tensor g = Tensor::empty({M, K}, DType::f32, Device::cuda);
  g.copy_from(h);
  return g;
}

}  // namespace

int main(int argc, char** argv) {
  if (!bench::gpu_ready("bench_fp8_quant")) return 77;
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  try {
    ops::Context ctx;
    ctx.device = Device::cuda;
    const ScaleFormat fmt = ScaleFormat::fp32;
    const int64_t M = 16384;   // tokens of the 1b step
    const int reps = quick ? 5 : 15;
    // ops: quantize_1x128_act = fp8_quantize 1x128 (the forward's, act), quantize_transposed,
    // quantize_dual = fp8_quantize_dual (dy), requantize_transposed (the input's Wgrad operand)
    std::printf("%-22s %6s %6s %10s %10s %8s %8s %7s  (M = %ld tokens; GB/s)\n", "op", "K",
                "MB", "plain ms", "tiles ms", "plain", "tiles", "ratio", long(M));
    for (const int64_t K : {int64_t(1024), int64_t(4096), int64_t(7168)}) {
      const Tensor x = rand_gpu(M, K, uint64_t(K));
      const Shape ss = ops::fp8_scale_shape(M, K, Fp8Group::row_1x128);
      const Shape sts = ops::fp8_scale_shape(K, M, Fp8Group::row_1x128);
      Tensor q = Tensor::empty({M, K}, DType::u8, Device::cuda);
      Tensor s = Tensor::empty(ss, DType::f32, Device::cuda);
      Tensor qt = Tensor::empty({K, M}, DType::u8, Device::cuda);
      Tensor st = Tensor::empty(sts, DType::f32, Device::cuda);
      const double in = double(M * K) * 4, codes = double(M * K);
      const double rs = double(shape_numel(ss)) * 4, cs = double(shape_numel(sts)) * 4;
      struct Op {
        const char* name;
        double bytes;
        std::function<void()> run;
      };
      const Op ops_[] = {
          {"quantize_1x128_act", in + codes + rs,
           [&] { ops::fp8_quantize(ctx, x, Fp8Group::row_1x128, fmt, true, q, s); }},
          {"quantize_transposed", in + codes + cs,
           [&] { ops::fp8_quantize_transposed(ctx, x, fmt, false, qt, st); }},
          {"quantize_dual", in + 2 * codes + rs + cs,
           [&] { ops::fp8_quantize_dual(ctx, x, fmt, false, q, s, qt, st); }},
          {"requantize_transposed", in + codes + cs,
           [&] { ops::fp8_requantize_transposed(ctx, x, fmt, true, qt, st); }},
      };
      for (const Op& op : ops_) {
        double ms[2];
        for (const bool tiles : {false, true}) {
          ds::cuda::set_fp8_quant_tiles(tiles);
          ms[tiles] = bench::median_ms_events(op.run, 2, reps, true);
        }
        ds::cuda::set_fp8_quant_tiles(false);
        const double gbp = op.bytes / ms[0] / 1e6, gbt = op.bytes / ms[1] / 1e6;
        std::printf("%-22s %6ld %6.0f %10.3f %10.3f %8.0f %8.0f %6.2fx\n", op.name, long(K),
                    op.bytes / 1e6, ms[0], ms[1], gbp, gbt, ms[0] / ms[1]);
        std::printf("{\"bench\":\"fp8_quant\",\"op\":\"%s\",\"M\":%ld,\"K\":%ld,\"mb\":%.1f,"
                    "\"plain_ms\":%.4f,\"tiles_ms\":%.4f,\"plain_gbps\":%.1f,"
                    "\"tiles_gbps\":%.1f}\n", op.name, long(M), long(K), op.bytes / 1e6, ms[0],
                    ms[1], gbp, gbt);
      }
    }
    std::printf("tile quantiser launches %ld (4 ops x 3 widths x (2 + %d) runs each expected)\n",
                long(ds::cuda::fp8_quant_tiles_launches()), reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_fp8_quant: %s\n", e.what());
    return 1;
  }
  return 0;
}
