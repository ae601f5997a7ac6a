// RMSNorm, interleaved RoPE and the head layout helpers: optimized vs reference on odd shapes
// with guard rows, gradients vs finite differences in double, and semantic checks (RoPE pairs
// (2i, 2i+1), identity at position 0, norm preservation, backward = inverse rotation).
#include <cstring>
#include <limits>

#include "cpu/ref.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

TEST_CASE("rmsnorm: optimized == reference; dg accumulates; guards intact") {
  for (int64_t N : {1, 3, 17, 130})
    for (int64_t C : {1, 7, 64, 513}) {
      Tensor x = rand_f32({N, C}, -3, 3), g = rand_f32({C}), dy = rand_f32({N, C});
      Guarded yr({N, C}), yo({N, C}), rr({N}), ro({N});
      rmsnorm_forward(ref_ctx(), x, g, 1e-6f, yr.t, rr.t);
      rmsnorm_forward(opt_ctx(), x, g, 1e-6f, yo.t, ro.t);
      INFO("N ", N, " C ", C);
      CHECK(nmse(yo.t, yr.t) < 1e-12);
      CHECK(nmse(ro.t, rr.t) < 1e-12);
      CHECK((yr.intact() && yo.intact() && rr.intact() && ro.intact()));
      Tensor dg0 = rand_f32({C});
      Guarded dxr({N, C}), dxo({N, C});
      Tensor dgr = dg0.clone(), dgo = dg0.clone();
      rmsnorm_backward(ref_ctx(), x, g, rr.t, dy, dxr.t, dgr);
      rmsnorm_backward(opt_ctx(), x, g, rr.t, dy, dxo.t, dgo);
      if (C > 1) {
        CHECK(nmse(dxo.t, dxr.t) < 1e-10);
      } else {   // dx = r g dy (1 - r^2 x^2) ~ 0: cancellation, compare against r*|g*dy|
        double bound = 0;
        for (int64_t n = 0; n < N; ++n)
          bound = std::max(bound, std::fabs(double(rr.t.f32()[n]) * g.f32()[0] * dy.f32()[n]));
        CHECK(max_abs_diff(dxo.t, dxr.t) <= 1e-5 * bound);
      }
      CHECK(nmse(dgo, dgr) < 1e-10);
      CHECK((dxr.intact() && dxo.intact()));
    }
}

TEST_CASE("rmsnorm: y has unit RMS when g = 1") {
  Tensor x = rand_f32({5, 33}, -4, 4), g = Tensor::empty({33}), y = Tensor::empty({5, 33});
  Tensor r = Tensor::empty({5});
  for (int i = 0; i < 33; ++i) g.f32()[i] = 1.0f;
  rmsnorm_forward(opt_ctx(), x, g, 0.0f, y, r);
  for (int n = 0; n < 5; ++n) {
    double ss = 0;
    for (int c = 0; c < 33; ++c) ss += double(y.f32()[n * 33 + c]) * y.f32()[n * 33 + c];
    CHECK(std::sqrt(ss / 33) == doctest::Approx(1.0).epsilon(1e-6));
  }
}

TEST_CASE("rmsnorm: dx and dg vs finite differences (double)") {
  const int64_t N = 3, C = 6;
  std::vector<double> x = rand_vec(N * C), g = rand_vec(C), w = rand_vec(N * C);
  auto loss = [&] {
    std::vector<double> y(N * C), r(N);
    ref::rmsnorm_forward<double>(x.data(), g.data(), 1e-3, y.data(), r.data(), N, C);
    return dot(y, w);
  };
  std::vector<double> y(N * C), r(N), dx(N * C), dg(C, 0.0);
  ref::rmsnorm_forward<double>(x.data(), g.data(), 1e-3, y.data(), r.data(), N, C);
  ref::rmsnorm_backward<double>(x.data(), g.data(), r.data(), w.data(), dx.data(), dg.data(), N, C);
  grad_check(x, loss, dx, "rmsnorm dx");
  grad_check(g, loss, dg, "rmsnorm dg");
}

