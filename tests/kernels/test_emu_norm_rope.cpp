// The RMSNorm and RoPE kernels (kernels/norm_rope_kernels.cuh: ops::rmsnorm_*, ops::rope* on
// the GPU) run on the CPU by the host emulator (cuda_emu.hpp: a fiber per CUDA thread)
// against the CPU reference.
// - RMSNorm forward with F32 outputs, BF16 codes and the residual add fused in front; the
//   backward with the residual gradient and the codes outputs, its dg accumulated in shared
//   memory (dynamic, C doubles) or in the partial rows, then reduced by
//   rmsnorm_dg_reduce_kernel into dg (+=); float4 and scalar rows (the launchers' rules,
//   rmsnorm_fwd_vec / rmsnorm_bwd_vec); in the forward DeepSeek-V3's hidden size 7,168 (448
//   threads on float4 rows, 512 on scalar ones; the backward's dg reduction takes 1,024
//   threads a 32 columns: C = 72 here).
//   The results equal the reference up to the order of the row sums (2^-22 relative at
//   most; dg, which the reference adds row by row in F32, to 1e-12 normalised); codes are the
//   F32 results' rounding bit for bit.
// - RoPE forward and backward over whole rows and over the tails of MLA's q rows (in place
//   and as BF16 codes), heads split into chunks (rope_chunks), float2 and scalar pairs: bit
//   for bit the reference (the emulator's sincos is glibc's, which the reference's sin and cos
//   equal; CUDA's may differ in the last bit, so the GPU test compares with a tolerance).
// Fewer blocks than rows; every output between guard bytes.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "kernels/norm_rope_kernels.cuh"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"
#include "emu_buffers.hpp"
#include "moe_pairs_util.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::bit_mismatches;
using ds::test::EmuBuf;
using ds::test::emu_random;
using ds::test::nmse;
using ds::test::off_by_more_than_rounding;
using ds::test::ref_ctx;
using ds::test::rounding_mismatches;
using ds::test::cuda_emu::Guarded;
using ds::test::cuda_emu::launch;
using ds::test::cuda_emu::launch_dynamic;
namespace nr = ds::cuda::normrope;

void check_rmsnorm_forward(int64_t N, int64_t C, size_t skew, uint64_t seed) {
  const std::string L = "rmsnorm forward N=" + std::to_string(N) + " C=" + std::to_string(C) +
                        " skew " + std::to_string(skew);
  INFO(L);
  std::mt19937_64 rng(seed);
  const Tensor x = emu_random({N, C}, rng, -2.f, 2.f), a = emu_random({N, C}, rng),
               g = emu_random({C}, rng, 0.5f, 1.5f);
  const float eps = 1e-6f;
  Tensor y = Tensor::empty({N, C}), rstd = Tensor::empty({N}), h = Tensor::empty({N, C}),
         ya = Tensor::empty({N, C}), rstda = Tensor::empty({N});
  ds::ops::rmsnorm_forward(ref_ctx(), x, g, eps, y, rstd);
  ds::ops::add_rmsnorm_forward(ref_ctx(), x, a, g, eps, h, ya, rstda);

  const size_t NC = size_t(N * C);
  EmuBuf dx(x, skew), da(a, skew), dg(g, skew), dy(NC * 4, skew), dh(NC * 4, skew),
      dc(NC * 2, skew), dr(size_t(N) * 4);
  const bool vec = nr::rmsnorm_fwd_vec(C, dx.f(), nullptr, nullptr, dg.f(), dy.f(), false, false);
  CHECK(vec == (C % 4 == 0 && skew == 0));
  const int64_t Cv = C / (vec ? 4 : 1);
  const dim3 grid(unsigned(std::min<int64_t>(N, 2))), block(unsigned(nr::row_threads(Cv)));
  auto run = [&](auto kernel, const float* xa, const float* aa, float* ha, void* out) {
    launch(kernel, grid, block, xa, aa, ha, static_cast<const float*>(dg.f()), double(eps), out,
           dr.f(), N, int(Cv), int(C));
  };
  if (vec) run(nr::rmsnorm_fwd_kernel<float4, false, false>, dx.f(), nullptr, nullptr, dy.f());
  else run(nr::rmsnorm_fwd_kernel<float, false, false>, dx.f(), nullptr, nullptr, dy.f());
  CHECK((dy.ok() && dr.ok()));
  CHECK(off_by_more_than_rounding(dy.f(), y.f32(), N * C) == 0);
  CHECK(off_by_more_than_rounding(dr.f(), rstd.f32(), N) == 0);
  std::vector<float> y_f32(dy.f(), dy.f() + N * C);
  if (vec) run(nr::rmsnorm_fwd_kernel<float4, true, false>, dx.f(), nullptr, nullptr, dc.u());
  else run(nr::rmsnorm_fwd_kernel<float, true, false>, dx.f(), nullptr, nullptr, dc.u());
  CHECK(dc.ok());
  CHECK(rounding_mismatches(dc.u(), y_f32.data(), N * C) == 0);
  // the residual add in front: h = x + a, then as above
  if (vec) run(nr::rmsnorm_fwd_kernel<float4, false, true>, dx.f(), da.f(), dh.f(), dy.f());
  else run(nr::rmsnorm_fwd_kernel<float, false, true>, dx.f(), da.f(), dh.f(), dy.f());
  CHECK((dh.ok() && dy.ok()));
  CHECK(bit_mismatches(dh.f(), h.f32(), N * C) == 0);
  CHECK(off_by_more_than_rounding(dy.f(), ya.f32(), N * C) == 0);
  CHECK(off_by_more_than_rounding(dr.f(), rstda.f32(), N) == 0);
}

