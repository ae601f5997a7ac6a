// The tensor-core MLA decode kernel's block, emulated on the CPU (used by
// test_layout_mla_tc.cpp): the problem and plan of one launch, guarded global buffers that
// refuse reads outside their tensors and count stores, Block (one CTA of mla_tc_kernel run
// statement by statement over warp_emu.hpp, in the kernel's order: q staging, prologue, ring
// of stages, score mma, partial-score exchange, online softmax, P V mma, epilogue) and the
// combine step of several splits (mla_combine_kernel of kernels/mla_decode.cu). A change of
// statement or barrier order in the kernel must be mirrored in Block::run.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/mla_decode_tc_layout.hpp"
#include "warp_emu.hpp"

namespace ds::test::mla_emu {

namespace emu = ds::test::emu;
namespace M = ds::cuda::mlatc;

inline constexpr uint32_t kSmemBase = 0x400;   // where the emulated dynamic shared memory starts
inline constexpr int kGuard = 64;              // elements after each output that nothing may touch
inline constexpr float kInf = std::numeric_limits<float>::infinity();

// ++v[i] when i is inside v; false (and nothing touched) otherwise.
inline bool bump(std::vector<int>& v, int64_t i) {
  if (i < 0 || size_t(i) >= v.size()) return false;
  ++v[size_t(i)];
  return true;
}
inline bool all_once(const std::vector<int>& v) {
  return std::all_of(v.begin(), v.end(), [](int h) { return h == 1; });
}

inline uint16_t bf(float x) { return emu::float_to_bf16(x); }
inline float fb(uint16_t h) { return emu::bf16_to_float(h); }

// An output tensor in global memory: n floats (NaN until stored) and a guard, with a store
// count per element.
struct Buf {
  std::vector<float> v;
  std::vector<int> writes;
  size_t n = 0;
  void init(size_t count) {
    n = count;
    v.assign(n + kGuard, std::numeric_limits<float>::quiet_NaN());
    writes.assign(n + kGuard, 0);
  }
  void store(int64_t i, float x) {
    if (i < 0 || size_t(i) >= n)
      throw emu::EmuError("global store at " + std::to_string(i) + " outside " +
                          std::to_string(n) + " elements");
    v[size_t(i)] = x;
    ++writes[size_t(i)];
  }
  float load(int64_t i, bool must_be_written) const {
    if (i < 0 || size_t(i) >= n) throw emu::EmuError("global load outside the tensor");
    if (must_be_written && writes[size_t(i)] != 1)
      throw emu::EmuError("combine reads an element stored " + std::to_string(writes[size_t(i)]) +
                          " times");
    return v[size_t(i)];
  }
  bool guard_intact() const {
    for (size_t i = n; i < v.size(); ++i)
      if (writes[i] != 0 || !std::isnan(v[i])) return false;
    return true;
  }
};

// Whether p .. p + count lies inside v (pointers compared as addresses), and its index.
template <class T>
inline bool inside(const std::vector<T>& v, const T* p, size_t count, size_t& idx) {
  if (v.empty()) return false;
  const auto b = reinterpret_cast<uintptr_t>(v.data()), a = reinterpret_cast<uintptr_t>(p);
  if (a < b || (a - b) % sizeof(T) != 0) return false;
  idx = (a - b) / sizeof(T);
  return idx + count <= v.size();
}

struct Problem {
  int N = 0, H = 0, R = 0, Dr = 0, S = 0, L = 0;
  float scale = 0.f;
  std::vector<float> q_lat, q_pe;     // (N, H, R), (N, H, Dr)
  std::vector<uint16_t> ckv, kpe;     // (S, L, R), (S, L, Dr) BF16
  std::vector<int32_t> slot, len;     // (N)
  std::vector<bool> valid;
};
// The launcher's choices (mla_latent_attention_bf16 / launch of mla_decode_tc.cu).
struct Plan {
  int MT = 1, stages = 2, groups = 1, cgroups = 1, KS = M::kBK, splits = 1;
};
struct Outputs {
  Buf out, po, pm, pl;
};

inline emu::LaneF32 warp_max(emu::LaneF32 v) {   // common.cuh: xor butterfly, offsets 16 .. 1
  for (int o = 16; o > 0; o >>= 1) {
    const emu::LaneF32 s = emu::shfl_bfly(v, o);
    for (size_t l = 0; l < 32; ++l) v[l] = std::fmax(v[l], s[l]);
  }
  return v;
}
inline emu::LaneF32 warp_sum(emu::LaneF32 v) {
  for (int o = 16; o > 0; o >>= 1) {
    const emu::LaneF32 s = emu::shfl_bfly(v, o);
    for (size_t l = 0; l < 32; ++l) v[l] += s[l];
  }
  return v;
}

// One CTA of mla_tc_kernel<MT>, statement by statement: per-thread steps for every thread,
// per-warp steps for every warp (lanes as arrays), between the same barriers. Registers that
// live across barriers (m_, l_, the O accumulators) are kept per warp and lane.
template <int MT>
class Block {
  static constexpr int HG = M::Tiling<MT>::HG, NP = M::Tiling<MT>::NP;
  static constexpr int RPW = M::Tiling<MT>::RPW, kNW = M::kNW, kNT = M::kNT;
  using Acc = std::array<emu::LaneF32, 4>;

