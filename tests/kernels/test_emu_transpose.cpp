// The GEMM path's layout kernels of kernels/transpose_kernels.cuh run on the CPU by the host
// emulator (cuda_emu.hpp) against the CPU reference ops, bit for bit: the tiled transpose of
// 1-, 2- and 4-byte elements (U8 codes, BF16 codes, F32) on shapes with partial tiles both
// ways, one row, one column, and more row tiles than grid rows (they wrap), and the F32 <->
// BF16 code conversions (RNE with NaN, infinities, ties and subnormals; exact widening).
// Outputs sit between guard bytes.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "emu_buffers.hpp"
#include "kernels/transpose_kernels.cuh"
#include "moe_pairs_util.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "ds/core/dtype.hpp"
#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"

namespace {

using ds::DType;
using ds::Shape;
using ds::Tensor;
using ds::test::bit_mismatches;
using ds::test::code_mismatches;
using ds::test::emu_random;
using ds::test::EmuBuf;
using ds::test::kBf16Specials;
using ds::test::ref_ctx;
using ds::test::cuda_emu::launch;
namespace xp = ds::cuda::xpose;

// A (M, K) tensor of dtype t with random bytes (every bit pattern: NaN F32 values included,
// which the transpose must move as they are).
Tensor random_bytes(int64_t M, int64_t K, DType t, std::mt19937_64& rng) {
  Tensor x = Tensor::empty({M, K}, t);
  auto* p = static_cast<uint8_t*>(x.raw());
  for (size_t i = 0; i < x.nbytes(); ++i) p[i] = uint8_t(rng());
  return x;
}

template <class T>
bool transposes(const Tensor& x, unsigned grid_rows) {
  const int64_t M = x.size(0), K = x.size(1);
  Tensor want = Tensor::empty({K, M}, x.dtype());
  ds::ops::transpose(ref_ctx(), x, want);
  EmuBuf in(x, 0), out(x.nbytes(), 0);
  const unsigned tiles_m = unsigned((M + xp::kTile - 1) / xp::kTile);
  const dim3 grid(unsigned((K + xp::kTile - 1) / xp::kTile), std::min(tiles_m, grid_rows));
  launch(xp::transpose_kernel<T>, grid, dim3(xp::kTile, xp::kRowsPerPass),
         static_cast<const T*>(in.ptr()), static_cast<T*>(out.ptr()), M, K);
  return std::memcmp(out.ptr(), want.raw(), want.nbytes()) == 0 && out.ok() && in.ok();
}

}  // namespace

TEST_CASE("emulated tiled transpose equals the reference for 1-, 2- and 4-byte elements") {
  std::mt19937_64 rng(1);
  for (const Shape& sh : {Shape{45, 70}, Shape{1, 33}, Shape{100, 3}, Shape{64, 64}})
    for (const unsigned grid_rows : {1u, 65535u}) {   // 1: every row tile wraps over grid.y
      const std::string what = std::to_string(sh[0]) + "x" + std::to_string(sh[1]) +
                               " grid rows " + std::to_string(grid_rows);
      INFO(what);
      CHECK(transposes<uint8_t>(random_bytes(sh[0], sh[1], DType::u8, rng), grid_rows));
      CHECK(transposes<uint16_t>(random_bytes(sh[0], sh[1], DType::bf16, rng), grid_rows));
      CHECK(transposes<uint32_t>(random_bytes(sh[0], sh[1], DType::f32, rng), grid_rows));
    }
}

TEST_CASE("emulated F32 <-> BF16 code conversions equal the reference") {
  std::mt19937_64 rng(2);
  const int64_t n = 1001;
  Tensor x = emu_random({n}, rng, -5.f, 5.f);
  for (size_t t = 0; t < std::size(kBf16Specials); ++t) x.f32()[int64_t(t) * 97] = kBf16Specials[t];
  Tensor codes = Tensor::empty({n}, DType::bf16), widened = Tensor::empty({n});
  ds::ops::bf16_round(ref_ctx(), x, codes);
  for (int64_t i = 0; i < n; ++i) widened.f32()[i] = ds::bf16_to_f32(codes.data<uint16_t>()[i]);
  EmuBuf xb(x, 4), c(size_t(n) * 2, 2), f(size_t(n) * 4, 4);
  launch(xp::to_bf16_kernel, dim3(3), dim3(64), xb.f(), c.u(), n);
  CHECK(code_mismatches(c.u(), codes.data<uint16_t>(), n) == 0);
  launch(xp::from_bf16_kernel, dim3(2), dim3(96), c.u(), f.f(), n);
  CHECK(bit_mismatches(f.f(), widened.f32(), n) == 0);
  CHECK((xb.ok() && c.ok() && f.ok()));
}
