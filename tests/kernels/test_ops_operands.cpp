// The ops that write the next GEMM's operands or MLA's head layout in one pass, against the
// CPU reference and against the ops they replace: SwiGLU, RMSNorm, the fused cross-entropy
// and the log-probability backward with BF16-code outputs, mla_kv_split forward/backward
// (F32 and BF16-code k, v and dkv), the residual add fused into RMSNorm and the experts'
// backward gather with its dots, on aligned and misaligned operands.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

#include "gpu_harness.hpp"

namespace ds::gpu_test {
namespace {

// SwiGLU writing BF16 codes (the next GEMM's operands, model::gemm_input_empty): bit for bit
// the GPU's own F32 results rounded by bf16_round, aligned and on outputs 2 bytes past an
// 8-byte boundary (the scalar path), and within the F32 tolerance of the CPU reference.
TEST_CASE("elementwise: swiglu with BF16 outputs") {
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(333 * 17), int64_t((1 << 20) + 3)}) {
    for (int64_t off : {0, 1, 4}) {   // codes 0, 2 (scalar path) and 8 bytes past alignment
      CAPTURE(n);
      CAPTURE(off);
      Arena ar;
      const Tensor gate = rand_f32({n}, -8, 8), upv = rand_f32({n}, -2, 2), dout = rand_f32({n});
      Tensor gg = up(ar, gate), gu = up(ar, upv), gd = up(ar, dout);
      Tensor f = ar.empty({n}), dgf = ar.empty({n}), duf = ar.empty({n});
      ops::swiglu_forward(gpu(), gg, gu, f);
      ops::swiglu_backward(gpu(), gg, gu, gd, dgf, duf);
      auto codes = [&] { return ar.empty({n + off}, DType::bf16).slice0(off, n + off); };
      Tensor c = codes(), dgc = codes(), duc = codes();
      ops::swiglu_forward(gpu(), gg, gu, c);
      ops::swiglu_backward(gpu(), gg, gu, gd, dgc, duc);
      const std::pair<Tensor*, Tensor*> pairs[] = {{&f, &c}, {&dgf, &dgc}, {&duf, &duc}};
      const char* names[] = {"swiglu out codes", "swiglu dgate codes", "swiglu dup codes"};
      for (int i = 0; i < 3; ++i) {
        Tensor want = Tensor::empty({n}, DType::bf16);
        ops::bf16_round(cpu_ref(), download(*pairs[i].first), want);
        expect_exact(*pairs[i].second, want, names[i]);
      }
      Tensor out = Tensor::empty({n});
      ops::swiglu_forward(cpu_ref(), gate, upv, out);
      Tensor widened = Tensor::empty({n});
      const Tensor hc = download(c);
      for (int64_t i = 0; i < n; ++i) widened.f32()[i] = bf16_to_f32(hc.data<uint16_t>()[i]);
      expect_close(widened, out, 1e-5, "swiglu out codes vs reference");
      CHECK(ar.check());
    }
  }
}

