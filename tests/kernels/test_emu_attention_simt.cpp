// The exact FP32 SIMT attention of kernels/flash_attention_simt.cuh run on the CPU by the host
// emulator (cuda_emu.hpp), as attention_forward / attention_backward launch it where the
// tensor-core kernels do not take the dims: the segment-bound pre-pass (exactly the first and
// last key of each query's segment), D = rowsum(dO * O), the forward (out, lse) and the dQ and
// dK/dV passes against the CPU reference attention, causal alone and with the SFT segment mask
// (contiguous runs, and labels that repeat apart), on odd T (partial 16-row blocks and 32-key
// tiles), odd head dims and one head. Bounds: the GPU test's (normalised squared error 1e-10
// for out and lse, 1e-9 for the gradients) and every element within 1e-4 of the tensor's
// largest magnitude (a wrong row or block shows there). Outputs are NaN before the kernels run
// (an unwritten element fails) and sit between guard bytes.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "emu_buffers.hpp"
#include "kernels/flash_attention_simt.cuh"
#include "moe_pairs_util.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::emu_random;
using ds::test::EmuBuf;
using ds::test::close_to;
using ds::test::ref_ctx;
using ds::test::cuda_emu::launch;
using ds::test::cuda_emu::launch_dynamic;
namespace fl = ds::cuda::flash;

struct Case {
  int64_t B, T, H, Dk, Dv;
};