 public:
  Block(const Problem& p, const Plan& plan, Outputs& o)
      : P(p), pl(plan), out(o), acc_(size_t(kNW * MT * M::kCPW * 2)) {}

  int64_t bad_chunks = 0;   // predicated-on copies outside the block's visible keys
  int64_t copies = 0, mmas = 0;

  void run(unsigned bx, int sp) {
    const int D = P.R + P.Dr, KSt = M::row_pitch(D), H = P.H, R = P.R;
    const M::Smem sm = M::smem_layout(HG, pl.stages, D);
    emu::Cta cta(sm.bytes, kNT, kSmemBase);
    const uint32_t Sp = kSmemBase, alpha = kSmemBase + sm.alpha, mrow = kSmemBase + sm.mrow;
    const uint32_t lrow = kSmemBase + sm.lrow, Qs = kSmemBase + sm.q, Ps = kSmemBase + sm.p;
    const uint32_t Ts = kSmemBase + sm.tiles;
    const M::BlockPos bp = M::block_pos(bx, pl.groups, pl.cgroups, HG);
    const int n = bp.n, hg0 = bp.hg0, cg = bp.cg, c0 = bp.c0;
    if (n < 0 || n >= P.N) throw emu::EmuError("block of a row past N");
    const int sl = P.slot[size_t(n)], ln = P.len[size_t(n)];
    const M::KeyRange kr = M::split_keys(sp, pl.KS, sl, ln, P.S, P.L);
    const int jb = kr.jb, je = kr.je;
    if (jb >= je) {
      for (int tid = 0; tid < kNT; ++tid) {
        const int warp = tid >> 5, lane = tid & 31;
        if (pl.splits == 1) {
          M::zero_rows(warp, lane, HG, hg0, H, M::group_cols(R, c0), [&](int hh, int c) {
            out.out.store(M::out_row(n, H, hg0 + hh) * R + c0 + c, 0.f);
          });
        } else if (M::ml_writer(cg, tid, HG, hg0, H)) {
          const int64_t at = M::part_row(n, pl.splits, sp, H, hg0 + tid);
          out.pm.store(at, -kInf);
          out.pl.store(at, 0.f);
        }
      }
      return;
    }
    const int64_t row0 = M::cache_row0(sl, P.L);
    const int ntiles = M::tile_count(jb, je);
    const int CR = M::chunks(R), CD = M::chunks(D);
    const auto load_tile = [&](int tid, int t) {
      const int warp = tid >> 5, lane = tid & 31;
      const int j0 = M::tile_key0(jb, t), nk = M::tile_keys(je, j0);
      const uint32_t dst = Ts + uint32_t(M::ring_slot(t, pl.stages)) * sm.stage;
      M::tile_copies(warp, lane, nk, CD, [&](int r, int c, bool ok) {
        const uint16_t* src = P.ckv.data();
        if (ok) src = M::chunk_src(P.ckv.data(), P.kpe.data(), row0 + j0 + r, c, CR, R, P.Dr);
        copy_chunk(cta, tid, dst + 2u * uint32_t(M::tile_elem(r, c, KSt)), src, ok, row0 + jb,
                   row0 + je);
      });
    };
    for (int t = 0; t < pl.stages - 1; ++t)
      for (int tid = 0; tid < kNT; ++tid) {
        if (t < ntiles) load_tile(tid, t);
        cta.commit_group(tid);
      }
    for (int tid = 0; tid < kNT; ++tid)
      M::q_pairs(tid >> 5, tid & 31, HG, D, [&](int hh, int d) {
        const int h = hg0 + hh;
        float x0 = 0.f, x1 = 0.f;
        if (h < H) {
          const float* src =
              M::q_src(P.q_lat.data(), P.q_pe.data(), M::out_row(n, H, h), d, R, P.Dr);
          x0 = q_load(src);
          x1 = q_load(src + 1);
        }
        cta.st<uint32_t>(tid, Qs + 2u * uint32_t(M::q_elem(hh, d, KSt)),
                         uint32_t(bf(x0)) | uint32_t(bf(x1)) << 16);
      });
    const int nks = M::ksteps(D);
    for (auto& w : m_)
      for (auto& x : w) x.fill(-kInf);
    for (auto& w : l_)
      for (auto& x : w) x.fill(0.f);
    for (Acc& a : acc_) a = Acc{};
    for (int it = 0; it < ntiles; ++it) {
      for (int tid = 0; tid < kNT; ++tid) cta.wait_group(tid, M::ring_pending(pl.stages));
      cta.bar_sync();
      for (int tid = 0; tid < kNT; ++tid) {
        if (M::ring_refill(it, pl.stages) < ntiles) load_tile(tid, M::ring_refill(it, pl.stages));
        cta.commit_group(tid);
      }
      const uint32_t Tb = Ts + uint32_t(M::ring_slot(it, pl.stages)) * sm.stage;
      const int nk = M::tile_keys(je, M::tile_key0(jb, it));
      // 1. partial scores
      for (int warp = 0; warp < kNW; ++warp) {
        if (!M::score_warp<MT>(warp)) continue;
        const int mt_q = M::score_mtile<MT>(warp), part = M::score_part<MT>(warp);
        std::array<Acc, 4> s{};
        for (int ks = M::kstep<MT>(part, nks); ks < M::kstep<MT>(part + 1, nks); ++ks) {
          const auto af = ldsm(cta, Qs, [&](int l) { return M::q_frag(l, mt_q, ks, KSt); });
          const auto b0 = ldsm(cta, Tb, [&](int l) { return M::k_frag(l, 0, ks, KSt); });
          const auto b1 = ldsm(cta, Tb, [&](int l) { return M::k_frag(l, 1, ks, KSt); });
          mma(s[0], af, b0[0], b0[1]);
          mma(s[1], af, b0[2], b0[3]);
          mma(s[2], af, b1[0], b1[1]);
          mma(s[3], af, b1[2], b1[3]);
        }
        for (int lane = 0; lane < 32; ++lane)
          for (int nt = 0; nt < 4; ++nt)
            for (int hr = 0; hr < 2; ++hr) {
              const std::array<float, 2> v{s[size_t(nt)][size_t(2 * hr)][size_t(lane)],
                                           s[size_t(nt)][size_t(2 * hr + 1)][size_t(lane)]};
              cta.st(warp * 32 + lane, Sp + 4u * uint32_t(M::score_off(warp, lane, nt, hr)), v);
            }
      }
      cta.bar_sync();
      // 2. online softmax
      for (int warp = 0; warp < kNW; ++warp)
        for (int i = 0; i < RPW; ++i) {
          const int r = M::softmax_head<MT>(warp, i);
          emu::LaneF32 x{}, pf{}, al{}, mn{};
          std::array<uint16_t, 32> pb{};
          for (int lane = 0; lane < 32; ++lane) {
            float v = 0.f;
            for (int pp = 0; pp < NP; ++pp)
              v += cta.ld<float>(warp * 32 + lane,
                                 Sp + 4u * uint32_t(M::score_sum_off<MT>(r, pp, lane)));
            x[size_t(lane)] = lane < nk ? v * P.scale : -kInf;
          }
          const emu::LaneF32 xm = warp_max(x);
          auto& m = m_[size_t(warp)][size_t(i)];
          for (size_t lane = 0; lane < 32; ++lane) {
            const bool vis = int(lane) < nk;
            mn[lane] = std::fmax(m[lane], xm[lane]);
            pb[lane] = bf(vis ? std::exp(x[lane] - mn[lane]) : 0.f);
            al[lane] = m[lane] == -kInf ? 0.f : std::exp(m[lane] - mn[lane]);
            pf[lane] = fb(pb[lane]);
          }
          const emu::LaneF32 ps = warp_sum(pf);
          auto& l = l_[size_t(warp)][size_t(i)];
          for (int lane = 0; lane < 32; ++lane) {
            const size_t L = size_t(lane);
            l[L] = std::fma(l[L], al[L], ps[L]);   // nvcc contracts l * al + sum
            m[L] = mn[L];
            cta.st(warp * 32 + lane, Ps + 2u * uint32_t(M::p_elem(r, lane)), pb[L]);
            if (lane == 0) cta.st(warp * 32, alpha + 4u * uint32_t(r), al[0]);
          }
        }
      cta.bar_sync();
      // 3. O = alpha O + P V
      for (int warp = 0; warp < kNW; ++warp) {
        for (int mt = 0; mt < MT; ++mt)
          for (int lane = 0; lane < 32; ++lane) {
            const int tid = warp * 32 + lane;
            const float a0 = cta.ld<float>(tid, alpha + 4u * uint32_t(M::acc_head(mt, lane, 0)));
            const float a1 = cta.ld<float>(tid, alpha + 4u * uint32_t(M::acc_head(mt, lane, 1)));
            for (int i = 0; i < M::kCPW; ++i)
              for (int hf = 0; hf < 2; ++hf) {
                Acc& c = acc(warp, mt, i, hf);
                c[0][size_t(lane)] *= a0;
                c[1][size_t(lane)] *= a0;
                c[2][size_t(lane)] *= a1;
                c[3][size_t(lane)] *= a1;
              }
          }
        for (int kk = 0; kk < M::kBK / 16; ++kk) {
          std::array<std::array<emu::LaneU32, 4>, MT> pa;
          for (int mt = 0; mt < MT; ++mt)
            pa[size_t(mt)] = ldsm(cta, Ps, [&](int l) { return M::p_frag(l, mt, kk); });
          for (int i = 0; i < M::kCPW; ++i) {
            const int col = M::pv_col(c0, warp, i);
            if (col >= R) continue;
            const auto vb = ldsm(cta, Tb, [&](int l) { return M::v_frag(l, kk, col, KSt); }, true);
            for (int mt = 0; mt < MT; ++mt) {
              mma(acc(warp, mt, i, 0), pa[size_t(mt)], vb[0], vb[1]);
              mma(acc(warp, mt, i, 1), pa[size_t(mt)], vb[2], vb[3]);
            }
          }
        }
      }
    }
    for (int warp = 0; warp < kNW; ++warp)
      for (int i = 0; i < RPW; ++i) {
        const uint32_t r = uint32_t(M::softmax_head<MT>(warp, i));
        cta.st(warp * 32, mrow + 4u * r, m_[size_t(warp)][size_t(i)][0]);
        cta.st(warp * 32, lrow + 4u * r, l_[size_t(warp)][size_t(i)][0]);
      }
    cta.bar_sync();
    for (int warp = 0; warp < kNW; ++warp)
      for (int lane = 0; lane < 32; ++lane)
        for (int mt = 0; mt < MT; ++mt)
          for (int hr = 0; hr < 2; ++hr) {
            const int tid = warp * 32 + lane, hh = M::acc_head(mt, lane, hr), h = hg0 + hh;
            if (h >= H) continue;
            Buf* dst = &out.po;
            int64_t row = 0;
            float inv = 1.f;
            if (pl.splits == 1) {
              dst = &out.out;
              row = M::out_row(n, H, h) * R;
              const float lr = cta.ld<float>(tid, lrow + 4u * uint32_t(hh));
              inv = lr > 0.f ? 1.f / lr : 0.f;
            } else {
              row = M::part_row(n, pl.splits, sp, H, h) * R;
            }
            for (int i = 0; i < M::kCPW; ++i) {
              const int col = M::pv_col(c0, warp, i);
              if (col >= R) continue;
              for (int hf = 0; hf < 2; ++hf) {
                const Acc& c = acc(warp, mt, i, hf);
                dst->store(row + M::acc_col(col, hf, lane), c[size_t(2 * hr)][size_t(lane)] * inv);
                dst->store(row + M::acc_col(col, hf, lane) + 1,
                           c[size_t(2 * hr + 1)][size_t(lane)] * inv);
              }
            }
          }
    for (int tid = 0; tid < kNT; ++tid)
      if (pl.splits > 1 && M::ml_writer(cg, tid, HG, hg0, H)) {
        const int64_t at = M::part_row(n, pl.splits, sp, H, hg0 + tid);
        out.pm.store(at, cta.ld<float>(tid, mrow + 4u * uint32_t(tid)));
        out.pl.store(at, cta.ld<float>(tid, lrow + 4u * uint32_t(tid)));
      }
    if (cta.in_flight() != 0) throw emu::EmuError("cp.async copies in flight at exit");
    copies += cta.copies();
  }

