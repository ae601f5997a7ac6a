// Inference-side MLA ops (ops::head_matmul, ops::mla_latent_attention, ops::set_rows): the
// optimised path against the reference on random inputs with odd shapes, mixed slots and
// visible lengths (including 1 and the full capacity), guard rows untouched; the reference
// against closed forms (one visible key returns that latent; uniform scores average) and the
// absorbed form against explicit MHA over materialised keys/values (spec §2.1 identities). A
// BF16 cache: both paths give exactly the F32-cache result over the widened values; set_rows
// in its three dtype forms (rounding ties to even); the dtype errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/core/error.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {

struct MlaCase {
  int64_t N, H, R, Dr, S, L;
  std::vector<int32_t> slot, len;
};

Tensor run_mla(const Context& ctx, const MlaCase& c, const Tensor& ql, const Tensor& qp,
               const Tensor& ckv, const Tensor& kpe, float scale, bool* guards_ok) {
  Guarded out({c.N, c.H, c.R});
  mla_latent_attention(ctx, ql, qp, ckv, kpe, i32_from(c.slot, {c.N}), i32_from(c.len, {c.N}),
                       scale, out.t);
  *guards_ok = out.intact();
  return out.t.clone();
}

// BF16 codes of an F32 tensor (RNE), and those codes widened back to F32.
Tensor to_bf16(const Tensor& x) {
  Tensor t = Tensor::empty(x.shape(), DType::bf16);
  for (int64_t i = 0; i < x.numel(); ++i) t.data<uint16_t>()[i] = f32_to_bf16(x.f32()[i]);
  return t;
}
Tensor widened(const Tensor& b) {
  Tensor t = Tensor::empty(b.shape());
  for (int64_t i = 0; i < b.numel(); ++i) t.f32()[i] = bf16_to_f32(b.data<uint16_t>()[i]);
  return t;
}

}  // namespace

TEST_CASE("mla_latent_attention: optimised == reference on odd shapes") {
  const std::vector<MlaCase> cases = {
      {1, 1, 3, 2, 1, 1, {0}, {1}},
      {5, 3, 7, 4, 2, 9, {1, 1, 1, 0, 0}, {3, 4, 5, 9, 1}},
      {37, 4, 32, 16, 3, 40, {}, {}},   // long chunk (several tiles), mixed slots
      {4, 2, 5, 6, 4, 13, {3, 0, 2, 1}, {13, 2, 7, 11}},
  };
  for (MlaCase c : cases) {
    if (c.slot.empty()) {
      for (int64_t n = 0; n < c.N; ++n) {
        c.slot.push_back(int32_t(n < 20 ? 2 : n < 30 ? 0 : 1));
        c.len.push_back(int32_t(1 + (n * 7) % c.L));
      }
    }
    Tensor ql = rand_f32({c.N, c.H, c.R}), qp = rand_f32({c.N, c.H, c.Dr});
    Tensor ckv = rand_f32({c.S, c.L, c.R}), kpe = rand_f32({c.S, c.L, c.Dr});
    bool g1 = false, g2 = false;
    Tensor a = run_mla(ref_ctx(), c, ql, qp, ckv, kpe, 0.37f, &g1);
    Tensor b = run_mla(opt_ctx(3), c, ql, qp, ckv, kpe, 0.37f, &g2);
    CHECK(g1);
    CHECK(g2);
    CHECK(max_abs_diff(a, b) < 2e-5);
    Tensor b1 = run_mla(opt_ctx(1), c, ql, qp, ckv, kpe, 0.37f, &g2);
    CHECK(max_abs_diff(b, b1) == 0.0);   // independent of the thread count
  }
}