TEST_CASE("rope: optimized == reference; interleaved pairs; position 0 is identity") {
  for (int64_t N : {1, 5, 130})
    for (int64_t H : {1, 3})
      for (int64_t Dr : {2, 8, 64}) {
        Tensor x = rand_f32({N, H, Dr}), fr = rand_f32({Dr / 2}, 0, 1);
        std::vector<int32_t> p(static_cast<size_t>(N));
        for (int64_t n = 0; n < N; ++n) p[size_t(n)] = int32_t((n * 37) % 5000);
        Tensor pos = i32_from(p, {N});
        Guarded r({N, H, Dr}), o({N, H, Dr});
        rope_forward(ref_ctx(), x, pos, fr, r.t);
        rope_forward(opt_ctx(), x, pos, fr, o.t);
        CHECK(nmse(o.t, r.t) < 1e-12);
        CHECK((r.intact() && o.intact()));
        Tensor back = Tensor::empty({N, H, Dr});
        rope_backward(opt_ctx(), o.t, pos, fr, back);
        CHECK(max_abs_diff(back, x) < 1e-5);   // rotation then inverse rotation
      }
  // explicit: pair (2i, 2i+1) rotated by pos * f_i; pos 0 leaves x unchanged
  Tensor x = f32_from({1, 0, 0, 1}, {2, 1, 4}), fr = f32_from({0.5, 0.25}, {2});
  Tensor pos = i32_from({0, 2}, {2}), out = Tensor::empty({2, 1, 4});
  rope_forward(opt_ctx(), x, pos, fr, out);
  const float* o = out.f32();
  CHECK(o[0] == 1.0f);
  CHECK(o[1] == 0.0f);
  x = f32_from({1, 0, 0, 1, 1, 0, 0, 1}, {2, 1, 4});
  rope_forward(opt_ctx(), x, pos, fr, out);
  CHECK(o[4] == doctest::Approx(std::cos(1.0)));   // angle 2 * 0.5 = 1
  CHECK(o[5] == doctest::Approx(std::sin(1.0)));
  CHECK(o[6] == doctest::Approx(-std::sin(0.5)));  // angle 2 * 0.25; (0,1) -> (-s, c)
  CHECK(o[7] == doctest::Approx(std::cos(0.5)));
}

TEST_CASE("rope: backward vs finite differences (double)") {
  const int64_t N = 3, H = 2, Dr = 6;
  std::vector<double> x = rand_vec(N * H * Dr), w = rand_vec(N * H * Dr);
  std::vector<float> fr = {1.0f, 0.3f, 0.01f};
  std::vector<int32_t> pos = {0, 5, 11};
  auto loss = [&] {
    std::vector<double> y(x.size());
    ref::rope<double>(x.data(), pos.data(), fr.data(), y.data(), N, H, Dr, +1);
    return dot(y, w);
  };
  std::vector<double> dx(x.size());
  ref::rope<double>(w.data(), pos.data(), fr.data(), dx.data(), N, H, Dr, -1);
  grad_check(x, loss, dx, "rope dx");
}

TEST_CASE("rope_tail_inplace == split, rope, concat (bit for bit), and leaves the head alone") {
  const int64_t N = 9, H = 3, Dn = 5 * 2, Dr = 6;
  const std::vector<float> fr = {1.0f, 0.3f, 0.01f};
  Tensor freqs = Tensor::empty({3}), pos = Tensor::empty({N}, DType::i32);
  std::copy(fr.begin(), fr.end(), freqs.f32());
  for (int64_t n = 0; n < N; ++n) pos.i32()[n] = int32_t(7 * n + 1);
  for (const Context& c : {opt_ctx(), ref_ctx()})
    for (int dir : {+1, -1}) {
      CAPTURE(dir);
      const Tensor x = rand_f32({N, H, Dn + Dr});
      Tensor a = Tensor::empty({N, H, Dn}), b = Tensor::empty({N, H, Dr});
      Tensor r = Tensor::empty({N, H, Dr}), want = Tensor::empty({N, H, Dn + Dr});
      split_last(c, x, a, b);
      if (dir > 0) rope_forward(c, b, pos, freqs, r);
      else rope_backward(c, b, pos, freqs, r);
      concat_last(c, a, r, want);
      Tensor got = x.clone();
      rope_tail_inplace(c, got, pos, freqs, dir);
      CHECK(max_abs_diff(got, want) == 0);
      CHECK(max_abs_diff(got, x) > 0);
    }
  Tensor odd = rand_f32({2, 1, 5});   // 6 rotated elements of 5
  CHECK_THROWS_AS(rope_tail_inplace(opt_ctx(), odd, pos.slice0(0, 2), freqs, 1), ds::InternalError);
}

