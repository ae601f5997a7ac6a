// The exact FP32 MLA decode of kernels/mla_decode_kernels.cuh run on the CPU by the host
// emulator (cuda_emu.hpp, cp.async as synchronous copies), as mla_latent_attention launches it
// for an F32 cache: the tiled split kernel (one split writing the output, or several writing
// partials that the combine kernel merges; 16-byte and 4-byte cache copies; one and two
// accumulator column groups), and the simple block-per-head kernel for widths past the tiled
// one's, against the CPU reference at the GPU test's bound (normalised squared error 1e-10)
// and every element within 1e-4 of the largest. Rows with a bad slot or length give zeros;
// head groups are partial; lengths of one key, of partial tiles and of whole splits.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "emu_buffers.hpp"
#include "kernels/mla_decode_kernels.cuh"
#include "moe_pairs_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::close_to;
using ds::test::emu_random;
using ds::test::EmuBuf;
using ds::test::ref_ctx;
using ds::test::cuda_emu::launch_dynamic;
namespace ml = ds::cuda::mla;

struct Case {
  int64_t N, H, R, Dr, S, L;
};

// The reference over rows with valid slots and lengths; rows with a bad one are zeros.
Tensor reference(const Tensor& ql, const Tensor& qp, const Tensor& ckv, const Tensor& kpe,
                 const std::vector<int32_t>& slot, const std::vector<int32_t>& len, float scale,
                 const Case& c) {
  Tensor out = Tensor::zeros({c.N, c.H, c.R});
  for (int64_t n = 0; n < c.N; ++n) {
    if (slot[size_t(n)] < 0 || slot[size_t(n)] >= c.S || len[size_t(n)] < 1 ||
        len[size_t(n)] > c.L)
      continue;
    Tensor s = Tensor::empty({1}, DType::i32), l = Tensor::empty({1}, DType::i32);
    s.i32()[0] = slot[size_t(n)];
    l.i32()[0] = len[size_t(n)];
    Tensor o = Tensor::empty({1, c.H, c.R});
    ds::ops::mla_latent_attention(ref_ctx(), ql.slice0(n, n + 1), qp.slice0(n, n + 1), ckv, kpe,
                                  s, l, scale, o);
    std::memcpy(out.f32() + n * c.H * c.R, o.f32(), o.nbytes());
  }
  return out;
}

// Runs the decode as the launcher does on a device of `sms` SMs (which sets the splits).
void check_case(const Case& c, int64_t sms, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const Tensor ql = emu_random({c.N, c.H, c.R}, rng), qp = emu_random({c.N, c.H, c.Dr}, rng);
  const Tensor ckv = emu_random({c.S, c.L, c.R}, rng), kpe = emu_random({c.S, c.L, c.Dr}, rng);
  // rows: every length class, then a bad slot and a bad length
  std::vector<int32_t> slot(size_t(c.N)), len(size_t(c.N));
  const int32_t lens[] = {int32_t(c.L), 1, int32_t(c.L / 2 + 3), 33};
  for (int64_t n = 0; n < c.N; ++n) {
    slot[size_t(n)] = int32_t((n * 3 + 1) % c.S);
    len[size_t(n)] = std::min<int32_t>(lens[n % 4], int32_t(c.L));
  }
  if (c.N > 4) slot[4] = -1;
  if (c.N > 5) len[5] = int32_t(c.L) + 1;
  const float scale = 1.0f / std::sqrt(float(c.R + c.Dr));
  const Tensor want = reference(ql, qp, ckv, kpe, slot, len, scale, c);
  EmuBuf out(size_t(want.nbytes()));
  out.poison();   // an unwritten element (a bad row's zeros) fails
  const ml::SplitPlan plan = ml::split_plan(c.N, c.H, c.R, c.Dr, c.L, sms);
  if (plan.DP > ml::kMaxDP) {   // the simple kernel: a block per (row, head)
    launch_dynamic(ml::mla_simple_kernel, dim3(unsigned(c.N * c.H)), dim3(128),
                   size_t(c.R) * sizeof(float), ql.f32(), qp.f32(), ckv.f32(), kpe.f32(),
                   slot.data(), len.data(), scale, out.f(), int(c.H), int(c.R), int(c.Dr),
                   int(c.S), int(c.L));
    CHECK(close_to(out.f(), want, 1e-10));
    CHECK(out.ok());
    return;
  }
  ml::MlaArgs a{};
  a.q_lat = ql.f32();
  a.q_pe = qp.f32();
  a.ckv = ckv.f32();
  a.kpe = kpe.f32();
  a.slot = slot.data();
  a.len = len.data();
  a.scale = scale;
  a.out = out.f();
  a.H = int(c.H);
  a.R = int(c.R);
  a.Dr = int(c.Dr);
  a.S = int(c.S);
  a.L = int(c.L);
  a.DP = int(plan.DP);
  a.CS = int(plan.CS);
  a.vec = c.R % 4 == 0 && c.Dr % 4 == 0;   // the buffers are 64-byte aligned
  a.KS = int(plan.KS);
  a.splits = int(plan.splits);
  const size_t npart = size_t(c.N * plan.splits * c.H);
  std::vector<float> po(npart * size_t(c.R), NAN), pm(npart, NAN), pl(npart, NAN);
  a.po = po.data();
  a.pm = pm.data();
  a.pl = pl.data();
  const dim3 grid(unsigned(c.N), unsigned((c.H + ml::kMH - 1) / ml::kMH), unsigned(plan.splits));
  auto* split = (c.R + 3) / 4 <= 128 ? ml::mla_split_kernel<1> : ml::mla_split_kernel<2>;
  launch_dynamic(split, grid, dim3(ml::kMT), plan.smem, a);
  if (plan.splits > 1)   // grid (N * H, column blocks of 128), splits floats of shared memory
    launch_dynamic(ml::mla_combine_kernel,
                   dim3(unsigned(c.N * c.H), unsigned((c.R + 127) / 128)), dim3(128),
                   size_t(plan.splits) * sizeof(float), a.po, a.pm, a.pl, out.f(), int(c.H),
                   int(c.R), int(plan.splits));
  CHECK(close_to(out.f(), want, 1e-10));
  CHECK(out.ok());
}

}  // namespace

TEST_CASE("emulated FP32 MLA decode equals the reference") {
  struct Run {
    Case c;
    int64_t sms, splits;   // the device's SMs, and the splits they give (checked)
  };
  const Run runs[] = {
      {{6, 20, 64, 16, 4, 100}, 1, 1},     // one split, 16-byte copies, a partial head group
      {{6, 20, 64, 16, 4, 100}, 16, 2},    // keys split in two, merged by the combine kernel
      {{3, 5, 30, 6, 2, 70}, 64, 2},       // 4-byte copies (R, Dr not multiples of 4)
      {{2, 17, 528, 16, 2, 40}, 1, 1},     // two accumulator column groups (R > 512)
      {{6, 3, 700, 8, 3, 9}, 1, 1},        // past the tiled kernel's width: the simple kernel
  };
  for (const Run& r : runs) {
    const Case& c = r.c;
    const std::string what = "N " + std::to_string(c.N) + " H " + std::to_string(c.H) + " R " +
                             std::to_string(c.R) + " Dr " + std::to_string(c.Dr) + " L " +
                             std::to_string(c.L) + " SMs " + std::to_string(r.sms);
    INFO(what);
    const ml::SplitPlan plan = ml::split_plan(c.N, c.H, c.R, c.Dr, c.L, r.sms);
    CHECK(plan.splits == r.splits);
    check_case(c, r.sms, 3);
  }
}