// RMSNorm writing BF16 codes (MLA's inputs and latents, the dense FFN's input): bit for bit the
// GPU's own F32 output rounded by bf16_round, with the same rstd; rows of C % 4 == 0 (the
// 4-wide path, incl. DeepSeek-V3's 7168) and odd C, and codes 2 bytes past alignment.
TEST_CASE("elementwise: rmsnorm with BF16 output") {
  for (auto [N, C] : {std::pair<int64_t, int64_t>{1, 7}, {33, 1024}, {5, 7168}, {17, 384}}) {
    for (int64_t off : {0, 1, 4}) {   // codes 0, 2 (scalar path) and 8 bytes past alignment
      CAPTURE(N);
      CAPTURE(C);
      CAPTURE(off);
      Arena ar;
      const Tensor x = rand_f32({N, C}, -3, 3), g = rand_f32({C}, 0.5f, 1.5f);
      Tensor gx = up(ar, x), gg = up(ar, g);
      // the F32 reference at the same element offset: the same kernel variant (under
      // DS_CUDA_FUSED=0 the codes come from an aligned F32 temporary, so an aligned one)
      auto at_off = [&](DType dt, int64_t o) {
        return ar.empty({N * C + o}, dt).slice0(o, N * C + o).view({N, C});
      };
      Tensor yf = at_off(DType::f32, ds::cuda::fused_ops() ? off : 0), rf = ar.empty({N}),
             rc = ar.empty({N});
      ops::rmsnorm_forward(gpu(), gx, gg, 1e-6f, yf, rf);
      Tensor yc = at_off(DType::bf16, off);
      ops::rmsnorm_forward(gpu(), gx, gg, 1e-6f, yc, rc);
      Tensor want = Tensor::empty({N, C}, DType::bf16);
      ops::bf16_round(cpu_ref(), download(yf), want);
      expect_exact(yc, want, "rmsnorm codes");
      expect_exact(rc, download(rf), "rmsnorm rstd");
      Tensor ref = Tensor::empty({N, C}), rr = Tensor::empty({N});
      ops::rmsnorm_forward(cpu_ref(), x, g, 1e-6f, ref, rr);
      Tensor widened = Tensor::empty({N, C});
      const Tensor hc = download(yc);
      for (int64_t i = 0; i < N * C; ++i) widened.f32()[i] = bf16_to_f32(hc.data<uint16_t>()[i]);
      expect_close(widened, ref, 1e-5, "rmsnorm codes vs reference");
      CHECK(ar.check());
    }
  }
}

// The fused cross-entropy writing BF16 dlogits (the head's GEMM operand): bit for bit the
// GPU's own F32 dlogits rounded by bf16_round, with the same losses; ignored and out-of-range
// targets give zero rows; V % 4 == 0 (4-wide) and odd V, codes 0, 2 and 8 bytes past alignment.
TEST_CASE("loss: cross_entropy with BF16 dlogits") {
  for (auto [N, V] : {std::pair<int64_t, int64_t>{3, 5}, {64, 1000}, {2, 129280}, {7, 4099}}) {
    for (int64_t off : {0, 1, 4}) {
      CAPTURE(N);
      CAPTURE(V);
      CAPTURE(off);
      Arena ar;
      const Tensor x = rand_f32({N, V}, -20, 20);
      Tensor t = rand_i32({N}, 0, int(V - 1));
      t.i32()[0] = -1;
      if (N > 2) t.i32()[2] = int32_t(V);   // out of range: read as ignored on the GPU
      const Tensor gx = up(ar, x), gt = up(ar, t);
      // the F32 reference at the same element offset, so that both take the same kernel
      // variant (4-wide or scalar split the row's statistics differently); under
      // DS_CUDA_FUSED=0 the codes are rounded from an aligned F32 temporary, so an aligned one
      auto at_off = [&](DType dt, int64_t o) {
        return ar.empty({N * V + o}, dt).slice0(o, N * V + o).view({N, V});
      };
      Tensor l = ar.empty({N}), lc = ar.empty({N});
      Tensor d = at_off(DType::f32, ds::cuda::fused_ops() ? off : 0);
      Tensor dc = at_off(DType::bf16, off);
      ops::cross_entropy_forward_backward(gpu(), gx, gt, 0.5f, l, d);
      ops::cross_entropy_forward_backward(gpu(), gx, gt, 0.5f, lc, dc);
      Tensor want = Tensor::empty({N, V}, DType::bf16);
      ops::bf16_round(cpu_ref(), download(d), want);
      expect_exact(dc, want, "dlogits codes");
      expect_exact(lc, download(l), "losses");
      CHECK(ar.check());
    }
  }
}

