// SwiGLU's kernels (kernels/swiglu_kernels.cuh: ops::swiglu_* on the GPU) run on the CPU by
// the host emulator (cuda_emu.hpp: a fiber per CUDA thread) against the CPU reference
// (double): the flat forward and backward over two tensors and the row kernels over packed
// [gate | up] rows, F32 outputs within the GPU test's 1e-12 normalised error (FP32 with expf
// against double), BF16-code outputs bit for bit the rounding of the F32 ones, packed inputs
// as F32 or BF16 codes (widened exactly: the reference's results on their values); float4 and
// scalar paths (the launchers' rules: aligned16 / out_aligned, packed_vec), tails of 1-3
// elements, rows shorter than a warp and longer than the 256-thread block (row_lg), fewer
// blocks than work (the grid-stride loops); outputs between guard bytes.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "kernels/swiglu_kernels.cuh"

#include <random>
#include <string>

#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"
#include "emu_buffers.hpp"
#include "moe_pairs_util.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::EmuBuf;
using ds::test::emu_random;
using ds::test::nmse;
using ds::test::ref_ctx;
using ds::test::rounding_mismatches;
using ds::test::cuda_emu::launch;
namespace sw = ds::cuda::swiglu;
namespace ew = ds::cuda::ew;

void check_flat(int64_t n, size_t skew, uint64_t seed) {
  const std::string L = "swiglu n=" + std::to_string(n) + " skew " + std::to_string(skew);
  INFO(L);
  std::mt19937_64 rng(seed);
  const Tensor gate = emu_random({n}, rng, -6.f, 6.f), up = emu_random({n}, rng),
               dout = emu_random({n}, rng);
  Tensor out = Tensor::empty({n}), dgate = Tensor::empty({n}), dup = Tensor::empty({n});
  ds::ops::swiglu_forward(ref_ctx(), gate, up, out);
  ds::ops::swiglu_backward(ref_ctx(), gate, up, dout, dgate, dup);

  EmuBuf g(gate, skew), u(up, skew), d(dout, skew), o(size_t(n) * 4, skew),
      dg(size_t(n) * 4, skew), du(size_t(n) * 4, skew), oc(size_t(n) * 2, skew),
      dgc(size_t(n) * 2, skew), duc(size_t(n) * 2, skew);
  const bool vec = ew::aligned16(g.f()) && ew::aligned16(u.f()) && ew::out_aligned(o.f(), false);
  CHECK(vec == (skew == 0));
  const bool vec_codes = vec && ew::out_aligned(oc.u(), true);
  const dim3 grid(2), block(unsigned(ew::kThreads));
  const float *gp = g.f(), *up_ = u.f(), *dp = d.f();
  launch(sw::swiglu_fwd_kernel<false>, grid, block, gp, up_, o.ptr(), n, vec);
  launch(sw::swiglu_fwd_kernel<true>, grid, block, gp, up_, oc.ptr(), n, vec_codes);
  launch(sw::swiglu_bwd_kernel<false>, grid, block, gp, up_, dp, dg.ptr(), du.ptr(), n, vec);
  launch(sw::swiglu_bwd_kernel<true>, grid, block, gp, up_, dp, dgc.ptr(), duc.ptr(), n,
         vec_codes);
  CHECK((o.ok() && dg.ok() && du.ok() && oc.ok() && dgc.ok() && duc.ok()));
  CHECK(nmse(o.f(), out.f32(), n) <= 1e-12);
  CHECK(nmse(dg.f(), dgate.f32(), n) <= 1e-12);
  CHECK(nmse(du.f(), dup.f32(), n) <= 1e-12);
  CHECK(rounding_mismatches(oc.u(), o.f(), n) == 0);
  CHECK(rounding_mismatches(dgc.u(), dg.f(), n) == 0);
  CHECK(rounding_mismatches(duc.u(), du.f(), n) == 0);
}