// The rotation written as BF16 codes (MLA's q for the attention, its gradient for q_b_proj):
// bit for bit the split, the rope of the tails, the concatenation and bf16_round (the
// composition rope_tail_inplace is checked against above, not the op's own path), x untouched,
// with NaN and inf in the head part and in the tail, both directions, both implementations;
// bad operands refused.
TEST_CASE("rope_tail_codes == rope_tail_inplace, then bf16_round; x unchanged") {
  const int64_t N = 7, H = 3, D = 16, Dr = 6;
  const std::vector<float> fr = {1.0f, 0.3f, 0.01f};
  Tensor freqs = Tensor::empty({3}), pos = Tensor::empty({N}, DType::i32);
  std::copy(fr.begin(), fr.end(), freqs.f32());
  for (int64_t n = 0; n < N; ++n) pos.i32()[n] = int32_t(5 * n + 2);
  Tensor x = rand_f32({N, H, D});
  x.f32()[3] = std::numeric_limits<float>::infinity();   // head part of row (0, 0)
  x.f32()[D * 4 + D - 1] = std::nanf("");                 // tail of row (1, 1)
  for (const Context& c : {opt_ctx(), ref_ctx()})
    for (int dir : {+1, -1}) {
      CAPTURE(dir);
      Tensor a = Tensor::empty({N, H, D - Dr}), b = Tensor::empty({N, H, Dr});
      Tensor r = Tensor::empty({N, H, Dr}), t = Tensor::empty({N, H, D});
      split_last(c, x, a, b);
      if (dir > 0) rope_forward(c, b, pos, freqs, r);
      else rope_backward(c, b, pos, freqs, r);
      concat_last(c, a, r, t);
      Tensor want = Tensor::empty({N, H, D}, DType::bf16);
      bf16_round(c, t, want);
      const Tensor x0 = x.clone();
      Tensor got = Tensor::empty({N, H, D}, DType::bf16);
      rope_tail_codes(c, x, pos, freqs, dir, got);
      CHECK(std::memcmp(got.raw(), want.raw(), got.nbytes()) == 0);
      CHECK(std::memcmp(x.raw(), x0.raw(), x.nbytes()) == 0);
    }
  Tensor f32out = Tensor::empty({N, H, D}), short_out = Tensor::empty({N, H, D - 2}, DType::bf16);
  CHECK_THROWS_WITH_AS(rope_tail_codes(opt_ctx(), x, pos, freqs, 1, f32out),
                       doctest::Contains("out must be BF16"), ds::Error);
  CHECK_THROWS_AS(rope_tail_codes(opt_ctx(), x, pos, freqs, 1, short_out), ds::Error);
  Tensor codes = Tensor::empty({N, H, D}, DType::bf16);
  CHECK_THROWS_WITH_AS(rope_tail_codes(opt_ctx(), x, pos, freqs, 2, codes),
                       doctest::Contains("dir must be"), ds::Error);
}

TEST_CASE("split_last / concat_last / broadcast_heads / sum_heads") {
  for (int64_t N : {1, 17})
    for (int64_t A : {1, 128})
      for (int64_t B : {3, 64}) {
        Tensor x = rand_f32({N, 2, A + B});
        Guarded a({N, 2, A}), b({N, 2, B}), ar({N, 2, A}), br({N, 2, B});
        split_last(opt_ctx(), x, a.t, b.t);
        split_last(ref_ctx(), x, ar.t, br.t);
        CHECK(max_abs_diff(a.t, ar.t) == 0);
        CHECK(max_abs_diff(b.t, br.t) == 0);
        CHECK(a.t.f32()[A - 1] == x.f32()[A - 1]);
        CHECK(b.t.f32()[0] == x.f32()[A]);
        Guarded y({N, 2, A + B});
        concat_last(opt_ctx(), a.t, b.t, y.t);
        CHECK(max_abs_diff(y.t, x) == 0);
        CHECK((a.intact() && b.intact() && y.intact()));
      }
  Tensor x = rand_f32({5, 7});
  Guarded o({5, 3, 7}), s({5, 7}), sr({5, 7});
  broadcast_heads(opt_ctx(), x, o.t);
  for (int64_t n = 0; n < 5; ++n)
    for (int64_t h = 0; h < 3; ++h) CHECK(o.t.f32()[(n * 3 + h) * 7 + 2] == x.f32()[n * 7 + 2]);
  Tensor d = rand_f32({5, 3, 7});
  sum_heads(opt_ctx(), d, s.t);
  sum_heads(ref_ctx(), d, sr.t);
  CHECK(max_abs_diff(s.t, sr.t) == 0);
  CHECK(s.t.f32()[8] ==
        doctest::Approx(d.f32()[(1 * 3 + 0) * 7 + 1] + d.f32()[(1 * 3 + 1) * 7 + 1] +
                        d.f32()[(1 * 3 + 2) * 7 + 1]));
  CHECK((o.intact() && s.intact()));
}