TEST_CASE("mla_latent_attention: a BF16 cache == an F32 cache of the widened values") {
  const std::vector<MlaCase> cases = {
      {1, 1, 3, 2, 1, 1, {0}, {1}},
      {5, 3, 7, 4, 2, 9, {1, 1, 1, 0, 0}, {3, 4, 5, 9, 1}},
      {37, 4, 32, 16, 3, 40, {}, {}},
      {6, 16, 64, 16, 2, 70, {0, 1, 1, 1, 0, 1}, {70, 1, 33, 64, 65, 7}},
  };
  for (MlaCase c : cases) {
    if (c.slot.empty()) {
      for (int64_t n = 0; n < c.N; ++n) {
        c.slot.push_back(int32_t(n < 20 ? 2 : n < 30 ? 0 : 1));
        c.len.push_back(int32_t(1 + (n * 7) % c.L));
      }
    }
    INFO("N " << c.N << " H " << c.H << " R " << c.R << " Dr " << c.Dr);
    Tensor ql = rand_f32({c.N, c.H, c.R}, -2, 2), qp = rand_f32({c.N, c.H, c.Dr}, -2, 2);
    const Tensor ckv = to_bf16(rand_f32({c.S, c.L, c.R}));
    const Tensor kpe = to_bf16(rand_f32({c.S, c.L, c.Dr}));
    const Tensor ckv_w = widened(ckv), kpe_w = widened(kpe);
    bool g1 = false, g2 = false, g3 = false, g4 = false;
    Tensor ref_b = run_mla(ref_ctx(), c, ql, qp, ckv, kpe, 0.29f, &g1);
    Tensor ref_w = run_mla(ref_ctx(), c, ql, qp, ckv_w, kpe_w, 0.29f, &g2);
    Tensor opt_b = run_mla(opt_ctx(3), c, ql, qp, ckv, kpe, 0.29f, &g3);
    Tensor opt_w = run_mla(opt_ctx(3), c, ql, qp, ckv_w, kpe_w, 0.29f, &g4);
    CHECK((g1 && g2 && g3 && g4));
    CHECK(max_abs_diff(ref_b, ref_w) == 0.0);   // the same double arithmetic
    CHECK(max_abs_diff(opt_b, opt_w) == 0.0);   // the same SGEMMs on the same F32 values
    CHECK(max_abs_diff(opt_b, ref_b) < 2e-5);
  }
}

TEST_CASE("mla_latent_attention: cache dtype errors") {
  MlaCase c{1, 1, 4, 2, 1, 3, {0}, {2}};
  Tensor ql = rand_f32({1, 1, 4}), qp = rand_f32({1, 1, 2});
  Tensor ckv = rand_f32({1, 3, 4}), kpe = rand_f32({1, 3, 2});
  Tensor ckv_b = to_bf16(ckv), kpe_b = to_bf16(kpe);
  Tensor out = Tensor::empty({1, 1, 4});
  const Tensor slot = i32_from(c.slot, {1}), len = i32_from(c.len, {1});
  for (const Context& ctx : {ref_ctx(), opt_ctx()}) {
    CHECK_THROWS_WITH_AS(mla_latent_attention(ctx, ql, qp, ckv_b, kpe, slot, len, 1.f, out),
                         doctest::Contains("ckv (BF16) and kpe (F32) must have the same dtype"),
                         InternalError);
    CHECK_THROWS_WITH_AS(mla_latent_attention(ctx, ql, qp, ckv, kpe_b, slot, len, 1.f, out),
                         doctest::Contains("ckv (F32) and kpe (BF16) must have the same dtype"),
                         InternalError);
    Tensor ckv_i = Tensor::zeros({1, 3, 4}, DType::i32);
    Tensor kpe_i = Tensor::zeros({1, 3, 2}, DType::i32);
    CHECK_THROWS_WITH_AS(mla_latent_attention(ctx, ql, qp, ckv_i, kpe_i, slot, len, 1.f, out),
                         doctest::Contains("the cache (ckv, kpe) must be F32 or BF16 (got I32)"),
                         InternalError);
    Tensor ql_b = to_bf16(ql);
    CHECK_THROWS_WITH_AS(mla_latent_attention(ctx, ql_b, qp, ckv_b, kpe_b, slot, len, 1.f, out),
                         doctest::Contains("q_lat must be F32 (got BF16)"), InternalError);
    Tensor out_b = Tensor::empty({1, 1, 4}, DType::bf16);
    CHECK_THROWS_WITH_AS(mla_latent_attention(ctx, ql, qp, ckv_b, kpe_b, slot, len, 1.f, out_b),
                         doctest::Contains("out must be F32 (got BF16)"), InternalError);
  }
}

TEST_CASE("mla_latent_attention: closed forms") {
  MlaCase c{2, 2, 3, 2, 1, 4, {0, 0}, {1, 4}};
  Tensor ql = rand_f32({2, 2, 3}), qp = rand_f32({2, 2, 2});
  Tensor ckv = rand_f32({1, 4, 3}), kpe = rand_f32({1, 4, 2});
  bool ok = false;
  for (const Context& ctx : {ref_ctx(), opt_ctx(2)}) {
    // scale 0: uniform weights over the visible keys
    Tensor o = run_mla(ctx, c, ql, qp, ckv, kpe, 0.0f, &ok);
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t r = 0; r < 3; ++r) {
        CHECK(o.f32()[(0 * 2 + h) * 3 + r] == doctest::Approx(ckv.f32()[r]).epsilon(1e-6));
        double mean = 0;
        for (int64_t j = 0; j < 4; ++j) mean += ckv.f32()[j * 3 + r] / 4.0;
        CHECK(o.f32()[(1 * 2 + h) * 3 + r] == doctest::Approx(mean).epsilon(1e-5));
      }
  }
}