template <bool CODES, bool VEC>
void run_packed(bool bf16_in, EmuBuf& h, EmuBuf& d, EmuBuf& out, EmuBuf& dh, int64_t M,
                int64_t I) {
  const int lg = ew::row_lg(VEC ? I / 4 : I);
  const dim3 grid(2), block(unsigned(ew::kThreads));
  const void *hp = h.ptr(), *dp = d.ptr();
  if (bf16_in) {
    launch(sw::swiglu_packed_fwd_kernel<CODES, VEC, true>, grid, block, hp, out.ptr(), M, I, lg);
    launch(sw::swiglu_packed_bwd_kernel<CODES, VEC, true>, grid, block, hp, dp, dh.ptr(), M, I,
           lg);
  } else {
    launch(sw::swiglu_packed_fwd_kernel<CODES, VEC, false>, grid, block, hp, out.ptr(), M, I,
           lg);
    launch(sw::swiglu_packed_bwd_kernel<CODES, VEC, false>, grid, block, hp, dp, dh.ptr(), M, I,
           lg);
  }
}

// Codes of a tensor's values (the packed ops' BF16 inputs).
Tensor to_codes(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), DType::bf16);
  for (int64_t i = 0; i < t.numel(); ++i) c.data<uint16_t>()[i] = ds::f32_to_bf16(t.f32()[i]);
  return c;
}

void check_packed(int64_t M, int64_t I, bool bf16_in, size_t skew, uint64_t seed) {
  const std::string L = "swiglu packed M=" + std::to_string(M) + " I=" + std::to_string(I) +
                        (bf16_in ? " bf16 inputs" : " f32 inputs") + " skew " +
                        std::to_string(skew);
  INFO(L);
  std::mt19937_64 rng(seed);
  Tensor h = emu_random({M, 2 * I}, rng, -6.f, 6.f), d = emu_random({M, I}, rng);
  if (bf16_in) {
    h = to_codes(h);
    d = to_codes(d);
  }
  Tensor out = Tensor::empty({M, I}), dh = Tensor::empty({M, 2 * I});
  ds::ops::swiglu_packed_forward(ref_ctx(), h, out);
  ds::ops::swiglu_packed_backward(ref_ctx(), h, d, dh);

  EmuBuf bh(h, skew), bd(d, skew), o(size_t(M * I) * 4, skew), g(size_t(M * I) * 8, skew),
      oc(size_t(M * I) * 2, skew), gc(size_t(M * I) * 4, skew);
  const bool vec = sw::packed_vec(I, bf16_in, {bh.ptr(), bd.ptr()}, o.ptr(), false);
  CHECK(vec == (I % 4 == 0 && skew == 0));
  const bool vec_codes = sw::packed_vec(I, bf16_in, {bh.ptr(), bd.ptr()}, oc.ptr(), true);
  if (vec) run_packed<false, true>(bf16_in, bh, bd, o, g, M, I);
  else run_packed<false, false>(bf16_in, bh, bd, o, g, M, I);
  if (vec_codes) run_packed<true, true>(bf16_in, bh, bd, oc, gc, M, I);
  else run_packed<true, false>(bf16_in, bh, bd, oc, gc, M, I);
  CHECK((o.ok() && g.ok() && oc.ok() && gc.ok()));
  CHECK(nmse(o.f(), out.f32(), M * I) <= 1e-12);
  CHECK(nmse(g.f(), dh.f32(), 2 * M * I) <= 1e-12);
  CHECK(rounding_mismatches(oc.u(), o.f(), M * I) == 0);
  CHECK(rounding_mismatches(gc.u(), g.f(), 2 * M * I) == 0);
}

}  // namespace

TEST_CASE("emulated swiglu kernels match the CPU reference") {
  uint64_t seed = 1;
  for (size_t skew : {size_t(0), size_t(4)})
    for (int64_t n : {1, 7, 1026, 4099}) check_flat(n, skew, seed++);
}

TEST_CASE("emulated packed swiglu kernels match the CPU reference") {
  uint64_t seed = 100;
  for (bool bf16_in : {false, true})
    for (size_t skew : {size_t(0), size_t(4)}) {
      check_packed(9, 3, bf16_in, skew, seed++);      // 4-thread row groups, 64 rows a block
      check_packed(5, 64, bf16_in, skew, seed++);
      check_packed(3, 1100, bf16_in, skew, seed++);   // rows longer than the block
    }
}