// mla_kv_split: the values of split_last, broadcast_heads and concat_last (forward), of
// split_last, sum_heads and concat_last (backward), bit for bit, for the reference and the
// optimised loops; dkv as BF16 codes equals bf16_round of the F32 dkv.
TEST_CASE(
    "mla_kv_split == split, broadcast, concat (bit for bit); backward == split, sum, concat") {
  const int64_t N = 9, H = 5, Dn = 12, Dr = 6, Dv = 10;
  const Tensor kv = rand_f32({N, H, Dn + Dv}), krot = rand_f32({N, Dr});
  const Tensor dk = rand_f32({N, H, Dn + Dr}), dv = rand_f32({N, H, Dv});
  for (const Context& c : {ref_ctx(), opt_ctx(2)}) {
    Tensor kn = Tensor::empty({N, H, Dn}), kp = Tensor::empty({N, H, Dr});
    Tensor want_k = Tensor::empty({N, H, Dn + Dr}), want_v = Tensor::empty({N, H, Dv});
    split_last(c, kv, kn, want_v);
    broadcast_heads(c, krot, kp);
    concat_last(c, kn, kp, want_k);
    Tensor k = Tensor::empty({N, H, Dn + Dr}), v = Tensor::empty({N, H, Dv});
    mla_kv_split(c, kv, krot, k, v);
    CHECK(std::memcmp(k.raw(), want_k.raw(), k.nbytes()) == 0);
    CHECK(std::memcmp(v.raw(), want_v.raw(), v.nbytes()) == 0);

    Tensor dkn = Tensor::empty({N, H, Dn}), dkp = Tensor::empty({N, H, Dr});
    Tensor want_dkv = Tensor::empty({N, H, Dn + Dv}), want_dkr = Tensor::empty({N, Dr});
    split_last(c, dk, dkn, dkp);
    sum_heads(c, dkp, want_dkr);
    concat_last(c, dkn, dv, want_dkv);
    Tensor dkv = Tensor::empty({N, H, Dn + Dv}), dkr = Tensor::empty({N, Dr});
    mla_kv_split_backward(c, dk, dv, dkv, dkr);
    CHECK(std::memcmp(dkv.raw(), want_dkv.raw(), dkv.nbytes()) == 0);
    CHECK(std::memcmp(dkr.raw(), want_dkr.raw(), dkr.nbytes()) == 0);
    Tensor codes = Tensor::empty({N, H, Dn + Dv}, DType::bf16), want_codes = codes.clone();
    mla_kv_split_backward(c, dk, dv, codes, dkr);
    bf16_round(c, want_dkv, want_codes);
    CHECK(std::memcmp(codes.raw(), want_codes.raw(), codes.nbytes()) == 0);
    // k and v as BF16 codes (the attention's operands): bf16_round of the F32 k and v
    Tensor kc = Tensor::empty({N, H, Dn + Dr}, DType::bf16), vc = Tensor::empty({N, H, Dv},
                                                                                 DType::bf16);
    mla_kv_split(c, kv, krot, kc, vc);
    Tensor want_kc = kc.clone(), want_vc = vc.clone();
    bf16_round(c, want_k, want_kc);
    bf16_round(c, want_v, want_vc);
    CHECK(std::memcmp(kc.raw(), want_kc.raw(), kc.nbytes()) == 0);
    CHECK(std::memcmp(vc.raw(), want_vc.raw(), vc.nbytes()) == 0);
    Tensor vf = Tensor::empty({N, H, Dv});   // one F32, one BF16: refused
    CHECK_THROWS_WITH_AS(mla_kv_split(c, kv, krot, kc, vf), doctest::Contains("all F32 or all"),
                         ds::Error);
  }
  Tensor k = Tensor::empty({N, H, Dn + Dr + 1}), v = Tensor::empty({N, H, Dv});
  CHECK_THROWS_WITH_AS(mla_kv_split(opt_ctx(), kv, krot, k, v), doctest::Contains("do not fit"),
                       ds::Error);
}

