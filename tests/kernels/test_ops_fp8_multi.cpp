// GPU vs CPU reference of fp8_quantize_transposed (the Wgrad operands' 128x1 groups written
// transposed) and of fp8_quantize_blocks_multi (kernels/fp8_quant.cu's one-launch 128x128
// quantiser of the routed experts' weights): codes and scales, and the transposed codes and
// scales, must be bit-identical to the CPU op (which loops fp8_quantize and transpose) for
// odd shapes (partial blocks both ways, a single row, exact 128 multiples), a zero block
// (scale 1), NaN, -NaN and an infinity (NaN codes compared as NaN), magnitudes from 2^-11 to
// 2^11, both scale formats, either output pair alone, U8 and F8_E4M3 codes; guard bytes
// around every GPU output. The tile quantisers (DS_FP8_QUANT=tiles) through the ops that use
// them. Also the experts' fused BF16 gather (gather_rows_bf16).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gpu_harness.hpp"
#include "kernels/fp8_quant.cuh"

namespace ds::gpu_test {
namespace {

using ops::Fp8Group;
using ops::ScaleFormat;

Tensor weights(const Shape& s) {
  Tensor x = rand_f32(s);
  const int64_t K = s[1];
  for (int64_t i = 0; i < x.numel(); ++i)
    x.f32()[i] = std::ldexp(x.f32()[i], int(((i / K) / 128 * 5 + (i % K) / 128 * 3) % 23) - 11);
  return x;
}

bool same_bytes(const Tensor& gpu_t, const Tensor& cpu_t) {
  const Tensor h = download(gpu_t);
  return h.numel() == cpu_t.numel() &&
         std::memcmp(h.raw(), cpu_t.raw(), size_t(h.numel()) * dtype_size(h.dtype())) == 0;
}

// E4M3 codes equal, NaN codes (0x7f, 0xff) compared as NaN: the sign of the NaN that inf / inf
// gives is the CPU's business (see test_ops_fp8.cpp).
bool same_codes(const Tensor& gpu_t, const Tensor& cpu_t) {
  const Tensor h = download(gpu_t);
  if (h.numel() != cpu_t.numel()) return false;
  const auto* g = static_cast<const uint8_t*>(h.raw());
  const auto* c = static_cast<const uint8_t*>(cpu_t.raw());
  for (int64_t i = 0; i < h.numel(); ++i)
    if (g[i] != c[i] && !((g[i] & 0x7f) == 0x7f && (c[i] & 0x7f) == 0x7f)) return false;
  return true;
}

// BF16 codes or F32 values equal bit for bit, NaN compared as NaN: the GPU's arithmetic gives
// its canonical NaN (0x7fffffff) where the CPU keeps an operand's NaN.
bool same_bf16(const Tensor& gpu_t, const Tensor& cpu_t) {
  const Tensor h = download(gpu_t);
  if (h.numel() != cpu_t.numel() || h.dtype() != cpu_t.dtype()) return false;
  for (int64_t i = 0; i < h.numel(); ++i) {
    if (h.dtype() == DType::bf16) {
      const uint16_t g = h.data<uint16_t>()[i], c = cpu_t.data<uint16_t>()[i];
      const bool gn = (g & 0x7f80) == 0x7f80 && (g & 0x7f),
                 cn = (c & 0x7f80) == 0x7f80 && (c & 0x7f);
      if (g != c && !(gn && cn)) return false;
    } else {
      const float g = h.f32()[i], c = cpu_t.f32()[i];
      if (std::memcmp(&g, &c, 4) != 0 && !(std::isnan(g) && std::isnan(c))) return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("fp8 grouped: quantize_blocks_multi on the GPU equals the CPU bit for bit") {
  const std::vector<Shape> shapes = {{200, 300}, {128, 256}, {1, 77}, {257, 129}, {384, 128}};
  for (const ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0})
    for (int outputs = 1; outputs <= 3; ++outputs) {   // 1 codes, 2 transposed, 3 both
      CAPTURE(int(fmt));
      CAPTURE(outputs);
      const bool want_q = outputs & 1, want_t = outputs & 2;
      const DType code = outputs == 2 ? DType::f8_e4m3 : DType::u8;   // either code dtype
      Arena ar;
      std::vector<Tensor> x, gx, q, s, qt, st, gq, gs, gqt, gst;
      for (const Shape& sh : shapes) {
        x.push_back(weights(sh));
        gx.push_back(ar.upload(x.back()));
        const Shape ss = ops::fp8_scale_shape(sh[0], sh[1], Fp8Group::block_128x128);
        const Shape sts = ops::fp8_scale_shape(sh[1], sh[0], Fp8Group::block_128x128);
        q.push_back(Tensor::empty(sh, code));
        s.push_back(Tensor::empty(ss));
        qt.push_back(Tensor::empty({sh[1], sh[0]}, code));
        st.push_back(Tensor::empty(sts));
        gq.push_back(ar.empty(sh, code));
        gs.push_back(ar.empty(ss));
        gqt.push_back(ar.empty({sh[1], sh[0]}, code));
        gst.push_back(ar.empty(sts));
      }
      for (int64_t i = 0; i < 128; ++i)   // a zero 128x128 block in matrix 1
        for (int64_t j = 128; j < 256; ++j) x[1].f32()[i * 256 + j] = 0;
      gx[1].copy_from(x[1]);
      x[0].f32()[5 * 300 + 7] = NAN;            // matrix 0: a NaN in block (0, 0),
      x[0].f32()[150 * 300 + 140] = -NAN;       // a -NaN in block (1, 1),
      x[0].f32()[10 * 300 + 260] = INFINITY;    // an infinity in block (0, 2) (scale inf)
      gx[0].copy_from(x[0]);
      auto ptrs = [](std::vector<Tensor>& v, bool on) {
        std::vector<Tensor*> p;
        if (on)
          for (Tensor& t : v) p.push_back(&t);
        return p;
      };
      std::vector<const Tensor*> xp, gxp;
      for (size_t i = 0; i < x.size(); ++i) {
        xp.push_back(&x[i]);
        gxp.push_back(&gx[i]);
      }
      ops::fp8_quantize_blocks_multi(cpu_ref(), xp, fmt, ptrs(q, want_q), ptrs(s, want_q),
                                     ptrs(qt, want_t), ptrs(st, want_t));
      ops::fp8_quantize_blocks_multi(gpu(), gxp, fmt, ptrs(gq, want_q), ptrs(gs, want_q),
                                     ptrs(gqt, want_t), ptrs(gst, want_t));
      for (size_t i = 0; i < x.size(); ++i) {
        CAPTURE(i);
        if (want_q) {
          CHECK(same_codes(gq[i], q[i]));
          CHECK(same_bytes(gs[i], s[i]));
        }
        if (want_t) {
          CHECK(same_codes(gqt[i], qt[i]));
          CHECK(same_bytes(gst[i], st[i]));
        }
      }
      CHECK(ar.check());
    }
}

// What an FP8 Linear on the GPU now reads (lib/model/linear.cpp fp8_weight): one matrix's
// codes and transposed codes from quantize_blocks_multi, against the GPU's own fp8_quantize of
// W and of transpose(W) (block_128x128, weights' amax rule), the operands it read before.
TEST_CASE("fp8 grouped: a weight's codes from quantize_blocks_multi == fp8_quantize of W, W^T") {
  for (const ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0})
    for (const Shape& sh : {Shape{200, 300}, Shape{384, 1024}, Shape{1, 77}, Shape{257, 129}}) {
      CAPTURE(int(fmt));
      CAPTURE(sh[0]);
      CAPTURE(sh[1]);
      Arena ar;
      const Tensor gw = ar.upload(weights(sh));
      const Shape ss = ops::fp8_scale_shape(sh[0], sh[1], Fp8Group::block_128x128);
      Tensor q = ar.empty(sh, DType::u8), sc = ar.empty(ss);
      Tensor qt = ar.empty({sh[1], sh[0]}, DType::u8), st = ar.empty({ss[1], ss[0]});
      ops::fp8_quantize_blocks_multi(gpu(), {&gw}, fmt, {&q}, {&sc}, {&qt}, {&st});
      Tensor wq, ws;   // the Fprop operand as before
      ops::fp8_quantize(gpu(), gw, Fp8Group::block_128x128, fmt, false, wq, ws);
      Tensor wt = ar.empty({sh[1], sh[0]});
      ops::transpose(gpu(), gw, wt);
      Tensor tq, ts;   // the Dgrad operand as before: the F32 transpose, quantised
      ops::fp8_quantize(gpu(), wt, Fp8Group::block_128x128, fmt, false, tq, ts);
      CHECK(same_codes(q, download(wq)));
      CHECK(same_bytes(sc, download(ws)));
      CHECK(same_codes(qt, download(tq)));
      CHECK(same_bytes(st, download(ts)));
      CHECK(ar.check());
    }
}

TEST_CASE("fp8 grouped: quantize_transposed on the GPU equals the CPU bit for bit") {
  for (const Shape& sh : {Shape{300, 200}, Shape{128, 64}, Shape{1, 77}, Shape{257, 129},
                          Shape{1536, 384}, Shape{4096, 7168}})   // the last: a V3 Wgrad's x
    for (const ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0})
      for (const bool act : {false, true}) {
        CAPTURE(sh[0]);
        CAPTURE(sh[1]);
        CAPTURE(int(fmt));
        CAPTURE(act);
        Tensor x = weights(sh);
        x.f32()[3] = 0;   // a zero, and an all-zero group: column 5's first 128 rows
        for (int64_t i = 0; i < std::min<int64_t>(sh[0], 128); ++i)
          if (sh[1] > 5) x.f32()[i * sh[1] + 5] = 0;
        if (x.numel() > 400) {
          x.f32()[x.numel() / 3] = NAN;
          x.f32()[x.numel() / 2] = INFINITY;
        }
        Arena ar;
        const Tensor gx = ar.upload(x);
        Tensor qt, st;
        ops::fp8_quantize_transposed(cpu_ref(), x, fmt, act, qt, st);
        Tensor gqt = ar.empty({sh[1], sh[0]}, DType::u8), gst = ar.empty(st.shape());
        ops::fp8_quantize_transposed(gpu(), gx, fmt, act, gqt, gst);
        CHECK(same_codes(gqt, qt));
        CHECK(same_bytes(gst, st));
        CHECK(ar.check());
      }
}

// The tile quantisers (DS_FP8_QUANT=tiles; kernels/fp8_quant_tiles.cuh) through the four ops
// that use them (fp8_quantize 1x128, fp8_quantize_transposed, and the FP8 Linear backward's
// fp8_quantize_dual and fp8_requantize_transposed), against the CPU ops bit for bit (NaN codes
// as NaN), with the switch on and off (off: the default path, the plain kernels); shapes the
// tile kernel takes (K % 4 == 0, and M % 16 == 0 for the transposed codes) and ones it leaves
// to the plain kernels, told apart by its launch counter; guard bytes around every output.
struct TilesSet {
  explicit TilesSet(bool on) { ds::cuda::set_fp8_quant_tiles(on); }
  ~TilesSet() { ds::cuda::set_fp8_quant_tiles(was); }
  TilesSet(const TilesSet&) = delete;
  TilesSet& operator=(const TilesSet&) = delete;
  bool was = ds::cuda::fp8_quant_tiles();
};

TEST_CASE("fp8 tiles: the tile quantisers equal the CPU ops, and run where the shape allows") {
  for (const Shape& sh : {Shape{272, 260}, Shape{2048, 1536}, Shape{16, 4}, Shape{130, 256},
                          Shape{64, 7}, Shape{1, 77}})
    for (const bool on : {true, false})
      for (const ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0}) {
        const int64_t M = sh[0], K = sh[1];
        CAPTURE(M);
        CAPTURE(K);
        CAPTURE(on);
        CAPTURE(int(fmt));
        const TilesSet tiles(on);
        Tensor x = weights(sh);
        x.f32()[0] = 0;
        // a zero row and a row of tiny values (the act clamp; the zero group's scale 1), and
        // where there are 32 rows a zero column and a tiny one over them
        for (int64_t j = 0; j < K; ++j) {
          if (M > 2) x.f32()[1 * K + j] = 0;
          if (M > 3) x.f32()[2 * K + j] = 1e-7f * float(j % 5);
        }
        if (M >= 32 && K > 3)
          for (int64_t i = 0; i < M; ++i) {
            x.f32()[i * K + 1] = 0;
            x.f32()[i * K + 3] = 3e-8f;
          }
        if (x.numel() > 400) {
          x.f32()[x.numel() / 3] = NAN;
          x.f32()[x.numel() / 2] = INFINITY;
          x.f32()[x.numel() / 5] = -NAN;
        }
        Arena ar;
        const Tensor gx = ar.upload(x);
        const Shape ss = ops::fp8_scale_shape(M, K, Fp8Group::row_1x128);
        const Shape sts = ops::fp8_scale_shape(K, M, Fp8Group::row_1x128);
        // (under DS_CUDA_FUSED=0 the switch is off whatever its setting: no tile launches)
        const bool rows_fit = on && ds::cuda::fused_ops() && K % 4 == 0;
        const bool cols_fit = rows_fit && M % 16 == 0;
        using Kind = ds::cuda::Fp8TilesKind;
        int64_t before = ds::cuda::fp8_quant_tiles_launches();
        auto launched = [&](bool want, Kind kind) {   // one launch of that kind, or none at all
          const int64_t now = ds::cuda::fp8_quant_tiles_launches();
          CHECK(now - before == (want ? 1 : 0));
          if (want) CHECK(ds::cuda::fp8_quant_tiles_launches(kind) > 0);
          before = now;
        };
        {   // the forward's 1x128 quantisation of an activation (act)
          Tensor q, sc, gq = ar.empty(sh, DType::u8), gs = ar.empty(ss);
          ops::fp8_quantize(cpu_ref(), x, Fp8Group::row_1x128, fmt, true, q, sc);
          ops::fp8_quantize(gpu(), gx, Fp8Group::row_1x128, fmt, true, gq, gs);
          launched(rows_fit, Kind::rows);
          CHECK(same_codes(gq, q));
          CHECK(same_bytes(gs, sc));
        }
        {   // the plain transposed quantisation
          Tensor qt, st, gqt = ar.empty({K, M}, DType::u8), gst = ar.empty(sts);
          ops::fp8_quantize_transposed(cpu_ref(), x, fmt, false, qt, st);
          ops::fp8_quantize_transposed(gpu(), gx, fmt, false, gqt, gst);
          launched(cols_fit, Kind::cols);
          CHECK(same_codes(gqt, qt));
          CHECK(same_bytes(gst, st));
        }
        {   // dy's two operands
          Tensor q, sc, qt, st;
          Tensor gq = ar.empty(sh, DType::u8), gs = ar.empty(ss);
          Tensor gqt = ar.empty({K, M}, DType::u8), gst = ar.empty(sts);
          ops::fp8_quantize_dual(cpu_ref(), x, fmt, false, q, sc, qt, st);
          ops::fp8_quantize_dual(gpu(), gx, fmt, false, gq, gs, gqt, gst);
          launched(cols_fit, Kind::dual);
          CHECK(same_codes(gq, q));
          CHECK(same_bytes(gs, sc));
          CHECK(same_codes(gqt, qt));
          CHECK(same_bytes(gst, st));
        }
        {   // the input's Wgrad operand (act)
          Tensor qt, st, gqt = ar.empty({K, M}, DType::u8), gst = ar.empty(sts);
          ops::fp8_requantize_transposed(cpu_ref(), x, fmt, true, qt, st);
          ops::fp8_requantize_transposed(gpu(), gx, fmt, true, gqt, gst);
          launched(cols_fit, Kind::requant);
          CHECK(same_codes(gqt, qt));
          CHECK(same_bytes(gst, st));
        }
        CHECK(ar.check());
      }
}

// The many-matrix weight quantiser on tiles (DS_FP8_QUANT=tiles): codes and transposed codes
// against the CPU op bit for bit; one matrix the tile kernel does not take (K % 4 != 0) sends
// the whole call to the plain kernel, which the launch counter tells.
TEST_CASE("fp8 tiles: quantize_blocks_multi on tiles equals the CPU, the plain kernel otherwise") {
  const TilesSet tiles(true);
  const bool fused = ds::cuda::fused_ops();   // DS_CUDA_FUSED=0: the plain kernel throughout
  for (const bool all_fit : {true, false})
    for (const ScaleFormat fmt : {ScaleFormat::fp32, ScaleFormat::ue8m0}) {
      CAPTURE(all_fit);
      CAPTURE(int(fmt));
      std::vector<Shape> shapes = {{256, 384}, {1024, 128}, {144, 260}, {16, 4}};
      if (!all_fit) shapes.push_back({128, 77});
      Arena ar;
      std::vector<Tensor> x, gx, q, s, qt, st, gq, gs, gqt, gst;
      for (const Shape& sh : shapes) {
        x.push_back(weights(sh));
        gx.push_back(ar.upload(x.back()));
        const Shape ss = ops::fp8_scale_shape(sh[0], sh[1], Fp8Group::block_128x128);
        const Shape sts = ops::fp8_scale_shape(sh[1], sh[0], Fp8Group::block_128x128);
        q.push_back(Tensor::empty(sh, DType::u8));
        s.push_back(Tensor::empty(ss));
        qt.push_back(Tensor::empty({sh[1], sh[0]}, DType::u8));
        st.push_back(Tensor::empty(sts));
        gq.push_back(ar.empty(sh, DType::u8));
        gs.push_back(ar.empty(ss));
        gqt.push_back(ar.empty({sh[1], sh[0]}, DType::u8));
        gst.push_back(ar.empty(sts));
      }
      for (int64_t i = 0; i < 128; ++i)   // a zero block in matrix 0 (scale 1), and specials
        for (int64_t j = 128; j < 256; ++j) x[0].f32()[i * 384 + j] = 0;
      x[0].f32()[5 * 384 + 7] = NAN;
      x[0].f32()[150 * 384 + 300] = -INFINITY;
      gx[0].copy_from(x[0]);
      std::vector<const Tensor*> xp, gxp;
      std::vector<Tensor*> qp, sp, qtp, stp, gqp, gsp, gqtp, gstp;
      for (size_t i = 0; i < x.size(); ++i) {
        xp.push_back(&x[i]);
        gxp.push_back(&gx[i]);
        qp.push_back(&q[i]);
        sp.push_back(&s[i]);
        qtp.push_back(&qt[i]);
        stp.push_back(&st[i]);
        gqp.push_back(&gq[i]);
        gsp.push_back(&gs[i]);
        gqtp.push_back(&gqt[i]);
        gstp.push_back(&gst[i]);
      }
      ops::fp8_quantize_blocks_multi(cpu_ref(), xp, fmt, qp, sp, qtp, stp);
      const int64_t before = ds::cuda::fp8_quant_tiles_launches();
      ops::fp8_quantize_blocks_multi(gpu(), gxp, fmt, gqp, gsp, gqtp, gstp);
      CHECK(ds::cuda::fp8_quant_tiles_launches() - before == (all_fit && fused ? 1 : 0));
      for (size_t i = 0; i < x.size(); ++i) {
        CAPTURE(i);
        CHECK(same_codes(gq[i], q[i]));
        CHECK(same_bytes(gs[i], s[i]));
        CHECK(same_codes(gqt[i], qt[i]));
        CHECK(same_bytes(gst[i], st[i]));
      }
      CHECK(ar.check());
    }
}

// The experts' fused BF16 gather (kernels/fp8_quant.cu gather_rows_bf16_kernel) against the CPU
// op, bit for bit (NaN as NaN), codes and rounded F32, with and without weights; NaN, inf, -0,
// a product that underflows to -0 and a value past BF16's range; guard bytes around the output.
TEST_CASE("fused: gather_rows_bf16 on the GPU equals the CPU bit for bit") {
  for (const int64_t C : {1, 7, 12, 1024})   // 12, 1024: the kernel's 4-wide path
    for (const bool with_w : {false, true})
      for (const DType dt : {DType::f32, DType::bf16}) {
        CAPTURE(C);
        CAPTURE(with_w);
        const int64_t N = 37, M = 301;
        Tensor src = rand_f32({N, C}, -3, 3), w = rand_f32({M}, -2, 2);
        src.f32()[0] = NAN;
        src.f32()[src.numel() - 1] = -0.0f;
        src.f32()[src.numel() / 2] = INFINITY;
        src.f32()[src.numel() / 3] = 3.4e38f;
        const int64_t tiny = src.numel() / 4;   // a product that underflows: 0 + (-0) is +0,
        src.f32()[tiny] = -1e-30f;              // an FMA with 0 would keep -0
        Tensor rows = Tensor::empty({M}, DType::i32);
        for (int64_t m = 0; m < M; ++m) {
          rows.i32()[m] = int32_t((m * 13 + 5) % N);
          if (rows.i32()[m] == tiny / C) w.f32()[m] = 1e-20f;
        }
        const Tensor wt = with_w ? w : Tensor();
        Tensor want = Tensor::empty({M, C}, dt);
        ops::gather_rows_bf16(cpu_ref(), src, rows, wt, want);
        Arena ar;
        const Tensor gsrc = ar.upload(src), grows = ar.upload(rows);
        const Tensor gw = with_w ? ar.upload(w) : Tensor();
        Tensor got = ar.empty({M, C}, dt);
        ops::gather_rows_bf16(gpu(), gsrc, grows, gw, got);
        CHECK(same_bf16(got, want));
        CHECK(ar.check());
      }
}

}  // namespace ds::gpu_test
