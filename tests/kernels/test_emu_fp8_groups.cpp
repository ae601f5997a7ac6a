// The default path's FP8 quantisation kernels of kernels/fp8_quant_groups.cuh run on the CPU by
// the host emulator (cuda_emu.hpp) against the CPU reference ops, bit for bit: 128x1 and
// 128x128 over 128-row strips (with more strips than grid rows), the whole-tensor amax (its
// atomicMax across blocks) and quantisation, the many-matrix 128x128 weight quantiser with
// its transposed codes, and the dequantiser in every grouping; on shapes with partial groups
// both ways, zero groups, and the inputs of fp8_emu_util.hpp (NaN of both signs, infinities,
// subnormals, values that saturate). Outputs sit between guard bytes, x between sentinels
// that would change an amax if a kernel read them.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "fp8_emu_util.hpp"
#include "kernels/fp8_quant_groups.cuh"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"

namespace {

using ds::Shape;
using ds::Tensor;
using ds::ops::Fp8Group;
using ds::ops::ScaleFormat;
using ds::test::ref_ctx;
using ds::test::cuda_emu::Guarded;
using ds::test::cuda_emu::launch;
using namespace ds::test::fp8emu;
namespace q8 = ds::cuda::fp8q;

std::string label(const Shape& sh, const Mode& m) {
  return std::to_string(sh[0]) + "x" + std::to_string(sh[1]) +
         (m.fmt == ScaleFormat::ue8m0 ? " ue8m0" : " fp32") + (m.act ? " act" : " weight");
}

// Runs the grouping's kernel as fp8_quantize launches it (grid.y capped at `rows` to make the
// strips wrap) and checks codes, scales and the round trip against the reference.
void check_grouping(Fp8Group g, const Shape& sh, const Mode& m, unsigned rows) {
  const int64_t M = sh[0], K = sh[1];
  const Tensor x = input(M, K, 21 + uint64_t(g));
  Input xin(x);
  Tensor wq, ws, wf = Tensor::empty({M, K});
  ds::ops::fp8_quantize(ref_ctx(), x, g, m.fmt, m.act, wq, ws);
  ds::ops::fp8_fake_quant(ref_ctx(), x, g, m.fmt, m.act, wf);
  Guarded<uint8_t> q(size_t(M * K));
  Guarded<float> s(size_t(ws.numel())), fake(size_t(M * K));
  const bool ue8m0 = m.fmt == ScaleFormat::ue8m0;
  q8::QArgs p{xin.data(), M, K, 0, ue8m0, m.act, q.data(), s.data(), fake.data()};
  const unsigned strips = std::min(rows, cdiv(M, 128));
  switch (g) {
    case Fp8Group::col_128x1:
      p.SC = K;
      launch(q8::quant_tile_kernel<1>, dim3(cdiv(K, 32), strips), dim3(32, 8), p);
      break;
    case Fp8Group::block_128x128:
      p.SC = cdiv(K, 128);
      launch(q8::quant_tile_kernel<4>, dim3(unsigned(p.SC), strips), dim3(32, 8), p);
      break;
    case Fp8Group::tensor: {
      p.SC = 1;
      uint32_t amax = 0;
      const int64_t n = M * K;
      if (n > 0) launch(q8::amax_kernel, dim3(3), dim3(64), xin.data(), n, &amax);
      launch(q8::quant_tensor_kernel, dim3(2), dim3(96), p, n, &amax);
      break;
    }
    default: FAIL("grouping not launched here");
  }
  CHECK(same(q, wq));
  CHECK(same(s, ws));
  CHECK(same_nan(fake, wf));
}

}  // namespace

TEST_CASE("emulated 128x1 and 128x128 strip kernels equal the reference") {
  // partial strips and column tiles, three strips over grid rows of two, one row, K below a
  // warp's 32 columns
  for (const Fp8Group g : {Fp8Group::col_128x1, Fp8Group::block_128x128})
    for (const Shape& sh : {Shape{300, 40}, Shape{272, 260}, Shape{1, 7}})
      for (const Mode& m : kModes) {
        const std::string what = label(sh, m) + (g == Fp8Group::col_128x1 ? " 128x1" : " block");
        INFO(what);
        check_grouping(g, sh, m, 2);
      }
}

