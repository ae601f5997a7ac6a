// The FP8 quantisation kernels of kernels/fp8_quant_tiles.cuh run on the CPU by the host
// emulator (cuda_emu.hpp: a fiber per CUDA thread, real barriers and warp exchanges),
// against the CPU reference ops bit for bit: the 1x128 row kernel and the transposed 128x1
// kernel, which passed on the H200 (so that these cases check the emulator too), and the tile
// quantisers (DS_FP8_QUANT=tiles, not yet run on a GPU) in all five of their variants and the
// many-matrix weight quantiser on tiles, on
// shapes with partial tiles, with more row strips than grid rows, and with zeros, NaN of both
// signs, infinities, subnormals and values that saturate. Every output sits between guard
// bytes that must come back untouched, and x between finite sentinels that would change an
// amax if a kernel read them.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "fp8_emu_util.hpp"
#include "kernels/fp8_quant_tiles.cuh"

#include <algorithm>

#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"

namespace {

using ds::Shape;
using ds::Tensor;
using ds::ops::Fp8Group;
using ds::ops::ScaleFormat;
using ds::test::cuda_emu::Guarded;
using ds::test::cuda_emu::launch;
namespace q8 = ds::cuda::fp8q;
using namespace ds::test::fp8emu;
using ds::test::ref_ctx;

}  // namespace

TEST_CASE("emulated 1x128 row kernel (run on the H200) equals the reference") {
  for (const Shape& sh : {Shape{5, 300}, Shape{64, 128}, Shape{3, 7}})
    for (const Mode& m : kModes) {
      CAPTURE(sh[0]);
      CAPTURE(sh[1]);
      CAPTURE(m.act);
      const int64_t M = sh[0], K = sh[1], SC = (K + 127) / 128;
      const Tensor x = input(M, K, 11);
      Input xin(x);
      Guarded<uint8_t> q(size_t(M * K));
      Guarded<float> s(size_t(M * SC)), fake(size_t(M * K));
      const q8::QArgs p{xin.data(), M, K, SC, m.fmt == ScaleFormat::ue8m0, m.act, q.data(),
                        s.data(), fake.data()};
      launch(q8::quant_row_kernel, dim3(3), dim3(64), p);   // grid-stride over the groups
      Tensor wq, ws, wf = Tensor::empty({M, K});
      ds::ops::fp8_quantize(ref_ctx(), x, Fp8Group::row_1x128, m.fmt, m.act, wq, ws);
      ds::ops::fp8_fake_quant(ref_ctx(), x, Fp8Group::row_1x128, m.fmt, m.act, wf);
      CHECK(same(q, wq));
      CHECK(same(s, ws));
      CHECK(same_nan(fake, wf));
    }
}

TEST_CASE("emulated transposed 128x1 kernel (run on the H200) equals the reference") {
  for (const Shape& sh : {Shape{300, 40}, Shape{128, 64}, Shape{1, 7}})
    for (const Mode& m : kModes) {
      CAPTURE(sh[0]);
      CAPTURE(sh[1]);
      CAPTURE(m.act);
      const int64_t M = sh[0], K = sh[1], SR = (M + 127) / 128;
      const Tensor x = input(M, K, 12);
      Input xin(x);
      Guarded<uint8_t> qt(size_t(K * M));
      Guarded<float> st(size_t(K * SR));
      launch(q8::quant_cols_t_kernel, dim3(cdiv(K, 32), 2), dim3(32, 8), xin.data(), M, K,
             m.fmt == ScaleFormat::ue8m0, m.act, qt.data(), st.data());
      Tensor wq, ws;
      ds::ops::fp8_quantize_transposed(ref_ctx(), x, m.fmt, m.act, wq, ws);
      CHECK(same(qt, wq));
      CHECK(same(st, ws));
    }
}

TEST_CASE("emulated tile quantisers equal the reference in every variant") {
  // (M, K): K % 4 == 0 and M % 16 == 0 as the launcher requires; partial tiles both ways,
  // three row strips over a grid of two rows, a tile smaller than one warp's rows' share.
  for (const Shape& sh : {Shape{272, 260}, Shape{128, 128}, Shape{16, 4}, Shape{400, 512}})
    for (const Mode& m : kModes)
      for (int variant = 0; variant < 5; ++variant) {
        const bool rows = variant != 2 && variant != 3, cols = variant != 0,
                   fake = variant >= 3;   // 0 rows, 1 rows+cols, 2 cols, 3 fake cols, 4 all
        CAPTURE(sh[0]);
        CAPTURE(sh[1]);
        CAPTURE(int(m.fmt));
        CAPTURE(m.act);
        CAPTURE(variant);
        const int64_t M = sh[0], K = sh[1], SC = (K + 127) / 128, SR = (M + 127) / 128;
        const Tensor x = input(M, K, 13 + uint64_t(variant));
        Input xin(x);
        Guarded<uint8_t> q(size_t(M * K)), qt(size_t(K * M));
        Guarded<float> s(size_t(M * SC)), st(size_t(K * SR));
        const q8::TileArgs p{xin.data(), M, K, m.fmt == ScaleFormat::ue8m0, m.act,
                             rows ? q.data() : nullptr, rows ? s.data() : nullptr,
                             cols ? qt.data() : nullptr, cols ? st.data() : nullptr};
        REQUIRE(q8::tiles_fit(p, fake));
        const dim3 grid(cdiv(K, 128), std::min(2u, cdiv(M, 128)));   // strips wrap over y
        switch (variant) {
          case 0: launch(q8::quant_tiles_kernel<true, false, false>, grid, dim3(256), p); break;
          case 1: launch(q8::quant_tiles_kernel<true, true, false>, grid, dim3(256), p); break;
          case 2: launch(q8::quant_tiles_kernel<false, true, false>, grid, dim3(256), p); break;
          case 3: launch(q8::quant_tiles_kernel<false, true, true>, grid, dim3(256), p); break;
          default: launch(q8::quant_tiles_kernel<true, true, true>, grid, dim3(256), p); break;
        }
        Tensor wq, ws, wqt, wst;
        ds::ops::fp8_quantize(ref_ctx(), x, Fp8Group::row_1x128, m.fmt, m.act, wq, ws);
        if (fake) ds::ops::fp8_requantize_transposed(ref_ctx(), x, m.fmt, m.act, wqt, wst);
        else ds::ops::fp8_quantize_transposed(ref_ctx(), x, m.fmt, m.act, wqt, wst);
        if (rows) {
          CHECK(same(q, wq));
          CHECK(same(s, ws));
        } else {
          CHECK(q.guards_intact());   // nothing written at all
          CHECK(std::all_of(q.data(), q.data() + q.n, [](uint8_t b) { return b == 0xa5; }));
        }
        if (cols) {   // the round trip's NaN is the GPU's (positive): NaN codes as NaN
          CHECK(fake ? same_nan(qt, wqt) : same(qt, wqt));
          CHECK(same(st, wst));
        } else {
          CHECK(std::all_of(qt.data(), qt.data() + qt.n, [](uint8_t b) { return b == 0xa5; }));
        }
      }
}

