// Causal attention with and without SFT segments: optimized (blocked SGEMM) vs reference on
// odd shapes including several query blocks, packed segments == separate sequences, and
// dq/dk/dv vs finite differences in double.
#include "cpu/ref.hpp"
#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {
struct Shape5 { int64_t B, T, H, Dk, Dv; };

// Segment ids per batch row: contiguous runs of random lengths, or (scattered) alternating.
Tensor make_segments(int64_t B, int64_t T, bool scattered) {
  std::vector<int32_t> s(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b) {
    int32_t id = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (scattered) { s[size_t(b * T + t)] = int32_t((t * 7 / 3) % 3); continue; }
      if (t > 0 && urand(0, 1) < 0.08) ++id;
      s[size_t(b * T + t)] = id;
    }
  }
  return i32_from(s, {B, T});
}

void compare(const Shape5& s, const Tensor& seg) {
  Tensor q = rand_f32({s.B, s.T, s.H, s.Dk}, -2, 2), k = rand_f32({s.B, s.T, s.H, s.Dk}, -2, 2);
  Tensor v = rand_f32({s.B, s.T, s.H, s.Dv}), dout = rand_f32({s.B, s.T, s.H, s.Dv});
  const float scale = 1.0f / std::sqrt(float(s.Dk));
  Guarded o_r({s.B, s.T, s.H, s.Dv}), o_o({s.B, s.T, s.H, s.Dv});
  Guarded l_r({s.B, s.H, s.T}), l_o({s.B, s.H, s.T});
  attention_forward(ref_ctx(), q, k, v, seg, scale, o_r.t, l_r.t);
  attention_forward(opt_ctx(), q, k, v, seg, scale, o_o.t, l_o.t);
  INFO("B ", s.B, " T ", s.T, " H ", s.H, " Dk ", s.Dk, " Dv ", s.Dv, " seg ", seg.defined());
  CHECK(nmse(o_o.t, o_r.t) < 1e-11);
  CHECK(nmse(l_o.t, l_r.t) < 1e-12);
  CHECK((o_r.intact() && o_o.intact() && l_r.intact() && l_o.intact()));
  Guarded dq_r({s.B, s.T, s.H, s.Dk}), dk_r({s.B, s.T, s.H, s.Dk}), dv_r({s.B, s.T, s.H, s.Dv});
  Guarded dq_o({s.B, s.T, s.H, s.Dk}), dk_o({s.B, s.T, s.H, s.Dk}), dv_o({s.B, s.T, s.H, s.Dv});
  attention_backward(ref_ctx(), q, k, v, seg, scale, o_r.t, l_r.t, dout, dq_r.t, dk_r.t, dv_r.t);
  dk_o.t.f32()[0] = 123.0f;   // must be overwritten, not accumulated
  attention_backward(opt_ctx(), q, k, v, seg, scale, o_o.t, l_o.t, dout, dq_o.t, dk_o.t, dv_o.t);
  CHECK(nmse(dq_o.t, dq_r.t) < 1e-10);
  CHECK(nmse(dk_o.t, dk_r.t) < 1e-10);
  CHECK(nmse(dv_o.t, dv_r.t) < 1e-10);
  CHECK((dq_o.intact() && dk_o.intact() && dv_o.intact() && dq_r.intact()));
}
}  // namespace

TEST_CASE("attention: optimized == reference (fwd, lse, bwd), odd shapes, segments") {
  const Shape5 shapes[] = {{1, 1, 1, 3, 2}, {2, 17, 3, 8, 5}, {1, 130, 2, 16, 16},
                           {2, 300, 2, 24, 8}, {1, 257, 1, 64, 32}};
  for (const Shape5& s : shapes) {
    compare(s, Tensor());
    compare(s, make_segments(s.B, s.T, false));
    compare(s, make_segments(s.B, s.T, true));
  }
}

TEST_CASE("attention: packed segments equal separately computed sequences") {
  const int64_t T = 40, H = 2, D = 8, cut = 13;
  Tensor q = rand_f32({1, T, H, D}), k = rand_f32({1, T, H, D}), v = rand_f32({1, T, H, D});
  std::vector<int32_t> sv(T);
  for (int64_t t = 0; t < T; ++t) sv[size_t(t)] = t < cut ? 0 : 1;
  Tensor seg = i32_from(sv, {1, T}), out = Tensor::empty({1, T, H, D}),
         lse = Tensor::empty({1, H, T});
  attention_forward(opt_ctx(), q, k, v, seg, 0.3f, out, lse);
  // the second segment alone (rows cut..T-1) as its own batch entry
  const int64_t T2 = T - cut;
  Tensor q2 = Tensor::empty({1, T2, H, D}), k2 = Tensor::empty({1, T2, H, D}),
         v2 = Tensor::empty({1, T2, H, D});
  q2.copy_from(q.view({T, H, D}).slice0(cut, T).view({1, T2, H, D}));
  k2.copy_from(k.view({T, H, D}).slice0(cut, T).view({1, T2, H, D}));
  v2.copy_from(v.view({T, H, D}).slice0(cut, T).view({1, T2, H, D}));
  Tensor o2 = Tensor::empty({1, T2, H, D}), l2 = Tensor::empty({1, H, T2});
  attention_forward(ref_ctx(), q2, k2, v2, Tensor(), 0.3f, o2, l2);
  Tensor tail = out.view({T, H, D}).slice0(cut, T);
  CHECK(max_abs_diff(tail, o2) < 1e-5);
  // first row of every segment attends only to itself: output == its value row
  for (int64_t h = 0; h < H; ++h)
    for (int64_t e = 0; e < D; ++e)
      CHECK(out.f32()[(cut * H + h) * D + e] == doctest::Approx(v.f32()[(cut * H + h) * D + e]));
}