// The policy head's backward writing BF16 dlogits: bit for bit the GPU's F32 dlogits rounded.
TEST_CASE("loss: token_logprob_backward with BF16 dlogits") {
  for (auto [N, V] : {std::pair<int64_t, int64_t>{3, 5}, {16, 4096}, {5, 4099}}) {
    for (int64_t off : {0, 1, 4}) {
      CAPTURE(N);
      CAPTURE(V);
      CAPTURE(off);
      Arena ar;
      const Tensor x = rand_f32({N, V}, -8, 8), dlogp = rand_f32({N});
      Tensor t = rand_i32({N}, 0, int(V - 1));
      t.i32()[N - 1] = -1;
      const Tensor gx = up(ar, x), gt = up(ar, t), gdl = up(ar, dlogp);
      Tensor lp = ar.empty({N}), lse = ar.empty({N}), none;
      ops::token_logprob_forward(gpu(), gx, gt, lp, lse, none);
      Tensor d = ar.empty({N, V});
      Tensor dc = ar.empty({N * V + off}, DType::bf16).slice0(off, N * V + off).view({N, V});
      ops::token_logprob_backward(gpu(), gx, gt, lse, gdl, d);
      ops::token_logprob_backward(gpu(), gx, gt, lse, gdl, dc);
      Tensor want = Tensor::empty({N, V}, DType::bf16);
      ops::bf16_round(cpu_ref(), download(d), want);
      expect_exact(dc, want, "policy dlogits codes");
      CHECK(ar.check());
    }
  }
}

// MLA's keys and values in one pass: k, v, dkv and dk_rot bit for bit equal to the CPU
// reference (copies, and the head sums in the same order), dkv also as BF16 codes; odd widths
// (the scalar path), the 1b preset's head dims, and operands past alignment. The 64-bit index
// variants (more than 2^31 elements) are not exercised.
TEST_CASE("layout: mla_kv_split forward/backward") {
  using Dims = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>;   // N, H, Dn, Dr, Dv
  for (auto [N, H, Dn, Dr, Dv] : {Dims{5, 3, 8, 4, 8}, Dims{7, 2, 6, 2, 5},
                                  Dims{333, 16, 64, 32, 64}, Dims{1, 1, 4, 4, 4}}) {
    for (bool mis : {false, true}) {
      CAPTURE(N);
      CAPTURE(H);
      CAPTURE(Dn);
      CAPTURE(mis);
      Arena ar;
      const Tensor kv = rand_f32({N, H, Dn + Dv}), krot = rand_f32({N, Dr});
      const Tensor dk = rand_f32({N, H, Dn + Dr}), dv = rand_f32({N, H, Dv});
      Tensor k = Tensor::empty({N, H, Dn + Dr}), v = Tensor::empty({N, H, Dv});
      Tensor dkv = Tensor::empty({N, H, Dn + Dv}), dkr = Tensor::empty({N, Dr});
      Tensor dkv_codes = Tensor::empty({N, H, Dn + Dv}, DType::bf16);
      Tensor dkr2 = Tensor::empty({N, Dr});
      ops::mla_kv_split(cpu_ref(), kv, krot, k, v);
      ops::mla_kv_split_backward(cpu_ref(), dk, dv, dkv, dkr);
      ops::mla_kv_split_backward(cpu_ref(), dk, dv, dkv_codes, dkr2);
      Tensor gkv = up(ar, kv, mis), gkr = up(ar, krot, mis), gdk = up(ar, dk, mis),
             gdv = up(ar, dv, mis);
      // outputs: aligned, or 4 bytes (F32) / 2 bytes (codes) past alignment when mis
      auto out = [&](const Shape& sh, DType dt = DType::f32) {
        const int64_t n = shape_numel(sh), o = mis ? 1 : 0;
        return ar.empty({n + o}, dt).slice0(o, n + o).view(sh);
      };
      Tensor gk = out({N, H, Dn + Dr}), gv = out({N, H, Dv});
      Tensor gdkv = out({N, H, Dn + Dv}), gdkr = out({N, Dr});
      Tensor gcodes = out({N, H, Dn + Dv}, DType::bf16), gdkr2 = out({N, Dr});
      ops::mla_kv_split(gpu(), gkv, gkr, gk, gv);
      ops::mla_kv_split_backward(gpu(), gdk, gdv, gdkv, gdkr);
      ops::mla_kv_split_backward(gpu(), gdk, gdv, gcodes, gdkr2);
      expect_exact(gk, k, "k");
      expect_exact(gv, v, "v");
      expect_exact(gdkv, dkv, "dkv");
      expect_exact(gdkr, dkr, "dk_rot");
      expect_exact(gcodes, dkv_codes, "dkv codes");
      expect_exact(gdkr2, dkr, "dk_rot (codes run)");
      // k and v as BF16 codes (the attention's operands): the CPU's codes, bit for bit
      Tensor kc = Tensor::empty({N, H, Dn + Dr}, DType::bf16), vc = Tensor::empty({N, H, Dv},
                                                                                   DType::bf16);
      ops::mla_kv_split(cpu_ref(), kv, krot, kc, vc);
      Tensor gkc = out({N, H, Dn + Dr}, DType::bf16), gvc = out({N, H, Dv}, DType::bf16);
      ops::mla_kv_split(gpu(), gkv, gkr, gkc, gvc);
      expect_exact(gkc, kc, "k codes");
      expect_exact(gvc, vc, "v codes");
      CHECK(ar.check());
    }
  }
}