TEST_CASE("emulated whole-tensor amax and quantisation equal the reference") {
  // the amax across three blocks (atomicMax), the scale written once; a one-element tensor
  for (const Shape& sh : {Shape{300, 40}, Shape{3, 7}, Shape{1, 1}})
    for (const Mode& m : kModes) {
      const std::string what = label(sh, m);
      INFO(what);
      check_grouping(Fp8Group::tensor, sh, m, 1);
    }
  // the empty tensor: no amax pass, and the one scale still written (scale_of(0))
  for (const Mode& m : kModes) {
    uint32_t amax = 0;
    Guarded<float> s(1);
    const q8::QArgs p{nullptr, 0, 5, 1, m.fmt == ScaleFormat::ue8m0, m.act, nullptr, s.data(),
                      nullptr};
    launch(q8::quant_tensor_kernel, dim3(1), dim3(32), p, int64_t(0), &amax);
    Tensor wq, ws;
    ds::ops::fp8_quantize(ref_ctx(), Tensor::empty({0, 5}), Fp8Group::tensor, m.fmt, m.act, wq,
                          ws);
    CHECK(same(s, ws));
  }
  // a tensor whose only non-NaN magnitude is inf: the scale inf, every finite code 0, inf NaN
  Tensor x = Tensor::empty({4, 9});
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = i % 3 ? 0.5f : -INFINITY;
  Input xin(x);
  uint32_t amax = 0;
  launch(q8::amax_kernel, dim3(1), dim3(32), xin.data(), x.numel(), &amax);
  CHECK(amax == 0x7f800000u);
}

TEST_CASE("emulated dequantiser equals the reference in every grouping") {
  for (const Fp8Group g : {Fp8Group::row_1x128, Fp8Group::col_128x1, Fp8Group::block_128x128,
                           Fp8Group::tensor})
    for (const Shape& sh : {Shape{300, 1100}, Shape{3, 7}}) {
      CAPTURE(int(g));
      CAPTURE(sh[0]);
      const int64_t M = sh[0], K = sh[1];
      const Tensor x = input(M, K, 31);
      Tensor q, s, want;
      ds::ops::fp8_quantize(ref_ctx(), x, g, ScaleFormat::fp32, true, q, s);
      ds::ops::fp8_dequantize(ref_ctx(), q, s, g, want);
      // the launcher's group sizes and scale columns (fp8_dequantize)
      int64_t gr = 1, gc = 128, SC = (K + 127) / 128;
      if (g == Fp8Group::col_128x1) gr = 128, gc = 1, SC = K;
      if (g == Fp8Group::block_128x128) gr = 128;
      if (g == Fp8Group::tensor) gr = M, gc = K, SC = 1;
      Guarded<uint8_t> qin(size_t(q.numel()));
      Guarded<float> sc(size_t(s.numel())), out(size_t(M * K));
      std::memcpy(qin.data(), q.raw(), q.nbytes());
      std::memcpy(sc.data(), s.raw(), s.nbytes());
      // rows wrapping over a grid of at most 2 rows; 1,100 columns over two 1,024-column chunks
      launch(q8::dequant_kernel, dim3(cdiv(K, 1024), unsigned(std::min<int64_t>(M, 2))),
             dim3(256), qin.data(), sc.data(), M, K, gr, gc, SC, out.data());
      CHECK(same_nan(out, want));
    }
}

TEST_CASE("emulated many-matrix 128x128 weight quantiser equals the reference") {
  check_many_matrix(50, [](const std::vector<q8::BlockEntry>& tab, int64_t total, bool ue8m0) {
    launch(q8::quant_blocks_multi_kernel, dim3(unsigned(total)), dim3(32, 8), tab.data(),
           int(tab.size()), ue8m0);
  });
}