// OUT: nr::kOutF32 and/or nr::kOutCodes; res: the residual gradient added.
template <class VT, bool RES, int OUT>
void run_backward(int64_t N, int64_t C, EmuBuf& x, EmuBuf& g, EmuBuf& rstd, EmuBuf& dy,
                  EmuBuf* res, EmuBuf* dx, EmuBuf* dxc, float* dg, unsigned nb, bool smem_acc) {
  const int64_t Cv = C / (sizeof(VT) / sizeof(float));
  std::vector<double> partial(size_t(nb) * size_t(C), NAN);
  const size_t dyn = smem_acc ? size_t(C) * sizeof(double) : 0;
  launch_dynamic(nr::rmsnorm_bwd_kernel<VT, RES, OUT>, dim3(nb),
                 dim3(unsigned(nr::row_threads(Cv))), dyn, static_cast<const float*>(x.f()),
                 static_cast<const float*>(g.f()), static_cast<const float*>(rstd.f()),
                 static_cast<const float*>(dy.f()),
                 static_cast<const float*>(res ? res->f() : nullptr), dx ? dx->f() : nullptr,
                 dxc ? dxc->u() : nullptr, partial.data(), N, int(Cv), int(C), smem_acc);
  launch(nr::rmsnorm_dg_reduce_kernel, dim3(unsigned((C + 31) / 32)), dim3(32, nr::kDgLanes),
         static_cast<const double*>(partial.data()), int(nb), dg, int(C));
}