// MLA's q rotated and rounded in one pass (rope_tail_codes): bit for bit the GPU's own
// rope_tail_inplace then bf16_round, both directions, x unchanged (inf and NaN in a head part
// and in a tail among them); x aligned and 4 bytes past (the scalar loads); the 1b and
// DeepSeek-V3 head layouts; and close to the CPU op's codes.
TEST_CASE("elementwise: rope_tail_codes == rope_tail_inplace, then bf16_round") {
  for (const auto& [N, H, D, Dr] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{37, 16, 96, 32},
                                    {5, 128, 192, 64}, {3, 2, 8, 8}})
    for (const int64_t off : {0, 1})
      for (const int dir : {+1, -1}) {
        CAPTURE(N);
        CAPTURE(H);
        CAPTURE(D);
        CAPTURE(off);
        CAPTURE(dir);
        Arena ar;
        Tensor freqs = Tensor::empty({Dr / 2}), pos = Tensor::empty({N}, DType::i32);
        for (int64_t i = 0; i < Dr / 2; ++i) freqs.f32()[i] = std::pow(1e-4f, float(i) / Dr);
        for (int64_t n = 0; n < N; ++n) pos.i32()[n] = int32_t(97 * n + 3);
        const Tensor x = rand_f32({N, H, D}, -3, 3);   // finite, for the CPU comparison
        Tensor xs = x.clone();                            // with inf and NaN
        xs.f32()[1] = std::numeric_limits<float>::infinity();
        xs.f32()[(N * H - 1) * D + D - 1] = std::nanf("");
        const int64_t n = N * H * D;
        auto at_off = [&](const Tensor& host) {
          Tensor g = ar.empty({n + off}).slice0(off, n + off).view({N, H, D});
          g.copy_from(host);
          return g;
        };
        const Tensor gx = at_off(xs), gpos = ar.upload(pos), gfreqs = ar.upload(freqs);
        Tensor t = ar.upload(xs), want = ar.empty({N, H, D}, DType::bf16);
        ops::rope_tail_inplace(gpu(), t, gpos, gfreqs, dir);
        ops::bf16_round(gpu(), t, want);
        Tensor got = ar.empty({N, H, D}, DType::bf16);
        ops::rope_tail_codes(gpu(), gx, gpos, gfreqs, dir, got);
        expect_exact(got, download(want), "rope_tail_codes");
        expect_exact(gx, xs, "x unchanged");
        Tensor fin = ar.empty({N, H, D}, DType::bf16), cpu = Tensor::empty({N, H, D}, DType::bf16);
        ops::rope_tail_codes(gpu(), at_off(x), gpos, gfreqs, dir, fin);
        ops::rope_tail_codes(cpu_ref(), x, pos, freqs, dir, cpu);
        expect_close(fin, cpu, 1e-6, "rope_tail_codes vs the CPU reference", 0.02);
        CHECK(ar.check());
      }
}

