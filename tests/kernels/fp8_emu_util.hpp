// What the host emulator's FP8 quantiser tests share (test_emu_fp8_quant.cpp, the kernels of
// kernels/fp8_quant_tiles.cuh; test_emu_fp8_groups.cpp, those of fp8_quant_groups.cuh): inputs
// whose groups span many magnitudes with zeros, NaN of both signs, infinities, subnormals and
// values that saturate; x between sentinels; the comparisons with the reference's outputs.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "ds/core/tensor.hpp"
#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"
#include "kernels/fp8_quant_math.cuh"
#include "moe_pairs_util.hpp"

namespace ds::test::fp8emu {

using cuda_emu::Guarded;
using cuda_emu::kGuard;
using ops::Fp8Group;
using ops::ScaleFormat;

// (M, K) values of magnitude 2^(e) varying by row band and 128-column block, with specials.
inline Tensor input(int64_t M, int64_t K, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  Tensor x = Tensor::empty({M, K});
  float* p = x.f32();
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < K; ++j)
      p[i * K + j] = float(u(rng) * std::ldexp(1.0, int(3 * ((j / 128) % 4) - 6 + i % 5)));
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 1e-40f, -3e-39f, 7e5f,
                            -1e7f};
  for (size_t t = 0; t < std::size(specials); ++t) {
    const int64_t at = int64_t(rng() % uint64_t(M * K));
    p[at] = specials[t];
  }
  // the largest finite value of the first 128x128 block in its last 16 rows (the last warp's)
  if (M > 120 && K > 3) p[120 * K + 3] = 3e7f;
  // a whole zero row group and, where there are 128 rows, a zero column group
  for (int64_t j = 0; j < std::min<int64_t>(K, 128); ++j) p[(M / 2) * K + j] = 0.0f;
  if (M >= 128 && K > 5)
    for (int64_t i = 0; i < 128; ++i) p[i * K + 5] = 0.0f;
  // a row group of FP32 subnormals (amax / 448 under FLT_MIN: a weight scale is raised to it)
  if (M > 1)
    for (int64_t j = 0; j < std::min<int64_t>(K, 128); ++j)
      p[(M - 1) * K + j] = j == 7 ? 1e-43f : (j % 3 == 0 ? -4e-44f : 0.0f);
  return x;
}

// x copied between sentinels (a large finite value: an out-of-range read changes an amax).
struct Input {
  Guarded<float> g;
  explicit Input(const Tensor& x) : g(size_t(x.numel()) + 2 * kGuard / sizeof(float)) {
    float* all = reinterpret_cast<float*>(g.mem);
    for (size_t i = 0; i < g.bytes() / sizeof(float); ++i) all[i] = 3e30f;
    std::memcpy(data(), x.f32(), size_t(x.numel()) * sizeof(float));
  }
  float* data() { return g.data() + kGuard / sizeof(float); }
};

template <class T>
bool same(Guarded<T>& got, const Tensor& want) {
  REQUIRE(size_t(want.numel()) == got.n);
  return std::memcmp(got.data(), want.raw(), got.n * sizeof(T)) == 0 && got.guards_intact();
}

// Codes equal with NaN codes (0x7f, 0xff) as NaN, or F32 values equal with NaN as NaN: a NaN
// the arithmetic made is the GPU's positive one (as the emulator models it) where the CPU's
// is negative or its operand's (the round trip of an element of a group whose scale is inf).
inline bool same_nan(Guarded<uint8_t>& got, const Tensor& want) {
  REQUIRE(size_t(want.numel()) == got.n);
  const uint8_t* w = want.data<uint8_t>();
  for (size_t i = 0; i < got.n; ++i) {
    const uint8_t g = got.data()[i];
    if (g != w[i] && !((g & 0x7f) == 0x7f && (w[i] & 0x7f) == 0x7f)) return false;
  }
  return got.guards_intact();
}
inline bool same_nan(Guarded<float>& got, const Tensor& want) {
  REQUIRE(size_t(want.numel()) == got.n);
  const float* w = want.f32();
  for (size_t i = 0; i < got.n; ++i) {
    const float g = got.data()[i];
    if (std::memcmp(&g, &w[i], 4) != 0 && !(std::isnan(g) && std::isnan(w[i]))) return false;
  }
  return got.guards_intact();
}