void check_rmsnorm_backward(int64_t N, int64_t C, size_t skew, bool smem_acc, uint64_t seed) {
  const std::string L = "rmsnorm backward N=" + std::to_string(N) + " C=" + std::to_string(C) +
                        " skew " + std::to_string(skew) +
                        (smem_acc ? " dg in shared memory" : " dg in partial rows");
  INFO(L);
  std::mt19937_64 rng(seed);
  const Tensor x = emu_random({N, C}, rng, -2.f, 2.f), g = emu_random({C}, rng, 0.5f, 1.5f),
               dyt = emu_random({N, C}, rng), res = emu_random({N, C}, rng),
               dg0 = emu_random({C}, rng);
  Tensor y = Tensor::empty({N, C}), rstd = Tensor::empty({N});
  ds::ops::rmsnorm_forward(ref_ctx(), x, g, 1e-6f, y, rstd);
  Tensor dx_ref = Tensor::empty({N, C}), dg_ref = dg0.clone();
  ds::ops::rmsnorm_backward(ref_ctx(), x, g, rstd, dyt, dx_ref, dg_ref);
  Tensor dxr_ref = Tensor::empty({N, C}), dgr_ref = dg0.clone();
  ds::ops::rmsnorm_backward_add(ref_ctx(), x, g, rstd, dyt, res, dxr_ref, dgr_ref);

  EmuBuf dx_in(x, skew), dgam(g, skew), drstd(rstd, 0), ddy(dyt, skew), dres(res, skew),
      ddx(size_t(N * C) * 4, skew), dxc(size_t(N * C) * 2, skew);
  const bool vec = nr::rmsnorm_bwd_vec(C, dx_in.f(), dgam.f(), ddy.f(), ddx.f(), dres.f(),
                                       dxc.u());
  CHECK(vec == (C % 4 == 0 && skew == 0));
  const unsigned nb = unsigned(std::min<int64_t>(N, 3));
  Guarded<float> dg{size_t(C)}, dgr{size_t(C)}, dgc{size_t(C)};
  for (float* d : {dg.data(), dgr.data(), dgc.data()})
    std::memcpy(d, dg0.f32(), size_t(C) * sizeof(float));
  constexpr int F = nr::kOutF32, B = nr::kOutCodes;
  if (vec) run_backward<float4, false, F>(N, C, dx_in, dgam, drstd, ddy, nullptr, &ddx, nullptr,
                                          dg.data(), nb, smem_acc);
  else run_backward<float, false, F>(N, C, dx_in, dgam, drstd, ddy, nullptr, &ddx, nullptr,
                                     dg.data(), nb, smem_acc);
  CHECK((ddx.ok() && dg.guards_intact()));
  CHECK(off_by_more_than_rounding(ddx.f(), dx_ref.f32(), N * C) == 0);
  CHECK(nmse(dg.data(), dg_ref.f32(), C) <= 1e-12);
  // codes alone (dx not written): the F32 dx's rounding; dg the same sums
  if (vec) run_backward<float4, false, B>(N, C, dx_in, dgam, drstd, ddy, nullptr, nullptr, &dxc,
                                          dgc.data(), nb, smem_acc);
  else run_backward<float, false, B>(N, C, dx_in, dgam, drstd, ddy, nullptr, nullptr, &dxc,
                                     dgc.data(), nb, smem_acc);
  CHECK(dxc.ok());
  CHECK(rounding_mismatches(dxc.u(), ddx.f(), N * C) == 0);
  CHECK(bit_mismatches(dgc.data(), dg.data(), C) == 0);
  // with the residual gradient, F32 and codes in one pass
  if (vec) run_backward<float4, true, F | B>(N, C, dx_in, dgam, drstd, ddy, &dres, &ddx, &dxc,
                                             dgr.data(), nb, smem_acc);
  else run_backward<float, true, F | B>(N, C, dx_in, dgam, drstd, ddy, &dres, &ddx, &dxc,
                                        dgr.data(), nb, smem_acc);
  CHECK((ddx.ok() && dxc.ok() && dgr.guards_intact()));
  CHECK(off_by_more_than_rounding(ddx.f(), dxr_ref.f32(), N * C) == 0);
  CHECK(rounding_mismatches(dxc.u(), ddx.f(), N * C) == 0);
  CHECK(bit_mismatches(dgr.data(), dg.data(), C) == 0);   // the plain variant's sums
  CHECK(nmse(dgr.data(), dgr_ref.f32(), C) <= 1e-12);
}