TEST_CASE("emulated many-matrix 128x128 tile quantiser equals the reference") {
  check_many_matrix(40, [](const std::vector<q8::BlockEntry>& tab, int64_t total, bool ue8m0) {
    launch(q8::quant_blocks_tiles_kernel, dim3(unsigned(total)), dim3(256), tab.data(),
           int(tab.size()), ue8m0);
  });
}

TEST_CASE("the tile quantisers' launch test: shapes and alignments taken, the grid") {
  alignas(16) static float x[64];
  alignas(16) static uint8_t q[64], qt[64];
  static float s[4], st[4];
  const q8::TileArgs both{x, 16, 4, false, false, q, s, qt, st};
  CHECK(q8::tiles_fit(both, false));
  CHECK(q8::tiles_fit(both, true));
  q8::TileArgs t = both;
  t.K = 6;   // K % 4
  CHECK_FALSE(q8::tiles_fit(t, false));
  t = both;
  t.M = 24;   // M % 16 with transposed codes; fine without them
  CHECK_FALSE(q8::tiles_fit(t, false));
  t.qt = nullptr;
  t.st = nullptr;
  CHECK(q8::tiles_fit(t, false));
  CHECK_FALSE(q8::tiles_fit(t, true));   // the round trip needs the transposed codes
  t = both;
  t.x = x + 1;   // x not 16-byte aligned
  CHECK_FALSE(q8::tiles_fit(t, false));
  t = both;
  t.qt = qt + 4;   // qt not 16-byte aligned
  CHECK_FALSE(q8::tiles_fit(t, false));
  t = both;
  t.q = q + 2;   // q not 4-byte aligned
  CHECK_FALSE(q8::tiles_fit(t, false));
  t = both;
  t.s = nullptr;   // codes without scales
  CHECK_FALSE(q8::tiles_fit(t, false));
  const dim3 g = q8::tiles_grid(300, 260), big = q8::tiles_grid(int64_t(1) << 24, 128);
  CHECK(g.x == 3);
  CHECK(g.y == 3);
  CHECK(big.y == 65535);   // 131072 strips wrap over the grid's rows
  ds::cuda::Fp8BlockJob j{x, 16, 4, q, s, qt, st};
  CHECK(q8::blocks_tiles_fit(j));
  j.qt = nullptr;
  CHECK(q8::blocks_tiles_fit(j));
  j.M = 20;
  CHECK_FALSE(q8::blocks_tiles_fit(j));
}

TEST_CASE("the emulator reports collectives CUDA leaves undefined") {
  struct K {
    static void kernel(int* out) {
      if (threadIdx.x == 3) return;
      out[threadIdx.x] = int(__reduce_max_sync(0xffffffffu, threadIdx.x));
    }
  };
  std::vector<int> out(32, -1);
  CHECK_THROWS_AS(launch(K::kernel, dim3(1), dim3(32), out.data()),
                  ds::test::cuda_emu::EmuError);
  CHECK_THROWS_AS(launch(K::kernel, dim3(1), dim3(48), out.data()),
                  ds::test::cuda_emu::EmuError);   // not whole warps
  struct Split {   // the two half-warps at different reductions; warps at different barriers
    static void reduce(int* out) {
      if (threadIdx.x < 16) out[threadIdx.x] = int(__reduce_max_sync(0xffffffffu, 1u));
      else out[threadIdx.x] = int(__reduce_max_sync(0xffffffffu, 2u));
    }
    static void sync(int* out) {
      if (threadIdx.x < 32) __syncthreads();
      else __syncthreads();
      out[0] = 1;
    }
  };
  CHECK_THROWS_AS(launch(Split::reduce, dim3(1), dim3(32), out.data()),
                  ds::test::cuda_emu::EmuError);
  CHECK_THROWS_AS(launch(Split::sync, dim3(1), dim3(64), out.data()),
                  ds::test::cuda_emu::EmuError);
}