TEST_CASE("absorbed attention == explicit MHA over materialised keys and values") {
  // One sequence of T tokens, causal: k_h = [W^UK_h c ; k_pe], v_h = W^UV_h c.
  const int64_t T = 6, H = 3, R = 5, Dn = 4, Dr = 2, Dv = 3;
  const float scale = 0.41f;
  Tensor c = rand_f32({1, T, R}), kpe = rand_f32({1, T, Dr});
  Tensor wuk = rand_f32({H, Dn, R}), wuv = rand_f32({H, Dv, R});
  Tensor qn = rand_f32({T, H, Dn}), qp = rand_f32({T, H, Dr});
  const Context ctx = ref_ctx();
  // absorbed
  Tensor ql = Tensor::empty({T, H, R}), lat = Tensor::empty({T, H, R});
  head_matmul(ctx, qn, wuk, false, ql);
  std::vector<int32_t> slot(T, 0), len(T);
  for (int64_t t = 0; t < T; ++t) len[size_t(t)] = int32_t(t + 1);
  mla_latent_attention(ctx, ql, qp, c, kpe, i32_from(slot, {T}), i32_from(len, {T}), scale, lat);
  Tensor o = Tensor::empty({T, H, Dv});
  head_matmul(ctx, lat, wuv, true, o);
  // explicit: k_nope[t,h] = W^UK_h c_t, v[t,h] = W^UV_h c_t
  Tensor cc = c.view({T, 1, R}), cb = Tensor::empty({T, H, R});
  broadcast_heads(ctx, c.view({T, R}), cb);
  Tensor kn = Tensor::empty({T, H, Dn}), v = Tensor::empty({1, T, H, Dv});
  Tensor v3 = v.view({T, H, Dv});
  head_matmul(ctx, cb, wuk, true, kn);
  head_matmul(ctx, cb, wuv, true, v3);
  Tensor kpb = Tensor::empty({T, H, Dr});
  broadcast_heads(ctx, kpe.view({T, Dr}), kpb);
  Tensor q = Tensor::empty({1, T, H, Dn + Dr}), k = Tensor::empty({1, T, H, Dn + Dr});
  Tensor q3 = q.view({T, H, Dn + Dr}), k3 = k.view({T, H, Dn + Dr});
  concat_last(ctx, qn, qp, q3);
  concat_last(ctx, kn, kpb, k3);
  Tensor o2 = Tensor::empty({1, T, H, Dv}), lse = Tensor::empty({1, H, T});
  attention_forward(ctx, q, k, v, Tensor(), scale, o2, lse);
  CHECK(max_abs_diff(o, o2.view({T, H, Dv})) < 1e-5);
  (void)cc;
}

TEST_CASE("head_matmul: optimised == reference, both layouts") {
  for (auto [N, H, I, O] :
       std::vector<std::array<int64_t, 4>>{{1, 1, 1, 1}, {3, 5, 7, 2}, {17, 4, 32, 9}}) {
    Tensor x = rand_f32({N, H, I});
    for (bool tw : {false, true}) {
      Tensor w = tw ? rand_f32({H, O, I}) : rand_f32({H, I, O});
      Guarded a({N, H, O}), b({N, H, O});
      head_matmul(ref_ctx(), x, w, tw, a.t);
      head_matmul(opt_ctx(3), x, w, tw, b.t);
      CHECK(a.intact());
      CHECK(b.intact());
      CHECK(max_abs_diff(a.t, b.t) < 1e-5);
      // spot check one element against an explicit sum
      double acc = 0;
      for (int64_t i = 0; i < I; ++i)
        acc += double(x.f32()[(N - 1) * H * I + (H - 1) * I + i]) *
               (tw ? w.f32()[(H - 1) * O * I + (O - 1) * I + i]
                   : w.f32()[(H - 1) * I * O + i * O + (O - 1)]);
      CHECK(a.t.f32()[N * H * O - 1] == doctest::Approx(acc).epsilon(1e-5));
    }
  }
}

