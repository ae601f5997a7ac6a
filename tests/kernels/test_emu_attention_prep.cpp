// The wgmma attention's operand preparation (kernels/flash_attention_sm90_prep.cuh) run on the
// CPU by the host emulator (cuda_emu.hpp), bit for bit against the layout the kernels read:
// the transposed BF16 copies x^T (B, H, D, Tp) of a (B, T, H, D) tensor, F32 (rounded as
// ops::bf16_round rounds: RNE, ties, NaN, infinities, subnormals) and BF16 codes (copied), with
// zero rows past T, on T below, at and past a 64-row tile, head dims below, at and past a
// 64-column chunk (the 1b preset's 96 and V3's 192), several block sizes; and the fused dK/dV
// pass's query-stats table {lse, D}, {+inf, 0} past T. Outputs are filled with a pattern no
// expected value has before the kernels run (an unwritten element fails) and sit between
// guard bytes.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "emu_buffers.hpp"
#include "kernels/flash_attention_sm90_prep.cuh"
#include "moe_pairs_util.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
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
using ds::test::kBf16Specials;
using ds::test::ref_ctx;
using ds::test::cuda_emu::launch;
namespace fl = ds::cuda::flash;

struct Shape4 {
  int B, T, H, D;
};

int64_t padded(int T) { return (int64_t(T) + 63) / 64 * 64; }

// The expected x^T: codes[b, t, h, d] at ((b*H + h)*D + d)*Tp + t, zero for t >= T.
std::vector<uint16_t> transposed(const uint16_t* codes, const Shape4& s) {
  const int64_t Tp = padded(s.T);
  std::vector<uint16_t> want(static_cast<size_t>(int64_t(s.B) * s.H * s.D * Tp), 0);
  for (int b = 0; b < s.B; ++b)
    for (int t = 0; t < s.T; ++t)
      for (int h = 0; h < s.H; ++h)
        for (int d = 0; d < s.D; ++d)
          want[static_cast<size_t>(((int64_t(b) * s.H + h) * s.D + d) * Tp + t)] =
              codes[((int64_t(b) * s.T + t) * s.H + h) * s.D + d];
  return want;
}

// Runs to_bf16_t_kernel<Src> on `src` (B*T*H*D elements) into a patterned, guarded output and
// returns how many codes differ from `want`.
template <class Src>
int64_t run_transpose(const Src* src, const Shape4& s, unsigned threads,
                      const std::vector<uint16_t>& want) {
  const size_t n = size_t(s.B) * s.T * s.H * s.D;
  EmuBuf in(n * sizeof(Src), 0), out(want.size() * sizeof(uint16_t), 2);
  std::memcpy(in.ptr(), src, n * sizeof(Src));
  std::memset(out.ptr(), 0xA5, want.size() * sizeof(uint16_t));   // 0xA5A5: no expected code
  const dim3 grid(unsigned(padded(s.T) / 64), unsigned(s.B * s.H));
  launch(fl::to_bf16_t_kernel<Src>, grid, dim3(threads), static_cast<const Src*>(in.ptr()),
         out.u(), s.T, s.H, s.D, int(padded(s.T)));
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += out.u()[i] != want[i];
  return bad + (in.ok() && out.ok() ? 0 : 1);
}

}  // namespace

TEST_CASE("emulated transposed BF16 copies of attention operands equal the layout") {
  std::mt19937_64 rng(11);
  for (const Shape4& s : {Shape4{1, 64, 1, 64}, Shape4{2, 70, 3, 96}, Shape4{1, 5, 2, 192},
                          Shape4{2, 129, 1, 16}, Shape4{1, 64, 2, 128}})
    for (const unsigned threads : {256u, 96u}) {
      const std::string what = "B " + std::to_string(s.B) + " T " + std::to_string(s.T) +
                               " H " + std::to_string(s.H) + " D " + std::to_string(s.D) +
                               " threads " + std::to_string(threads);
      INFO(what);
      const int64_t n = int64_t(s.B) * s.T * s.H * s.D;
      Tensor x = emu_random({n}, rng, -3.f, 3.f);
      for (size_t k = 0; k < std::size(kBf16Specials); ++k)
        x.f32()[int64_t(k * 131) % n] = kBf16Specials[k];
      Tensor codes = Tensor::empty({n}, DType::bf16);
      ds::ops::bf16_round(ref_ctx(), x, codes);
      const std::vector<uint16_t> want = transposed(codes.data<uint16_t>(), s);
      // F32 sources: rounded to the reference's codes.
      CHECK(run_transpose<float>(x.f32(), s, threads, want) == 0);
      // BF16 sources: their codes copied (NaN codes here are quiet, which the copy keeps).
      CHECK(run_transpose<uint16_t>(codes.data<uint16_t>(), s, threads, want) == 0);
    }
}

TEST_CASE("emulated query-stats table holds {lse, D} and {+inf, 0} past T") {
  std::mt19937_64 rng(12);
  for (const int T : {1, 63, 64, 100}) {
    const std::string what = "T " + std::to_string(T);
    INFO(what);
    const int BH = 5;
    const int64_t Tp = padded(T), n = BH * Tp;
    const int64_t rows = BH, cols = T;
    Tensor lse = emu_random({rows, cols}, rng, -4.f, 9.f);
    Tensor D = emu_random({rows, cols}, rng, -1.f, 1.f);
    EmuBuf l(lse, 4), d(D, 4), qs(size_t(n) * 2 * sizeof(float), 0);
    qs.poison();
    launch(fl::pack_query_stats_kernel, dim3(unsigned((n + 127) / 128)), dim3(128), l.f(), d.f(),
           reinterpret_cast<float2*>(qs.ptr()), T, int(Tp), n);
    int64_t bad = 0;
    for (int64_t bh = 0; bh < BH; ++bh)
      for (int64_t t = 0; t < Tp; ++t) {
        const float* got = qs.f() + 2 * (bh * Tp + t);
        const float inf = std::numeric_limits<float>::infinity();
        const float want_l = t < T ? lse.f32()[bh * T + t] : inf;
        const float want_d = t < T ? D.f32()[bh * T + t] : 0.f;
        bad += std::memcmp(&got[0], &want_l, 4) != 0 || std::memcmp(&got[1], &want_d, 4) != 0;
      }
    CHECK(bad == 0);
    CHECK((l.ok() && d.ok() && qs.ok()));
  }
}