 private:
  Acc& acc(int warp, int mt, int i, int hf) {
    return acc_[size_t(((warp * MT + mt) * M::kCPW + i) * 2 + hf)];
  }
  template <class F>
  static std::array<emu::LaneU32, 4> ldsm(emu::Cta& cta, uint32_t tile, F&& off,
                                          bool trans = false) {
    emu::LaneU32 a{};
    for (int l = 0; l < 32; ++l) a[size_t(l)] = tile + 2u * uint32_t(off(l));
    return cta.ldmatrix<4>(a, trans);
  }
  void mma(Acc& c, const std::array<emu::LaneU32, 4>& a, const emu::LaneU32& b0,
           const emu::LaneU32& b1) {
    emu::mma_m16n8k16_bf16(c, a, b0, b1);
    ++mmas;
  }
  float q_load(const float* p) const {
    size_t i = 0;
    if (inside(P.q_lat, p, 1, i)) return P.q_lat[i];
    if (inside(P.q_pe, p, 1, i)) return P.q_pe[i];
    throw emu::EmuError("q read outside q_lat and q_pe");
  }
  // cp16 of the kernel: a predicated-off copy zero-fills (src, the cache's base, not read); a
  // predicated-on one must read one 16-byte chunk of a visible key [vis0, vis1) of the row.
  void copy_chunk(emu::Cta& cta, int tid, uint32_t dst, const uint16_t* src, bool ok,
                  int64_t vis0, int64_t vis1) {
    const emu::GlobalSpan gc{P.ckv.data(), P.ckv.size() * 2}, gk{P.kpe.data(), P.kpe.size() * 2};
    if (!ok) {
      if (src != P.ckv.data()) ++bad_chunks;
      cta.cp_async16(tid, dst, gc, 0, 0);
      return;
    }
    size_t i = 0;
    const bool lat = inside(P.ckv, src, 8, i);
    if (!lat && !inside(P.kpe, src, 8, i))
      throw emu::EmuError("cp.async source outside ckv and kpe");
    const int64_t width = lat ? P.R : P.Dr, key = int64_t(i) / width, col = int64_t(i) % width;
    if (key < vis0 || key >= vis1 || col % 8 != 0 || col + 8 > width) ++bad_chunks;
    cta.cp_async16(tid, dst, lat ? gc : gk, i * 2, 16);
  }