// A BF16 y: the codes of the F32 y (bf16_round), bit for bit, and the same rstd.
TEST_CASE("rmsnorm_forward with a BF16 y == bf16_round of the F32 y") {
  for (const Context& c : {ref_ctx(), opt_ctx(2)}) {
    const int64_t N = 11, C = 40;
    const Tensor x = rand_f32({N, C}, -3, 3), g = rand_f32({C});
    Tensor y = Tensor::empty({N, C}), r = Tensor::empty({N});
    Tensor yc = Tensor::empty({N, C}, DType::bf16), rc = Tensor::empty({N});
    rmsnorm_forward(c, x, g, 1e-6f, y, r);
    rmsnorm_forward(c, x, g, 1e-6f, yc, rc);
    Tensor want = Tensor::empty({N, C}, DType::bf16);
    bf16_round(c, y, want);
    CHECK(std::memcmp(yc.raw(), want.raw(), want.nbytes()) == 0);
    CHECK(std::memcmp(rc.raw(), r.raw(), r.nbytes()) == 0);
  }
}


// The residual add fused into the norm (model::Block): add then the norm, bit for bit, in
// both implementations, with F32 and BF16 y, h in a buffer of its own and in place over x;
// the backward's residual gradient likewise, with res apart and res == dx.
TEST_CASE("add_rmsnorm_forward == add, rmsnorm_forward; rmsnorm_backward_add == backward, add") {
  const int64_t N = 13, C = 44;
  const Tensor x = rand_f32({N, C}, -3, 3), a = rand_f32({N, C}, -2, 2), g = rand_f32({C});
  const Tensor dy = rand_f32({N, C}), res = rand_f32({N, C}), dg0 = rand_f32({C});
  for (const Context& c : {ref_ctx(), opt_ctx(2)}) {
    for (DType yt : {DType::f32, DType::bf16}) {
      CAPTURE(int(yt));
      Tensor want_h = Tensor::empty({N, C}), want_y = Tensor::empty({N, C}, yt);
      Tensor want_r = Tensor::empty({N});
      add(c, x, a, want_h);
      rmsnorm_forward(c, want_h, g, 1e-6f, want_y, want_r);
      Tensor h = Tensor::empty({N, C}), y = Tensor::empty({N, C}, yt), r = Tensor::empty({N});
      add_rmsnorm_forward(c, x, a, g, 1e-6f, h, y, r);
      CHECK(std::memcmp(h.raw(), want_h.raw(), h.nbytes()) == 0);
      CHECK(std::memcmp(y.raw(), want_y.raw(), y.nbytes()) == 0);
      CHECK(std::memcmp(r.raw(), want_r.raw(), r.nbytes()) == 0);
      Tensor xh = x.clone();   // h over x
      y = Tensor::empty({N, C}, yt);
      add_rmsnorm_forward(c, xh, a, g, 1e-6f, xh, y, r);
      CHECK(std::memcmp(xh.raw(), want_h.raw(), h.nbytes()) == 0);
      CHECK(std::memcmp(y.raw(), want_y.raw(), y.nbytes()) == 0);
    }
    Tensor rstd = Tensor::empty({N}), y = Tensor::empty({N, C});
    rmsnorm_forward(c, x, g, 1e-6f, y, rstd);
    Tensor t = Tensor::empty({N, C}), want_dx = Tensor::empty({N, C}), want_dg = dg0.clone();
    rmsnorm_backward(c, x, g, rstd, dy, t, want_dg);
    add(c, res, t, want_dx);
    Tensor dx = Tensor::empty({N, C}), dg = dg0.clone();
    rmsnorm_backward_add(c, x, g, rstd, dy, res, dx, dg);
    CHECK(std::memcmp(dx.raw(), want_dx.raw(), dx.nbytes()) == 0);
    CHECK(std::memcmp(dg.raw(), want_dg.raw(), dg.nbytes()) == 0);
    Tensor inplace = res.clone();   // res == dx
    dg = dg0.clone();
    rmsnorm_backward_add(c, x, g, rstd, dy, inplace, inplace, dg);
    CHECK(std::memcmp(inplace.raw(), want_dx.raw(), dx.nbytes()) == 0);
    Tensor dyc = dy.clone();   // dx over dy: refused
    CHECK_THROWS_WITH_AS(rmsnorm_backward_add(c, x, g, rstd, dyc, res, dyc, dg),
                         doctest::Contains("must not overlap"), ds::Error);
  }
}

