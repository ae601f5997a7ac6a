// GPU timings of the FP8 Linears' quantisations, the plain quantisers against the tile ones
// (DS_FP8_QUANT=tiles; kernels/fp8_quant_tiles.cuh) side by side in one process: the
// forward's 1x128 codes of an activation, the transposed 128x1 codes, dy's two operands
// (fp8_quantize_dual) and the input's Wgrad operand (fp8_requantize_transposed), on the
// token count of the 1b step (B 4 x T 4096) at the 1b preset's widths (dim 1024, the dense
// MLP's 4096) and DeepSeek-V3's (7168); and the weights' 128x128 quantisation in both
// orientations (fp8_quantize_blocks_multi) of 64 experts' stacked gate/up matrices.
// CUDA-event medians with L2 flushed. GB/s counts the least traffic an op needs (x read once,
// each output written once), the same bytes for both, so the two columns compare as times.
// Usage: bench_fp8_quant [--quick]. Prints a table and one JSON line per row.
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

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
  std::uniform_real_distribution<float> d(-2.0f, 2.0f);
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
    {   // the routed experts' weights of one projection: 64 stacked gate/up (768, 1024)
      const int64_t n = 64, R = 768, C = 1024;
      std::vector<Tensor> w, q, s, qt, st;
      std::vector<const Tensor*> wp;
      std::vector<Tensor*> qp, sp, qtp, stp;
      const Shape ss = ops::fp8_scale_shape(R, C, Fp8Group::block_128x128);
      for (int64_t e = 0; e < n; ++e) {
        w.push_back(rand_gpu(R, C, 100 + uint64_t(e)));
        q.push_back(Tensor::empty({R, C}, DType::u8, Device::cuda));
        s.push_back(Tensor::empty(ss, DType::f32, Device::cuda));
        qt.push_back(Tensor::empty({C, R}, DType::u8, Device::cuda));
        st.push_back(Tensor::empty({ss[1], ss[0]}, DType::f32, Device::cuda));
      }
      for (int64_t e = 0; e < n; ++e) {
        wp.push_back(&w[size_t(e)]);
        qp.push_back(&q[size_t(e)]);
        sp.push_back(&s[size_t(e)]);
        qtp.push_back(&qt[size_t(e)]);
        stp.push_back(&st[size_t(e)]);
      }
      const double bytes = double(n * R * C) * (4 + 2) + double(n * shape_numel(ss)) * 8;
      double ms[2];
      for (const bool tiles : {false, true}) {
        ds::cuda::set_fp8_quant_tiles(tiles);
        ms[tiles] = bench::median_ms_events(
            [&] { ops::fp8_quantize_blocks_multi(ctx, wp, fmt, qp, sp, qtp, stp); }, 2, reps,
            true);
      }
      ds::cuda::set_fp8_quant_tiles(false);
      const double gbp = bytes / ms[0] / 1e6, gbt = bytes / ms[1] / 1e6;
      std::printf("%-22s %6ld %6.0f %10.3f %10.3f %8.0f %8.0f %6.2fx  (64 x (768, 1024), both "
                  "orientations)\n", "quantize_blocks_multi", long(C), bytes / 1e6, ms[0],
                  ms[1], gbp, gbt, ms[0] / ms[1]);
      std::printf("{\"bench\":\"fp8_quant\",\"op\":\"quantize_blocks_multi\",\"M\":%ld,"
                  "\"K\":%ld,\"mb\":%.1f,\"plain_ms\":%.4f,\"tiles_ms\":%.4f,"
                  "\"plain_gbps\":%.1f,\"tiles_gbps\":%.1f}\n", long(n * R), long(C),
                  bytes / 1e6, ms[0], ms[1], gbp, gbt);
    }
    std::printf("tile quantiser launches %ld (5 ops, (2 + %d) runs each, at 3 widths for 4 of "
                "them)\n", long(ds::cuda::fp8_quant_tiles_launches()), reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_fp8_quant: %s\n", e.what());
    return 1;
  }
  return 0;
}