// (B, T) sample ids: 0 none (undefined), 1 contiguous runs (one starting at key 31, the last
// of a 32-key tile: a block's first tile is exactly the one that holds it), 2 labels that
// repeat apart.
Tensor segments(int64_t B, int64_t T, int kind) {
  if (kind == 0) return Tensor();
  Tensor s = Tensor::empty({B, T}, DType::i32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      s.i32()[b * T + t] = kind == 1 ? int32_t((t + 2 + 5 * b) / 11) : int32_t((t / 3 + b) % 4);
  return s;
}

void check_case(const Case& c, int seg_kind, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t B = c.B, T = c.T, H = c.H, Dk = c.Dk, Dv = c.Dv, rows = B * T * H;
  const Tensor q = emu_random({B, T, H, Dk}, rng, -2.f, 2.f), k = emu_random({B, T, H, Dk}, rng);
  const Tensor v = emu_random({B, T, H, Dv}, rng), dout = emu_random({B, T, H, Dv}, rng);
  const Tensor seg = segments(B, T, seg_kind);
  const float scale = 1.0f / std::sqrt(float(Dk));
  Tensor out = Tensor::empty({B, T, H, Dv}), lse = Tensor::empty({B, H, T});
  ds::ops::attention_forward(ref_ctx(), q, k, v, seg, scale, out, lse);
  Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape());
  Tensor dv = Tensor::empty(v.shape());
  ds::ops::attention_backward(ref_ctx(), q, k, v, seg, scale, out, lse, dout, dq, dk, dv);

  // the segment bounds: the first and last key of each query's segment
  std::vector<int32_t> kfirst(size_t(B * T), -7), klast(size_t(B * T), -7);
  const int32_t* sp = seg.defined() ? seg.i32() : nullptr;
  if (sp) {
    launch(fl::seg_bounds_kernel, dim3(unsigned((B * T * 32 + 255) / 256)), dim3(256), sp,
           kfirst.data(), klast.data(), B * T, int(T));
    int64_t wrong = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const int32_t* sb = sp + b * T;
        int64_t f = t, l = t;   // labels may repeat apart: scan every key
        for (int64_t j = 0; j <= t; ++j)
          if (sb[j] == sb[t]) {
            f = j;
            break;
          }
        for (int64_t j = T - 1; j >= t; --j)
          if (sb[j] == sb[t]) {
            l = j;
            break;
          }
        wrong += kfirst[size_t(b * T + t)] != f || klast[size_t(b * T + t)] != l;
      }
    CHECK(wrong == 0);
  }
  const int32_t* kf = sp ? kfirst.data() : nullptr;
  const int32_t* kl = sp ? klast.data() : nullptr;

  // forward: grid (query blocks of 16, B * H), 4 warps, the launcher's shared memory
  const dim3 grid(unsigned((T + fl::kSB - 1) / fl::kSB), unsigned(B * H)), block(fl::kSW * 32);
  EmuBuf o(size_t(out.nbytes())), l(size_t(lse.nbytes()));
  o.poison();
  l.poison();
  launch_dynamic(fl::simt_fwd_kernel, grid, block, fl::simt_fwd_smem(int(Dk), int(Dv)), q.f32(),
                 k.f32(), v.f32(), sp, kf, scale, o.f(), l.f(), int(T), int(H), int(Dk), int(Dv));
  CHECK(close_to(o.f(), out, 1e-10));
  CHECK(close_to(l.f(), lse, 1e-10));
  CHECK((o.ok() && l.ok()));

  // D = rowsum(dO * O) (B, H, T), one warp a row, from the reference's out
  EmuBuf D(size_t(rows) * 4);
  D.poison();
  launch(fl::attn_delta_kernel, dim3(unsigned((rows * 32 + 255) / 256)), dim3(256), out.f32(),
         dout.f32(), D.f(), rows, int(T), int(H), int(Dv));
  Tensor want_D = Tensor::empty({B, H, T});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        double s = 0;
        for (int64_t e = 0; e < Dv; ++e) {
          const int64_t at = ((b * T + t) * H + h) * Dv + e;
          s += double(out.f32()[at]) * dout.f32()[at];
        }
        want_D.f32()[(b * H + h) * T + t] = float(s);
      }
  CHECK(close_to(D.f(), want_D, 1e-12));

  // backward: the dQ pass and the dK/dV pass from the reference's lse and the D above
  EmuBuf gq(size_t(dq.nbytes())), gk(size_t(dk.nbytes())), gv(size_t(dv.nbytes()));
  gq.poison();
  gk.poison();
  gv.poison();
  launch_dynamic(fl::simt_dq_kernel, grid, block, fl::simt_dq_smem(int(Dk), int(Dv)), q.f32(),
                 k.f32(), v.f32(), dout.f32(), sp, kf, lse.f32(), D.f(), scale, gq.f(), int(T),
                 int(H), int(Dk), int(Dv));
  launch_dynamic(fl::simt_dkdv_kernel, grid, block, fl::simt_dkdv_smem(int(Dk), int(Dv)),
                 q.f32(), k.f32(), v.f32(), dout.f32(), sp, kl, lse.f32(), D.f(), scale, gk.f(),
                 gv.f(), int(T), int(H), int(Dk), int(Dv));
  CHECK(close_to(gq.f(), dq, 1e-9));
  CHECK(close_to(gk.f(), dk, 1e-9));
  CHECK(close_to(gv.f(), dv, 1e-9));
  CHECK((gq.ok() && gk.ok() && gv.ok() && D.ok()));
}

}  // namespace

TEST_CASE("emulated exact SIMT attention equals the reference, with and without segments") {
  // odd T over 16-row blocks and 32-key tiles (two tiles), odd dims, head dims past a warp's
  // 32 lanes, one token, one head
  const Case cases[] = {{2, 37, 2, 24, 16}, {1, 45, 1, 5, 3}, {1, 20, 2, 40, 36}, {1, 1, 1, 8, 8}};
  for (const Case& c : cases)
    for (int seg : {0, 1, 2}) {
      const std::string what = "B " + std::to_string(c.B) + " T " + std::to_string(c.T) + " H " +
                               std::to_string(c.H) + " Dk " + std::to_string(c.Dk) + " Dv " +
                               std::to_string(c.Dv) + " segments " + std::to_string(seg);
      INFO(what);
      check_case(c, seg, uint64_t(7 + seg));
    }
}
