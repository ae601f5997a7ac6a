// The head-layout kernels of kernels/head_layout_kernels.cuh run on the CPU by the host
// emulator (cuda_emu.hpp) against the CPU reference ops, bit for bit: split and concat along
// the last dim, one head broadcast to H and its backward's sum over heads, and MLA's key/value
// split with its backward (F32 and BF16-code outputs), each with float4 and scalar elements
// and 32- and 64-bit indices (the launcher's two index types), on grids that loop. Outputs sit
// between guard bytes; scalar variants run on buffers 4 bytes off alignment.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "emu_buffers.hpp"
#include "kernels/head_layout_kernels.cuh"
#include "moe_pairs_util.hpp"

#include <random>
#include <string>

#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::bit_mismatches;
using ds::test::code_mismatches;
using ds::test::emu_random;
using ds::test::EmuBuf;
using ds::test::ref_ctx;
using ds::test::cuda_emu::launch;
namespace el = ds::cuda::elem;

struct Dims {
  int64_t N, H, Dn, Dr, Dv;
};

template <class VT>
VT* as(EmuBuf& b) {
  return reinterpret_cast<VT*>(b.ptr());
}

// Every layout kernel with elements VT (float or float4) and indices I, widths in VT units.
template <class VT, class I>
void check_layouts(const Dims& d, uint64_t seed) {
  constexpr int64_t V = sizeof(VT) / sizeof(float);
  const int64_t N = d.N, H = d.H, Dn = d.Dn, Dr = d.Dr, Dv = d.Dv;
  const size_t skew = V == 4 ? 0 : 4;
  const dim3 grid(3), block(64);   // the kernels take any block size; 192 threads loop
  std::mt19937_64 rng(seed);
  // split (N, H, Dn+Dv) into (N, H, Dn) and (N, H, Dv), and concat back
  const Tensor kv = emu_random({N, H, Dn + Dv}, rng);
  Tensor wa = Tensor::empty({N, H, Dn}), wb = Tensor::empty({N, H, Dv});
  ds::ops::split_last(ref_ctx(), kv, wa, wb);
  EmuBuf x(kv, skew), a(size_t(wa.nbytes()), skew), b(size_t(wb.nbytes()), skew);
  launch(el::split_concat_kernel<VT, I, true>, grid, block, as<VT>(x), as<VT>(a), as<VT>(b),
         I(N * H), I(Dn / V), I(Dv / V));
  CHECK(bit_mismatches(a.f(), wa.f32(), wa.numel()) == 0);
  CHECK(bit_mismatches(b.f(), wb.f32(), wb.numel()) == 0);
  EmuBuf back(size_t(kv.nbytes()), skew);
  launch(el::split_concat_kernel<VT, I, false>, grid, block, as<VT>(back), as<VT>(a), as<VT>(b),
         I(N * H), I(Dn / V), I(Dv / V));
  Tensor wx = Tensor::empty(kv.shape());
  ds::ops::concat_last(ref_ctx(), wa, wb, wx);
  CHECK(bit_mismatches(back.f(), wx.f32(), wx.numel()) == 0);
  // one head broadcast to H, and the heads summed (the reference's order)
  const Tensor krot = emu_random({N, Dr}, rng);
  Tensor wbc = Tensor::empty({N, H, Dr});
  ds::ops::broadcast_heads(ref_ctx(), krot, wbc);
  EmuBuf kr(krot, skew), bc(size_t(wbc.nbytes()), skew);
  launch(el::broadcast_heads_kernel<VT, I>, grid, block, as<VT>(kr), as<VT>(bc), I(N), I(H),
         I(Dr / V));
  CHECK(bit_mismatches(bc.f(), wbc.f32(), wbc.numel()) == 0);
  const Tensor dout = emu_random({N, H, Dr}, rng);
  Tensor wsum = Tensor::empty({N, Dr});
  ds::ops::sum_heads(ref_ctx(), dout, wsum);
  EmuBuf dob(dout, skew), dx(size_t(wsum.nbytes()), skew);
  launch(el::sum_heads_kernel<VT, I>, grid, block, as<VT>(dob), as<VT>(dx), I(N), I(H),
         I(Dr / V));
  CHECK(bit_mismatches(dx.f(), wsum.f32(), wsum.numel()) == 0);
  CHECK((x.ok() && a.ok() && b.ok() && back.ok() && kr.ok() && bc.ok() && dob.ok() && dx.ok()));
  // MLA's k = [kv[:Dn] | k_rot], v = kv[Dn:], and its backward, as F32 or BF16 codes
  const Tensor dk = emu_random({N, H, Dn + Dr}, rng), dv = emu_random({N, H, Dv}, rng);
  for (const bool codes : {false, true}) {
    CAPTURE(codes);
    const DType t = codes ? DType::bf16 : DType::f32;
    const size_t esz = codes ? 2 : 4, cskew = codes && V == 1 ? 2 : skew;
    Tensor wk = Tensor::empty({N, H, Dn + Dr}, t), wv = Tensor::empty({N, H, Dv}, t);
    ds::ops::mla_kv_split(ref_ctx(), kv, krot, wk, wv);
    EmuBuf k(size_t(wk.numel()) * esz, cskew), v(size_t(wv.numel()) * esz, cskew);
    auto* split = codes ? el::mla_kv_split_kernel<VT, I, true>
                        : el::mla_kv_split_kernel<VT, I, false>;
    launch(split, grid, block, as<const VT>(x), as<const VT>(kr), k.ptr(), v.ptr(), I(N), I(H),
           I(Dn / V), I(Dr / V), I(Dv / V));
    Tensor wdkv = Tensor::empty({N, H, Dn + Dv}, t), wdkr = Tensor::empty({N, Dr});
    ds::ops::mla_kv_split_backward(ref_ctx(), dk, dv, wdkv, wdkr);
    EmuBuf dkb(dk, skew), dvb(dv, skew), dkv(size_t(wdkv.numel()) * esz, cskew);
    EmuBuf dkr(size_t(wdkr.nbytes()), skew);
    auto* bwd = codes ? el::mla_kv_split_bwd_kernel<VT, I, true>
                      : el::mla_kv_split_bwd_kernel<VT, I, false>;
    launch(bwd, grid, block, as<const VT>(dkb), as<const VT>(dvb), dkv.ptr(), as<VT>(dkr), I(N),
           I(H), I(Dn / V), I(Dr / V), I(Dv / V));
    if (codes) {
      CHECK(code_mismatches(k.u(), wk.data<uint16_t>(), wk.numel()) == 0);
      CHECK(code_mismatches(v.u(), wv.data<uint16_t>(), wv.numel()) == 0);
      CHECK(code_mismatches(dkv.u(), wdkv.data<uint16_t>(), wdkv.numel()) == 0);
    } else {
      CHECK(bit_mismatches(k.f(), wk.f32(), wk.numel()) == 0);
      CHECK(bit_mismatches(v.f(), wv.f32(), wv.numel()) == 0);
      CHECK(bit_mismatches(dkv.f(), wdkv.f32(), wdkv.numel()) == 0);
    }
    CHECK(bit_mismatches(dkr.f(), wdkr.f32(), wdkr.numel()) == 0);
    CHECK((k.ok() && v.ok() && dkv.ok() && dkr.ok()));
  }
}

template <class VT>
void check_both_indices(const Dims& d, uint64_t seed) {
  {
    INFO("32-bit indices");
    check_layouts<VT, uint32_t>(d, seed);
  }
  {
    INFO("64-bit indices");
    check_layouts<VT, int64_t>(d, seed + 1);
  }
}

}  // namespace

TEST_CASE("emulated head-layout kernels equal the reference") {
  // widths that are multiples of 4 (both element types), odd ones (scalar), one head, and
  // more elements than the grid's 192 threads
  for (const Dims& d : {Dims{5, 3, 16, 8, 12}, Dims{2, 1, 4, 4, 8}, Dims{7, 4, 32, 16, 24}}) {
    const std::string what = "N " + std::to_string(d.N) + " H " + std::to_string(d.H);
    INFO(what);
    check_both_indices<float4>(d, 10);
    check_both_indices<float>(d, 20);
  }
  check_both_indices<float>(Dims{4, 2, 5, 3, 7}, 30);
  check_both_indices<float>(Dims{3, 5, 1, 1, 1}, 40);
}