TEST_CASE("attention: dq, dk, dv vs finite differences (double), with and without segments") {
  const ref::AttnDims d{2, 6, 2, 3, 4};
  const double scale = 0.7;
  for (int use_seg = 0; use_seg < 2; ++use_seg) {
    std::vector<int32_t> seg = {0, 0, 1, 1, 1, 2, 5, 5, 5, 5, 6, 6};
    const int32_t* sp = use_seg ? seg.data() : nullptr;
    const size_t nq = size_t(d.B * d.T * d.H * d.Dk), nv = size_t(d.B * d.T * d.H * d.Dv);
    std::vector<double> q = rand_vec(nq, -2, 2), k = rand_vec(nq, -2, 2), v = rand_vec(nv);
    std::vector<double> w = rand_vec(nv), out(nv), lse(size_t(d.B * d.H * d.T));
    auto loss = [&] {
      std::vector<double> o(nv), l(lse.size());
      ref::attention_forward<double>(q.data(), k.data(), v.data(), sp, scale, o.data(), l.data(),
                                     d);
      return dot(o, w);
    };
    ref::attention_forward<double>(q.data(), k.data(), v.data(), sp, scale, out.data(), lse.data(),
                                   d);
    std::vector<double> dq(nq), dk(nq), dv(nv);
    ref::attention_backward<double>(q.data(), k.data(), v.data(), sp, scale, out.data(), lse.data(),
                                    w.data(), dq.data(), dk.data(), dv.data(), d);
    INFO("segments ", use_seg);
    grad_check(q, loss, dq, "attention dq");
    grad_check(k, loss, dk, "attention dk");
    grad_check(v, loss, dv, "attention dv");
  }
}

// q, k, v as BF16 codes (the GPU tensor-core kernels' operands): the CPU attends over the codes'
// values, so the results equal those of F32 inputs holding the same values, bit for bit, in
// both implementations; mixed dtypes are refused.
TEST_CASE("attention: BF16-code q, k, v == F32 inputs of the same values") {
  const int64_t B = 2, T = 37, H = 3, Dk = 16, Dv = 8;
  const Tensor seg = make_segments(B, T, false);
  auto codes_of = [](const Tensor& x) {
    Tensor c = Tensor::empty(x.shape(), DType::bf16);
    bf16_round(ref_ctx(), x, c);
    return c;
  };
  auto values_of = [](const Tensor& c) {
    Tensor f = Tensor::empty(c.shape());
    for (int64_t i = 0; i < c.numel(); ++i) f.f32()[i] = bf16_to_f32(c.data<uint16_t>()[i]);
    return f;
  };
  const Tensor qc = codes_of(rand_f32({B, T, H, Dk}, -2, 2));
  const Tensor kc = codes_of(rand_f32({B, T, H, Dk}, -2, 2));
  const Tensor vc = codes_of(rand_f32({B, T, H, Dv}));
  const Tensor q = values_of(qc), k = values_of(kc), v = values_of(vc);
  const Tensor dout = rand_f32({B, T, H, Dv});
  const float scale = 0.3f;
  for (const Context& c : {ref_ctx(), opt_ctx(2)}) {
    Tensor o0 = Tensor::empty({B, T, H, Dv}), l0 = Tensor::empty({B, H, T});
    Tensor o1 = Tensor::empty({B, T, H, Dv}), l1 = Tensor::empty({B, H, T});
    attention_forward(c, q, k, v, seg, scale, o0, l0);
    attention_forward(c, qc, kc, vc, seg, scale, o1, l1);
    CHECK(std::memcmp(o0.raw(), o1.raw(), o0.nbytes()) == 0);
    CHECK(std::memcmp(l0.raw(), l1.raw(), l0.nbytes()) == 0);
    Tensor dq0 = Tensor::empty(q.shape()), dk0 = Tensor::empty(k.shape());
    Tensor dv0 = Tensor::empty(v.shape());
    Tensor dq1 = Tensor::empty(q.shape()), dk1 = Tensor::empty(k.shape());
    Tensor dv1 = Tensor::empty(v.shape());
    attention_backward(c, q, k, v, seg, scale, o0, l0, dout, dq0, dk0, dv0);
    attention_backward(c, qc, kc, vc, seg, scale, o0, l0, dout, dq1, dk1, dv1);
    CHECK(std::memcmp(dq0.raw(), dq1.raw(), dq0.nbytes()) == 0);
    CHECK(std::memcmp(dk0.raw(), dk1.raw(), dk0.nbytes()) == 0);
    CHECK(std::memcmp(dv0.raw(), dv1.raw(), dv0.nbytes()) == 0);
    CHECK_THROWS_WITH_AS(attention_forward(c, q, kc, v, seg, scale, o1, l1),
                         doctest::Contains("all F32 or all BF16"), ds::Error);
  }
}

// Who writes BF16 q, k, v: only where asked (Context::attention_inputs) or, by default, where
// the GPU's tensor-core attention runs them; never on the CPU by default.
TEST_CASE("attention_bf16_inputs: the CPU keeps F32 unless forced") {
  Context c = opt_ctx();
  c.linear.mode = Precision::bf16;
  CHECK_FALSE(attention_bf16_inputs(c, 192, 128));
  c.attention_inputs = 1;
  CHECK(attention_bf16_inputs(c, 192, 128));
  c.attention_inputs = 0;
  CHECK_FALSE(attention_bf16_inputs(c, 192, 128));
}