// The residual add fused into RMSNorm (model::Block): bit for bit the GPU's own add followed
// by its RMSNorm (forward, F32 and BF16 y; h apart and over x) and its RMSNorm backward
// followed by the add (dx, and dg through the same reduction; res apart and res == dx; dx's
// BF16 codes written beside it, and a BF16 dx alone), every operand at the same element offset
// so that both sides take the same kernel variant (offset 0 float4 rows, 1 the scalar path);
// and close to the CPU reference. C 6144: 48 KiB of dynamic shared memory (the dg
// accumulators), which with the kernel's static shared memory needs the opt-in.
TEST_CASE("elementwise: rmsnorm with the residual add fused") {
  // 8192 x 1024: more rows than backward blocks, so each block's dg partials sum many rows
  for (auto [N, C] : {std::pair<int64_t, int64_t>{1, 7}, {33, 1024}, {5, 7168}, {17, 384},
                      {8192, 1024}, {3, 6144}}) {
    for (int64_t off : {0, 1}) {
      CAPTURE(N);
      CAPTURE(C);
      CAPTURE(off);
      Arena ar;
      auto at_off = [&](const Shape& s, DType dt) {
        int64_t n = 1;
        for (int64_t d : s) n *= d;
        return ar.empty({n + off}, dt).slice0(off, n + off).view(s);
      };
      auto put = [&](const Tensor& host) {
        Tensor t = at_off(host.shape(), host.dtype());
        t.copy_from(host);
        return t;
      };
      const Tensor x = rand_f32({N, C}, -3, 3), a = rand_f32({N, C}, -2, 2);
      const Tensor g = rand_f32({C}, 0.5f, 1.5f), dy = rand_f32({N, C}), res = rand_f32({N, C});
      const Tensor dg0 = rand_f32({C});
      const Tensor gx = put(x), ga = put(a), gg = put(g), gdy = put(dy), gres = put(res);
      for (DType yt : {DType::f32, DType::bf16}) {
        CAPTURE(int(yt));
        Tensor h0 = at_off({N, C}, DType::f32), y0 = at_off({N, C}, yt), r0 = ar.empty({N});
        ops::add(gpu(), gx, ga, h0);
        ops::rmsnorm_forward(gpu(), h0, gg, 1e-6f, y0, r0);
        Tensor h = at_off({N, C}, DType::f32), y = at_off({N, C}, yt), r = ar.empty({N});
        ops::add_rmsnorm_forward(gpu(), gx, ga, gg, 1e-6f, h, y, r);
        expect_exact(h, download(h0), "h");
        expect_exact(y, download(y0), "y");
        expect_exact(r, download(r0), "rstd");
        Tensor xh = put(x);   // h over x
        y = at_off({N, C}, yt);
        ops::add_rmsnorm_forward(gpu(), xh, ga, gg, 1e-6f, xh, y, r);
        expect_exact(xh, download(h0), "h over x");
        expect_exact(y, download(y0), "y (h over x)");
      }
      Tensor h = at_off({N, C}, DType::f32), y = at_off({N, C}, DType::f32), r = ar.empty({N});
      ops::add_rmsnorm_forward(gpu(), gx, ga, gg, 1e-6f, h, y, r);
      Tensor t = at_off({N, C}, DType::f32), dx0 = at_off({N, C}, DType::f32), dgw = put(dg0);
      ops::rmsnorm_backward(gpu(), h, gg, r, gdy, t, dgw);
      ops::add(gpu(), gres, t, dx0);
      Tensor dx = at_off({N, C}, DType::f32), dg = put(dg0);
      ops::rmsnorm_backward_add(gpu(), h, gg, r, gdy, gres, dx, dg);
      expect_exact(dx, download(dx0), "dx");
      expect_exact(dg, download(dgw), "dg");
      Tensor inplace = put(res);   // res == dx
      dg = put(dg0);
      ops::rmsnorm_backward_add(gpu(), h, gg, r, gdy, inplace, inplace, dg);
      expect_exact(inplace, download(dx0), "dx over res");
      expect_exact(dg, download(dgw), "dg (dx over res)");
      // dx's BF16 codes from the same pass: the GPU's own bf16_round of dx, dg unchanged
      Tensor dx2 = at_off({N, C}, DType::f32), codes = at_off({N, C}, DType::bf16);
      Tensor want = at_off({N, C}, DType::bf16);
      ops::bf16_round(gpu(), dx0, want);
      dg = put(dg0);
      ops::rmsnorm_backward_add(gpu(), h, gg, r, gdy, gres, dx2, dg, &codes);
      expect_exact(dx2, download(dx0), "dx (with codes)");
      expect_exact(codes, download(want), "dx codes");
      expect_exact(dg, download(dgw), "dg (with codes)");
      // the plain backward into BF16 codes only (MLA's q path)
      Tensor dxb = at_off({N, C}, DType::bf16), want_b = at_off({N, C}, DType::bf16);
      ops::bf16_round(gpu(), t, want_b);
      dg = put(dg0);
      ops::rmsnorm_backward(gpu(), h, gg, r, gdy, dxb, dg);
      expect_exact(dxb, download(want_b), "BF16 dx");
      expect_exact(dg, download(dgw), "dg (BF16 dx)");
      // the CPU reference
      Tensor ch = Tensor::empty({N, C}), cy = Tensor::empty({N, C}), cr = Tensor::empty({N});
      ops::add_rmsnorm_forward(cpu_ref(), x, a, g, 1e-6f, ch, cy, cr);
      Tensor cdx = Tensor::empty({N, C}), cdg = dg0.clone();
      ops::rmsnorm_backward_add(cpu_ref(), ch, g, cr, dy, res, cdx, cdg);
      expect_exact(h, ch, "h vs reference");
      expect_close(y, cy, 1e-5, "y vs reference");
      expect_close(dx, cdx, 1e-5, "dx vs reference");
      expect_close(dg, cdg, 1e-5, "dg vs reference");
      CHECK(ar.check());
    }
  }
}