  const Problem& P;
  const Plan& pl;
  Outputs& out;
  std::array<std::array<emu::LaneF32, RPW>, kNW> m_{}, l_{};
  std::vector<Acc> acc_;   // [warp][mt][chunk][8-column half]
};

// mla_combine_kernel (kernels/mla_decode.cu) per (n, h): lanes over splits, butterfly max and
// sum, two FMA chains over the splits per column; partials of empty splits (weight 0) are
// never used. Their po was never written.
inline void combine(const Problem& P, const Plan& pl, Outputs& o) {
  const int H = P.H, R = P.R, splits = pl.splits;
  for (int n = 0; n < P.N; ++n)
    for (int h = 0; h < H; ++h) {
      const int64_t base = int64_t(n) * splits * H + h;   // + s * H
      const auto ml = [&](const Buf& b, int s) { return b.load(base + int64_t(s) * H, true); };
      emu::LaneF32 mx{}, sum{};
      mx.fill(-kInf);
      for (int lane = 0; lane < 32; ++lane)
        for (int s = lane; s < splits; s += 32)
          mx[size_t(lane)] = std::fmax(mx[size_t(lane)], ml(o.pm, s));
      mx = warp_max(mx);
      std::vector<float> w(size_t(splits), 0.f);
      for (int lane = 0; lane < 32; ++lane)
        for (int s = lane; s < splits; s += 32) {
          const float m = ml(o.pm, s);
          const float ws = m == -kInf ? 0.f : std::exp(m - mx[size_t(lane)]);
          w[size_t(s)] = ws;
          sum[size_t(lane)] = std::fma(ws, ml(o.pl, s), sum[size_t(lane)]);
        }
      sum = warp_sum(sum);
      const float inv_s = sum[0] > 0.f ? 1.f / sum[0] : 0.f;
      const int64_t step = int64_t(H) * R;
      for (int r = 0; r < R; ++r) {
        const auto x = [&](int s) {
          return o.po.load(base * R + r + s * step, w[size_t(s)] != 0.f);
        };
        float a0 = 0.f, a1 = 0.f;
        int s = 0;
        for (; s + 2 <= splits; s += 2) {
          const float x0 = x(s), x1 = x(s + 1), w0 = w[size_t(s)], w1 = w[size_t(s + 1)];
          a0 = w0 != 0.f ? std::fma(w0, x0, a0) : a0;
          a1 = w1 != 0.f ? std::fma(w1, x1, a1) : a1;
        }
        if (s < splits) {
          const float xs = x(s), ws = w[size_t(s)];
          a0 = ws != 0.f ? std::fma(ws, xs, a0) : a0;
        }
        o.out.store((int64_t(n) * H + h) * R + r, (a0 + a1) * inv_s);
      }
    }
}

}  // namespace ds::test::mla_emu