TEST_CASE("set_rows into a BF16 cache: copies and RNE rounding") {
  const float tie_down = 1.0f + std::ldexp(1.0f, -8);       // halfway 1 | 1+2^-7 -> 1 (even)
  const float tie_up = 1.0f + 3 * std::ldexp(1.0f, -8);     // halfway 1+2^-7 | 1+2^-6 -> up
  const float above = 1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20);   // -> 1+2^-7
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> vals = {tie_down, tie_up, above, -tie_up, 0.0f, -0.0f, inf, -inf,
                                   std::numeric_limits<float>::quiet_NaN(), 3.0e38f,
                                   1.0e-40f, -2.5f};
  const std::vector<uint16_t> want = {0x3f80, 0x3f82, 0x3f81, 0xbf82, 0x0000, 0x8000, 0x7f80,
                                      0xff80, 0x7fc0, 0x7f62, 0x0001, 0xc020};
  const int64_t C = 6, M = 2, Nd = 5;
  Tensor src = Tensor::empty({M, C});
  for (int64_t i = 0; i < M * C; ++i) src.f32()[i] = vals[size_t(i)];
  for (const Context& ctx : {ref_ctx(), opt_ctx(3)}) {
    // F32 -> BF16: rows 3 and 0 written, the others keep their sentinel codes
    Tensor dst = Tensor::empty({Nd, C}, DType::bf16);
    for (int64_t i = 0; i < Nd * C; ++i) dst.data<uint16_t>()[i] = 0xabcd;
    set_rows(ctx, src, i32_from({3, 0}, {M}), dst);
    for (int64_t r = 0; r < Nd; ++r)
      for (int64_t c = 0; c < C; ++c) {
        const uint16_t got = dst.data<uint16_t>()[r * C + c];
        const int64_t m = r == 3 ? 0 : r == 0 ? 1 : -1;
        if (m < 0) {
          CHECK(got == 0xabcd);
        } else {
          const float v = src.f32()[m * C + c];
          CHECK(got == want[size_t(m * C + c)]);
          CHECK(got == f32_to_bf16(v));
        }
      }
    // BF16 -> BF16: a bit copy (NaN payloads included)
    Tensor bsrc = to_bf16(src);
    bsrc.data<uint16_t>()[1] = 0x7fa5;   // a signalling-NaN pattern, copied as is
    Tensor bdst = Tensor::zeros({Nd, C}, DType::bf16);
    set_rows(ctx, bsrc, i32_from({4, 2}, {M}), bdst);
    CHECK(std::memcmp(bdst.data<uint16_t>() + 4 * C, bsrc.data<uint16_t>(), C * 2) == 0);
    CHECK(std::memcmp(bdst.data<uint16_t>() + 2 * C, bsrc.data<uint16_t>() + C, C * 2) == 0);
    for (int64_t r : {0, 1, 3})
      for (int64_t c = 0; c < C; ++c) CHECK(bdst.data<uint16_t>()[r * C + c] == 0);
  }
}

TEST_CASE("set_rows dtype errors") {
  Tensor f = rand_f32({2, 3}), fd = Tensor::zeros({4, 3});
  Tensor b = Tensor::zeros({2, 3}, DType::bf16), bd = Tensor::zeros({4, 3}, DType::bf16);
  Tensor i = Tensor::zeros({2, 3}, DType::i32);
  const Tensor rows = i32_from({1, 2}, {2});
  CHECK_THROWS_WITH_AS(set_rows(opt_ctx(), b, rows, fd),
                       doctest::Contains("set_rows: src BF16 -> dst F32 not supported"),
                       InternalError);
  CHECK_THROWS_WITH_AS(set_rows(opt_ctx(), i, rows, bd),
                       doctest::Contains("set_rows: src I32 -> dst BF16 not supported"),
                       InternalError);
  CHECK_NOTHROW(set_rows(opt_ctx(), f, rows, bd));
  CHECK_NOTHROW(set_rows(opt_ctx(), b, rows, bd));
  CHECK_NOTHROW(set_rows(opt_ctx(), f, rows, fd));
}

TEST_CASE("set_rows writes exactly the named rows") {
  Tensor dst = Tensor::zeros({6, 3});
  Tensor src = rand_f32({2, 3});
  set_rows(opt_ctx(), src, i32_from({4, 1}, {2}), dst);
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t c = 0; c < 3; ++c) {
      const float want = r == 4 ? src.f32()[c] : r == 1 ? src.f32()[3 + c] : 0.0f;
      CHECK(dst.f32()[r * 3 + c] == want);
    }
  CHECK_THROWS(set_rows(opt_ctx(), src, i32_from({4, 6}, {2}), dst));
}