struct Mode {
  ScaleFormat fmt;
  bool act;
};
inline const Mode kModes[] = {{ScaleFormat::fp32, false}, {ScaleFormat::fp32, true},
                              {ScaleFormat::ue8m0, false}, {ScaleFormat::ue8m0, true}};

inline unsigned cdiv(int64_t a, int64_t b) { return unsigned((a + b - 1) / b); }

// The many-matrix 128x128 weight quantisers (kernels/fp8_quant_groups.cuh and the tile one
// of fp8_quant_tiles.cuh): matrices with partial blocks both ways, an exact block, one
// narrower than a warp's columns, a zero block (scale 1) and the inputs' specials; codes,
// transposed codes or both. run(table, blocks, ue8m0) launches the kernel over the table as
// fp8_quantize_blocks_multi does; each matrix must equal fp8_quantize(block_128x128) and its
// transpose, and an output not asked for stay untouched.
template <class Run>
void check_many_matrix(uint64_t seed, Run run) {
  const std::vector<Shape> shapes = {{272, 260}, {128, 128}, {16, 4}, {144, 392}};
  for (const ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0})
    for (int outputs = 1; outputs <= 3; ++outputs) {   // 1 codes, 2 transposed, 3 both
      CAPTURE(int(fmt));
      CAPTURE(outputs);
      const bool want_q = outputs & 1, want_t = outputs & 2;
      std::vector<Tensor> x;
      std::vector<std::unique_ptr<Input>> xin;
      std::vector<std::unique_ptr<Guarded<uint8_t>>> q, qt;
      std::vector<std::unique_ptr<Guarded<float>>> s, st;
      std::vector<cuda::fp8q::BlockEntry> tab;
      int64_t total = 0;
      for (size_t m = 0; m < shapes.size(); ++m) {
        const int64_t M = shapes[m][0], K = shapes[m][1];
        const int64_t SR = (M + 127) / 128, SC = (K + 127) / 128;
        x.push_back(input(M, K, seed + m));
        if (m == 1)
          for (int64_t i = 0; i < 128 * 128; ++i) x[m].f32()[i] = 0.0f;
        xin.push_back(std::make_unique<Input>(x[m]));
        q.push_back(std::make_unique<Guarded<uint8_t>>(size_t(M * K)));
        qt.push_back(std::make_unique<Guarded<uint8_t>>(size_t(M * K)));
        s.push_back(std::make_unique<Guarded<float>>(size_t(SR * SC)));
        st.push_back(std::make_unique<Guarded<float>>(size_t(SR * SC)));
        const cuda::Fp8BlockJob j{xin[m]->data(), M, K, want_q ? q[m]->data() : nullptr,
                                  want_q ? s[m]->data() : nullptr,
                                  want_t ? qt[m]->data() : nullptr,
                                  want_t ? st[m]->data() : nullptr};
        tab.push_back({j, SR, SC, total});
        total += SR * SC;
      }
      run(tab, total, fmt == ScaleFormat::ue8m0);
      for (size_t m = 0; m < shapes.size(); ++m) {
        CAPTURE(m);
        Tensor wq, ws, wqt = Tensor::empty({shapes[m][1], shapes[m][0]}, DType::u8), wst;
        ops::fp8_quantize(ref_ctx(), x[m], Fp8Group::block_128x128, fmt, false, wq, ws);
        wst = Tensor::empty({ws.size(1), ws.size(0)});
        ops::transpose(ref_ctx(), wq, wqt);
        ops::transpose(ref_ctx(), ws, wst);
        auto untouched = [](Guarded<uint8_t>& g) {
          return std::all_of(g.data(), g.data() + g.n, [](uint8_t b) { return b == 0xa5; });
        };
        if (want_q) {
          CHECK(same(*q[m], wq));
          CHECK(same(*s[m], ws));
        } else {
          CHECK(untouched(*q[m]));
        }
        if (want_t) {
          CHECK(same(*qt[m], wqt));
          CHECK(same(*st[m], wst));
        } else {
          CHECK(untouched(*qt[m]));
        }
      }
    }
}

}  // namespace ds::test::fp8emu