// The norms' backward writing a Linear's BF16 gradient operand (model::Block, MLA's q path):
// a BF16 dx holds the codes of the F32 dx, and rmsnorm_backward_add's dx_codes those of its
// F32 dx, bit for bit, with dg unchanged; NaN and inf rows included; the codes' guard rows
// intact; bad code tensors refused with the operand named.
TEST_CASE("rmsnorm backward: BF16 dx and dx_codes are the codes of the F32 dx") {
  const int64_t N = 11, C = 36;
  const Tensor x = rand_f32({N, C}, -3, 3), g = rand_f32({C}), res = rand_f32({N, C});
  Tensor dy = rand_f32({N, C});
  dy.f32()[2 * C + 5] = std::numeric_limits<float>::infinity();
  dy.f32()[7 * C + 1] = std::nanf("");
  const Tensor dg0 = rand_f32({C});
  auto codes_of = [](const Context& c, const Tensor& f) {
    Tensor out = Tensor::empty(f.shape(), DType::bf16);
    bf16_round(c, f, out);
    return out;
  };
  auto same = [](const Tensor& a, const Tensor& b) {
    return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
  };
  // BF16 guard rows: sentinel codes around the rows the op writes
  auto guarded_codes = [&](Tensor& full) {
    full = Tensor::empty({N + 2, C}, DType::bf16);
    for (int64_t i = 0; i < full.numel(); ++i) full.data<uint16_t>()[i] = 0x7bcd;
    return full.slice0(1, N + 1);
  };
  auto guards_intact = [&](const Tensor& full) {
    for (int64_t i = 0; i < C; ++i)
      if (full.data<uint16_t>()[i] != 0x7bcd || full.data<uint16_t>()[(N + 1) * C + i] != 0x7bcd)
        return false;
    return true;
  };
  for (const Context& c : {ref_ctx(), opt_ctx(2)}) {
    Tensor rstd = Tensor::empty({N}), y = Tensor::empty({N, C});
    rmsnorm_forward(c, x, g, 1e-6f, y, rstd);
    Tensor dxf = Tensor::empty({N, C}), dgf = dg0.clone();
    rmsnorm_backward(c, x, g, rstd, dy, dxf, dgf);
    Tensor full, dxb = guarded_codes(full), dgb = dg0.clone();
    rmsnorm_backward(c, x, g, rstd, dy, dxb, dgb);
    CHECK(same(dxb, codes_of(c, dxf)));
    CHECK(same(dgb, dgf));
    CHECK(guards_intact(full));

    Tensor dxa = Tensor::empty({N, C}), dga = dg0.clone();
    rmsnorm_backward_add(c, x, g, rstd, dy, res, dxa, dga);
    Tensor dx2 = Tensor::empty({N, C}), dg2 = dg0.clone(), full2, codes = guarded_codes(full2);
    rmsnorm_backward_add(c, x, g, rstd, dy, res, dx2, dg2, &codes);
    CHECK(same(dx2, dxa));
    CHECK(same(dg2, dga));
    CHECK(same(codes, codes_of(c, dxa)));
    CHECK(guards_intact(full2));
    Tensor inplace = res.clone(), dg3 = dg0.clone(), codes3 = Tensor::empty({N, C}, DType::bf16);
    rmsnorm_backward_add(c, x, g, rstd, dy, inplace, inplace, dg3, &codes3);   // res == dx
    CHECK(same(codes3, codes_of(c, dxa)));

    Tensor f32codes = Tensor::empty({N, C}), short_codes = Tensor::empty({N - 1, C}, DType::bf16);
    CHECK_THROWS_WITH_AS(rmsnorm_backward_add(c, x, g, rstd, dy, res, dx2, dg2, &f32codes),
                         doctest::Contains("dx_codes must be BF16"), ds::Error);
    CHECK_THROWS_AS(rmsnorm_backward_add(c, x, g, rstd, dy, res, dx2, dg2, &short_codes),
                    ds::Error);
    Tensor i32dx = Tensor::empty({N, C}, DType::i32);
    CHECK_THROWS_WITH_AS(rmsnorm_backward(c, x, g, rstd, dy, i32dx, dg2),
                         doctest::Contains("dx must be F32 or BF16"), ds::Error);
  }
}