// x (N, H, D); the last Dr of each head row rotated (Dr == D: rope_forward / backward).
void check_rope(int64_t N, int64_t H, int64_t D, int64_t Dr, int dir, size_t skew,
                int64_t target, uint64_t seed) {
  const std::string L = "rope N=" + std::to_string(N) + " H=" + std::to_string(H) + " D=" +
                        std::to_string(D) + " Dr=" + std::to_string(Dr) + " dir " +
                        std::to_string(dir) + " skew " + std::to_string(skew);
  INFO(L);
  std::mt19937_64 rng(seed);
  const Tensor x = emu_random({N, H, D}, rng, -3.f, 3.f),
               freqs = emu_random({Dr / 2}, rng, 1e-5f, 1.f);
  Tensor pos = Tensor::empty({N}, DType::i32);
  for (int64_t n = 0; n < N; ++n) pos.i32()[n] = int32_t(rng() % 163840);
  Tensor want = x.clone();
  if (Dr == D) {
    if (dir > 0) ds::ops::rope_forward(ref_ctx(), x, pos, freqs, want);
    else ds::ops::rope_backward(ref_ctx(), x, pos, freqs, want);
  } else {
    ds::ops::rope_tail_inplace(ref_ctx(), want, pos, freqs, dir);
  }
  Tensor want_codes = Tensor::empty({N, H, D}, DType::bf16);
  ds::ops::rope_tail_codes(ref_ctx(), x, pos, freqs, dir, want_codes);

  // rope_kernel in place over the rows, as rope_f32 launches it (row D, offset D - Dr)
  const int64_t P = Dr / 2;
  const nr::RopeChunks rc = nr::rope_chunks(N, H, P, target);
  EmuBuf io(x, skew);
  const bool vec2 = nr::aligned_to(io.f(), 8);
  CHECK(vec2 == (skew == 0));
  auto rope = vec2 ? nr::rope_kernel<true> : nr::rope_kernel<false>;
  launch(rope, dim3(2), dim3(64), static_cast<const float*>(io.f()),
         static_cast<const int32_t*>(pos.i32()), static_cast<const float*>(freqs.f32()), io.f(),
         N, int(H), int(P), int(rc.hchunk), int(rc.nhc), dir >= 0 ? 1.0 : -1.0, D, D - Dr);
  CHECK(io.ok());
  CHECK(bit_mismatches(io.f(), want.f32(), N * H * D) == 0);

  EmuBuf xin(x, skew), codes(size_t(N * H * D) * 2, skew);
  const bool vec = nr::aligned_to(xin.f(), 8) && nr::aligned_to(codes.u(), 4);
  auto tail = vec ? nr::rope_tail_codes_kernel<true> : nr::rope_tail_codes_kernel<false>;
  launch(tail, dim3(2), dim3(64), static_cast<const float*>(xin.f()),
         static_cast<const int32_t*>(pos.i32()), static_cast<const float*>(freqs.f32()),
         codes.u(), N, int(H), int(D / 2), int((D - Dr) / 2), dir >= 0 ? 1.0 : -1.0);
  CHECK(codes.ok());
  int64_t bad = 0;
  for (int64_t i = 0; i < N * H * D; ++i) bad += codes.u()[i] != want_codes.data<uint16_t>()[i];
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("emulated rmsnorm forward kernel matches the CPU reference") {
  uint64_t seed = 1;
  for (size_t skew : {size_t(0), size_t(4)}) {
    check_rmsnorm_forward(5, 7, skew, seed++);
    check_rmsnorm_forward(6, 64, skew, seed++);
    check_rmsnorm_forward(3, 1000, skew, seed++);
  }
  check_rmsnorm_forward(3, 7168, 0, seed++);   // DeepSeek-V3's hidden size: 448 threads
  check_rmsnorm_forward(3, 7168, 4, seed++);   // scalar rows: 512 threads (the clamp)
}

TEST_CASE("emulated rmsnorm backward kernels match the CPU reference") {
  uint64_t seed = 100;
  for (bool smem : {true, false})
    for (size_t skew : {size_t(0), size_t(4)}) {
      check_rmsnorm_backward(5, 7, skew, smem, seed++);
      check_rmsnorm_backward(7, 64, skew, smem, seed++);
      check_rmsnorm_backward(4, 72, skew, smem, seed++);   // 3 reduce blocks, the last partial
    }
}

TEST_CASE("emulated rope kernels equal the CPU reference bit for bit") {
  uint64_t seed = 200;
  for (int dir : {1, -1})
    for (size_t skew : {size_t(0), size_t(4)}) {
      check_rope(5, 3, 64, 64, dir, skew, 1, seed++);        // whole rows, no head chunks
      check_rope(3, 16, 64, 64, dir, skew, 400, seed++);     // heads split into chunks
      check_rope(4, 5, 192, 64, dir, skew, 1 << 20, seed++); // MLA's q tails, a head a chunk
    }
}