// The experts' backward gather in one pass (gather_rows_bf16_dot): bit for bit the GPU's own
// gather_rows_bf16 and gather_rows_dot over the same rows, with and without weights, codes and
// F32, C a multiple of 4 (the 4-wide path) and not; an output 2 bytes past alignment while
// the inputs are aligned, and b 4 bytes past alignment while the output is aligned (either
// way the two ops apart, so that the dots keep gather_rows_dot's order).
TEST_CASE("moe: gather_rows_bf16_dot == gather_rows_bf16 and gather_rows_dot") {
  for (const int64_t C : {7, 12, 1024})
    for (const bool with_w : {false, true})
      for (const DType dt : {DType::f32, DType::bf16})
        for (const int64_t off : {int64_t(0), int64_t(1), int64_t(2)}) {
          if (off == 1 && dt == DType::f32) continue;   // off 1: the codes misaligned
          const int64_t out_off = off == 1 ? 1 : 0;     // off 2: b misaligned
          CAPTURE(C);
          CAPTURE(with_w);
          CAPTURE(int(dt));
          CAPTURE(off);
          const int64_t N = 37, M = 301;
          const Tensor src = rand_f32({N, C}, -3, 3), w = rand_f32({M}, -2, 2);
          const Tensor b = rand_f32({M, C});
          Tensor rows = Tensor::empty({M}, DType::i32);
          for (int64_t m = 0; m < M; ++m) rows.i32()[m] = int32_t((m * 13 + 5) % N);
          Arena ar;
          const Tensor gsrc = ar.upload(src), grows = ar.upload(rows);
          const Tensor gb = up(ar, b, off == 2);
          const Tensor gw = with_w ? ar.upload(w) : Tensor();
          Tensor want = ar.empty({M, C}, dt), want_dot = ar.empty({M});
          ops::gather_rows_bf16(gpu(), gsrc, grows, gw, want);
          ops::gather_rows_dot(gpu(), gsrc, grows, gb, want_dot);
          Tensor got =
              ar.empty({M * C + out_off}, dt).slice0(out_off, M * C + out_off).view({M, C});
          Tensor dot = ar.empty({M});
          ops::gather_rows_bf16_dot(gpu(), gsrc, grows, gw, gb, got, dot);
          expect_exact(got, download(want), "operand");
          expect_exact(dot, download(want_dot), "dot");
          Tensor cpu_dot = Tensor::empty({M});
          ops::gather_rows_dot(cpu_ref(), src, rows, b, cpu_dot);
          expect_close(dot, cpu_dot, 1e-10, "dot vs reference");
          CHECK(ar.check());
        }
}

}  // namespace
}  // namespace ds::gpu_test
