// The wgmma attention kernels' data movement (kernels/flash_attention_sm90.cu), checked on the
// CPU (no GPU, no CUDA): for the forward and each backward pass (dQ, dK, dV, and the fused dK/dV
// pass where the head dims allow it), in 128-row blocks and in the 64-row blocks of
// DS_ATTENTION_ROWS=64 where the kernel has them, every block of
// small problems runs the kernel's copies, commit groups, waits and barriers in the kernel's
// order, with its index arithmetic (kernels/flash_attention_sm90_layout.hpp), over the
// emulator of tests/kernels/warp_emu.hpp; every shared-memory operand a wgmma would read is
// read through the emulator's model of the K-major 128-byte-swizzle descriptor and compared,
// element by element, with the global tensor it must hold (zeros past T and past the head
// dim). The emulator also refuses reads of bytes not yet landed or not published by a
// barrier, copies into bytes read since the last barrier or still in flight, and copies from
// outside an operand. Last, every (row, column) pair the causal / segment mask lets through
// must lie in a tile its warpgroup processed. First, the descriptor model against the layout
// the H200-verified FP8 GEMM stores (sm90_fp8_gemm.cu load_tile).
// What it cannot show: that wgmma reads what the PTX ISA says, the arithmetic (register
// fragments, softmax), or speed; the GPU test (test_ops_attention.cpp) covers the numbers.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/flash_attention_sm90_layout.hpp"
#include "warp_emu.hpp"

namespace emu = ds::test::emu;
namespace L = ds::cuda::fa90;

TEST_CASE("warp emulator: the wgmma K-major 128B-swizzle read of the FP8 GEMM's stored tile") {
  // 128 rows x 128 bytes, staged with sm90_fp8_gemm.cu's store formula (row r's 16-byte unit
  // ch at r * 128 + ((ch ^ (r & 7)) << 4)); byte (r, x) holds a value naming it.
  emu::Cta cta(2 * 16384, 1, 0);
  std::vector<uint8_t> img(128 * 128);
  for (int r = 0; r < 128; ++r)
    for (int x = 0; x < 128; ++x) img[size_t(r * 128 + x)] = uint8_t((r * 131 + x * 7) & 0xff);
  const emu::GlobalSpan g{img.data(), img.size()};
  const uint32_t base = 16384;   // 1024-aligned
  for (int r = 0; r < 128; ++r)
    for (int ch = 0; ch < 8; ++ch)
      cta.cp_async16(0, base + uint32_t(r * 128 + ((ch ^ (r & 7)) << 4)), g,
                     size_t(r * 128 + ch * 16), 16);
  cta.commit_group(0);
  cta.wait_group(0, 0);
  cta.bar_sync();
  for (int step = 0; step < 4; ++step)   // the kernel's k32 steps: start + 32 bytes each
    for (int rows : {64, 128}) {
      const std::vector<uint16_t> v = cta.wgmma_kmajor_sw128(base + 32u * uint32_t(step), rows);
      bool ok = true;
      for (int r = 0; r < rows; ++r)
        for (int k = 0; k < 16; ++k) {
          const int x = 32 * step + 2 * k;
          const uint16_t want =
              uint16_t(img[size_t(r * 128 + x)] | img[size_t(r * 128 + x + 1)] << 8);
          ok = ok && v[size_t(r * 16 + k)] == want;
        }
      CHECK(ok);
    }
  // An unaligned tile (not on 1024 bytes) reads other bytes: the alignment matters.
  emu::Cta c2(4096, 1, 0);
  std::vector<uint8_t> z(16, 0);
  for (uint32_t o = 0; o < 4096; o += 16) c2.cp_async16(0, o, {z.data(), 16}, 0, 16);
  c2.commit_group(0);
  c2.wait_group(0, 0);
  c2.bar_sync();
  CHECK_THROWS_AS(c2.wgmma_kmajor_sw128(3, 8), emu::EmuError);   // not 16-byte aligned
}

namespace {

enum class Kind { fwd, dq, dk, dv, dkv, all };
std::string name(Kind k) {
  return k == Kind::fwd ? "forward" : k == Kind::dq ? "dQ" : k == Kind::dk ? "dK"
       : k == Kind::dv ? "dV" : k == Kind::dkv ? "dK/dV" : "one-pass";
}
int pass_of(Kind k) {
  return k == Kind::dq ? L::kDQ : k == Kind::dk ? L::kDK : k == Kind::dv ? L::kDV
       : k == Kind::dkv ? L::kDKV : L::kAll;
}

// A (B, T, H, D) BF16 tensor whose codes name their element (never 0, so a zero-filled
// element is told apart), and its transposed copy (B*H, D, Tp) as to_bf16_t_kernel writes it.
struct Tensor4 {
  int D = 0;
  std::vector<uint16_t> x, xt;
};
Tensor4 make(int id, int B, int T, int H, int D) {
  Tensor4 t;
  t.D = D;
  const int Tp = L::padded_rows(T);
  t.x.resize(size_t(B) * T * H * D);
  for (size_t i = 0; i < t.x.size(); ++i)
    t.x[i] = uint16_t(1 + (i * 2654435761u + id * 40503u) % 65521u);
  t.xt.assign(size_t(B) * H * D * Tp, 0);
  for (int b = 0; b < B; ++b)
    for (int tt = 0; tt < T; ++tt)
      for (int h = 0; h < H; ++h)
        for (int d = 0; d < D; ++d)
          t.xt[size_t(L::t_index(int64_t(b) * H + h, d, tt, D, Tp))] =
              t.x[((size_t(b) * T + tt) * H + h) * D + d];
  return t;
}

struct Problem {
  int B, T, H, Dk, Dv;
  std::vector<int32_t> seg;   // (B, T) or empty
  bool visible(int b, int i, int j) const {   // query i sees key j
    return j <= i && (seg.empty() || seg[size_t(b * T + i)] == seg[size_t(b * T + j)]);
  }
};

// The schedules of the 128-row blocks (flash_attention_sm90.cu): lockstep, staggered
// warpgroups, pipelined warpgroups (a tile's first products under the previous tile's
// outputs); pipelined_tight: the pipelined order on lockstep's ring, a mutation the
// emulation must reject (the previous tile's stage is refilled before its outputs read it);
// onepass_nobar: the one-pass kernel without the barrier between its dS^T stores and its dQ
// products; onepass_onebuf: the pipelined one-pass kernel with one dS^T buffer; onepass_zsame:
// the pipelined one-pass kernel copying a tile's Z part with its Y part (not a barrier
// later): mutations the emulation must reject.
enum class Sched {
  lockstep, staggered, pipelined, pipelined_tight, onepass_nobar, onepass_onebuf, onepass_zsame
};

// One block of bq rows (kBQ, or kBQ64 where the kernel is built for it) of one kernel,
// b = B - 1, h = H - 1 (non-zero offsets), under schedule sc (not lockstep: kBQ rows).
// Returns the number of operand reads checked.
int64_t run_block(const Problem& P, Kind kind, int bq, Sched sc, int bx, const Tensor4& q,
                  const Tensor4& k, const Tensor4& v, const Tensor4& dout) {
  const bool one = kind == Kind::all;   // the one-pass kernel: also dS^T and dQ products
  const bool stag = sc == Sched::staggered;
  const bool pipe = sc == Sched::pipelined || sc == Sched::pipelined_tight ||
                    sc == Sched::onepass_onebuf || sc == Sched::onepass_zsame;
  // the ring with one more stage (the pipelined one-pass kernel lags its Z parts instead)
  const bool lag = !one && (stag || sc == Sched::pipelined);
  const bool onepipe = one && pipe;
  const int B = P.B, T = P.T, H = P.H, Dk = P.Dk, Dv = P.Dv, b = B - 1, h = H - 1;
  const int Tp = L::padded_rows(T), nbx = (T + bq - 1) / bq, nt = L::block_threads(bq);
  const bool rows_are_queries = kind == Kind::fwd || kind == Kind::dq;
  const int pass = pass_of(kind);
  const bool dp = kind == Kind::dq || kind == Kind::dk || kind == Kind::dkv || one;
  // The operands: X (block rows), Y (streamed tiles), Z^T (transposed tiles).
  const Tensor4& xk = rows_are_queries ? q : k;
  const Tensor4& yk = rows_are_queries ? k : q;
  const Tensor4& xv = kind == Kind::dq ? dout : v;
  const Tensor4& yv = kind == Kind::dq ? v : dout;
  const Tensor4& z = kind == Kind::fwd ? v : kind == Kind::dq ? k
                   : kind == Kind::dk || kind == Kind::dkv || one ? q : dout;
  const bool z2 = kind == Kind::dkv || one;   // dO^T, for dV
  const int N = z.D;
  const int stages = kind == Kind::fwd ? (lag ? L::kStagStages : L::kStages)
                                       : (lag ? L::kStagBwdStages : L::kBwdStages);
  uint32_t xk_at, xv_at = 0, stage0, stage_bytes, yv_at = 0, z_at, z2_at = 0, bytes;
  uint32_t kt_at = 0, ds_at = 0;
  if (kind == Kind::fwd) {
    const L::FwdSmem S = L::fwd_smem(Dk, Dv, bq, stages);
    xk_at = S.q, stage0 = S.stages, stage_bytes = S.stage_bytes, z_at = S.vt, bytes = S.bytes;
  } else {
    const L::BwdSmem S = L::bwd_smem(Dk, Dv, pass, bq, stages);
    xk_at = S.xk, xv_at = S.xv, stage0 = S.stages, stage_bytes = S.stage_bytes, yv_at = S.yv;
    z_at = S.z, z2_at = S.z2, bytes = S.bytes, kt_at = S.kt, ds_at = S.ds;
  }
  if (one) REQUIRE((bq == L::kBQ && sc != Sched::staggered && sc != Sched::pipelined_tight));
  REQUIRE(bytes + 1024 <= 227 * 1024);
  emu::Cta cta(bytes, nt, 0);
  const int x0 = L::block_row0(rows_are_queries, bx, nbx, bq);

  auto load_rows = [&](uint32_t dst, const Tensor4& src, int rows, int r0) {
    REQUIRE(rows * L::chunks(src.D) * 8 % nt == 0);
    const emu::GlobalSpan g{src.x.data(), src.x.size() * 2};
    for (int tid = 0; tid < nt; ++tid)
      for (int i = 0; i < L::row_copies(rows, src.D, nt); ++i) {
        const L::RowCopy c = L::row_copy(tid + i * nt, rows);
        const int col = L::row_copy_col(c);
        const bool ok = r0 + c.r < T && col < src.D;
        const size_t off = ok ? (((size_t(b) * T + r0 + c.r) * H + h) * src.D + col) * 2 : 0;
        cta.cp_async16(tid, dst + L::row_copy_dst(c, rows), g, off, ok ? 16 : 0);
      }
  };
  auto load_t = [&](uint32_t dst, const Tensor4& src, int tb, bool ok = true) {
    REQUIRE(src.D * 8 % nt == 0);
    const emu::GlobalSpan g{src.xt.data(), src.xt.size() * 2};
    for (int tid = 0; tid < nt; ++tid)
      for (int i = 0; i < L::t_copies(src.D, nt); ++i) {
        const int e = tid + i * nt, r = L::t_copy_row(e), u = L::t_copy_unit(e);
        const size_t off =
            ok ? size_t(L::t_index(int64_t(b) * H + h, r, tb + u * 8, src.D, Tp)) * 2 : 0;
        cta.cp_async16(tid, dst + L::swizzled(r, u), g, off, ok ? 16 : 0);
      }
  };
  auto commit_all = [&] {
    for (int tid = 0; tid < nt; ++tid) cta.commit_group(tid);
  };
  // The block's streamed tiles (the segment bounds as the pre-pass computes them).
  L::Tiles tiles{};
  if (rows_are_queries) {
    int klo = P.seg.empty() ? 0 : T;
    for (int i = x0; i < std::min(x0 + bq, T) && !P.seg.empty(); ++i) {
      int first = i;   // any layout: the first key with the query's label
      for (int j = 0; j < i; ++j)
        if (P.seg[size_t(b * T + j)] == P.seg[size_t(b * T + i)]) {
          first = j;
          break;
        }
      klo = std::min(klo, first);
    }
    tiles = L::key_tiles(klo, x0, T, bq);
  } else {
    int qhi = P.seg.empty() ? T : 0;
    for (int j = x0; j < std::min(x0 + bq, T) && !P.seg.empty(); ++j) {
      int last = j;
      for (int i = T - 1; i > j; --i)
        if (P.seg[size_t(b * T + i)] == P.seg[size_t(b * T + j)]) {
          last = i;
          break;
        }
      qhi = std::max(qhi, last + 1);
    }
    tiles = L::query_tiles(x0, qhi);
  }
  const int ntiles = tiles.t1 - tiles.t0;
  REQUIRE(ntiles >= 1);
  auto stage = [&](int s) { return stage0 + uint32_t(s) * stage_bytes; };
  auto load_tile = [&](int s, int it) {
    const int tb = (tiles.t0 + it) * L::kBK;
    load_rows(stage(s), yk, L::kBK, tb);
    if (dp) load_rows(stage(s) + yv_at, yv, L::kBK, tb);
    load_t(stage(s) + z_at, z, tb);
    if (z2) load_t(stage(s) + z2_at, dout, tb);
  };

  // Expected element of a read: natural tensors (zero past T or D) and transposed tiles.
  auto want_row = [&](const Tensor4& t, int row, int col) -> uint16_t {
    if (row >= T || col >= t.D) return 0;
    return t.x[((size_t(b) * T + row) * H + h) * t.D + col];
  };
  int64_t reads = 0;
  std::vector<std::vector<char>> done(2, std::vector<char>(size_t(Tp / L::kBK), 0));
  auto check_rows = [&](uint32_t start, int rows, const Tensor4& t, int row0, int col0,
                        const std::string& what) {
    const std::vector<uint16_t> got = cta.wgmma_kmajor_sw128(start, rows);
    int bad = 0;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < 16; ++c)
        bad += got[size_t(r * 16 + c)] != want_row(t, row0 + r, col0 + c);
    CHECK_MESSAGE(bad == 0, what << ": " << bad << " wrong elements");
    ++reads;
  };
  auto check_t = [&](uint32_t start, const Tensor4& t, int tb, const std::string& what) {
    const std::vector<uint16_t> got = cta.wgmma_kmajor_sw128(start, t.D);
    int bad = 0;
    for (int r = 0; r < t.D; ++r)
      for (int c = 0; c < 16; ++c) bad += got[size_t(r * 16 + c)] != want_row(t, tb + c, r);
    CHECK_MESSAGE(bad == 0, what << ": " << bad << " wrong elements");
    ++reads;
  };

  // The kernel: block rows, then ring_dist tiles, one commit group each (rows in the first).
  load_rows(xk_at, xk, bq, x0);
  if (dp) load_rows(xv_at, xv, bq, x0);
  if (one) {   // the block's K^T: two chunks of 64 keys, the second zeros past Tp
    load_t(kt_at, k, x0);
    load_t(kt_at + uint32_t(Dk) * 128u, k, x0 + L::kBK, x0 + L::kBK < Tp);
  }
  auto load_y = [&](int s, int t) {   // a tile's Y part, then its Z part
    const int tb = (tiles.t0 + t) * L::kBK;
    load_rows(stage(s), yk, L::kBK, tb);
    load_rows(stage(s) + yv_at, yv, L::kBK, tb);
  };
  auto load_z = [&](int s, int t) {
    const int tb = (tiles.t0 + t) * L::kBK;
    load_t(stage(s) + z_at, z, tb);
    load_t(stage(s) + z2_at, dout, tb);
  };
  if (onepipe) {   // the pipelined one-pass kernel: tile 0's Y part (and Z, mutated)
    load_y(0, 0);
    if (sc == Sched::onepass_zsame) load_z(0, 0);
    commit_all();
  }
  for (int s = 0; !onepipe && s < L::ring_dist(stages, lag); ++s) {
    if (s < ntiles) load_tile(s, s);
    commit_all();
  }
  auto ring_sync = [&](int it) {   // barrier it: waits, the barrier, the refill
    for (int tid = 0; tid < nt; ++tid) cta.wait_group(tid, L::ring_wait(stages, lag));
    cta.bar_sync();
    if (const int nx = L::ring_refill(it, stages, lag); nx < ntiles)
      load_tile(L::ring_stage(nx, stages), nx);
    commit_all();
  };
  auto skip = [&](int wg, int it) {
    const int tb = (tiles.t0 + it) * L::kBK, r0 = x0 + wg * 64;
    return rows_are_queries ? L::skip_query_rows(tb, r0, T) : L::skip_key_rows(tb, r0, T);
  };
  auto where = [&](int wg, int it) {
    return name(kind) + (stag ? " staggered" : pipe ? " pipelined" : "") + " rows " +
           std::to_string(bq) + " block " +
           std::to_string(bx) + " tile " + std::to_string((tiles.t0 + it) * L::kBK) + " wg " +
           std::to_string(wg);
  };
  auto first = [&](int wg, int it) {   // warpgroup wg's S (or S^T), dP (or dP^T) of tile it
    if (skip(wg, it) && !onepipe) return;   // (that kernel skips no tile)
    const int tb = (tiles.t0 + it) * L::kBK, r0 = x0 + wg * 64;
    const uint32_t ya = stage(L::ring_stage(it, stages));
    const std::string at = where(wg, it);
    done[size_t(wg)][size_t(tb / L::kBK)] = 1;
    for (int kk = 0; kk < Dk / 16; ++kk) {   // S (or S^T) = X_k Y_k^T
      check_rows(L::kstep(L::wg_rows(xk_at, wg), bq, kk), 64, xk, r0, 16 * kk, at + " X_k");
      check_rows(L::kstep(ya, L::kBK, kk), L::kBK, yk, tb, 16 * kk, at + " Y_k");
    }
    for (int kk = 0; dp && kk < Dv / 16; ++kk) {   // dP (or dP^T) = X_v Y_v^T
      check_rows(L::kstep(L::wg_rows(xv_at, wg), bq, kk), 64, xv, r0, 16 * kk, at + " X_v");
      check_rows(L::kstep(ya + yv_at, L::kBK, kk), L::kBK, yv, tb, 16 * kk, at + " Y_v");
    }
  };
  auto rest = [&](int wg, int it) {   // warpgroup wg's output products of tile it
    if (skip(wg, it) && !one) return;   // the one-pass kernel multiplies zeros instead
    const int tb = (tiles.t0 + it) * L::kBK;
    const uint32_t ya = stage(L::ring_stage(it, stages));
    const std::string at = where(wg, it);
    for (int kk = 0; kk < L::kBK / 16; ++kk)   // the output product's B: Z^T
      check_t(L::kstep(ya + z_at, N, kk), z, tb + 16 * kk, at + " Z^T");
    for (int kk = 0; z2 && kk < L::kBK / 16; ++kk)   // the fused pass's dV product: dO^T
      check_t(L::kstep(ya + z2_at, dout.D, kk), dout, tb + 16 * kk, at + " Z2^T");
  };
  // The one-pass kernel's dS^T stores. Each thread's dS^T accumulators dp[nt][c] hold, by
  // wgmma's m64nN accumulator layout, key row 16 warp + lane/4 + 8 (c >= 2) of its warpgroup
  // and query 8 nt + 2 (lane % 4) + (c & 1) of the tile; acc_to_a packs dp[2kk], dp[2kk + 1]
  // into the register A operand a2[kk] = {dp[2kk][0..1], dp[2kk][2..3], dp[2kk + 1][0..1],
  // dp[2kk + 1][2..3]} (BF16 pairs, lower column low), and the kernel stores a2[kk][j] at
  // L::ds_store. Here each BF16 is a code naming its (block key row, query).
  auto code = [](int r, int c) { return uint16_t(1 + r * 64 + c); };
  auto store_ds = [&](int wg, int buf) {
    const uint32_t dsb = L::ds_buffer(ds_at, bq, buf);
    for (int warp = 0; warp < 4; ++warp)
      for (int lane = 0; lane < 32; ++lane) {
        uint16_t dp[L::kBK / 8][4];
        for (int nt = 0; nt < L::kBK / 8; ++nt)
          for (int c = 0; c < 4; ++c)
            dp[nt][c] = code(wg * 64 + warp * 16 + (lane >> 2) + (c >= 2 ? 8 : 0),
                             8 * nt + 2 * (lane & 3) + (c & 1));
        for (int kk = 0; kk < L::kBK / 16; ++kk) {
          const uint16_t* c0 = dp[2 * kk];
          const uint16_t* c1 = dp[2 * kk + 1];
          const uint32_t a2[4] = {c0[0] | uint32_t(c0[1]) << 16, c0[2] | uint32_t(c0[3]) << 16,
                                  c1[0] | uint32_t(c1[1]) << 16, c1[2] | uint32_t(c1[3]) << 16};
          for (int j = 0; j < 4; ++j)
            cta.st(wg * 128 + warp * 32 + lane, dsb + L::ds_store(wg, warp, lane, kk, j), a2[j]);
        }
      }
  };
  // Its dQ products: A = dS (64 queries x 16 keys a step) read MN-major from ds, B = the
  // warpgroup's Dk/2 rows of the block's K^T; then where the product's accumulators go:
  // D[i][n] (query i of the tile, column n of the warpgroup's half) sits in dq[nt][c] of the
  // thread whose accumulator layout holds (i, n), and must be added into dQ row tb + i, column
  // wg Dk/2 + n: L::dq_row and L::dq_col checked against the accumulator layout as the PTX
  // ISA defines it (an index check, like the others here).
  auto dq_reads = [&](int wg, int it, int buf) {
    const std::string at = where(wg, it) + " dQ";
    for (int kk = 0; kk < 2 * L::kBK / 16; ++kk) {
      const std::vector<uint16_t> a =
          cta.wgmma_mnmajor_sw128(L::dq_a_step(L::ds_buffer(ds_at, bq, buf), kk), 64, 1024u,
                                  1024u);
      int bad = 0;
      for (int i = 0; i < 64; ++i)
        for (int kq = 0; kq < 16; ++kq) bad += a[size_t(i * 16 + kq)] != code(16 * kk + kq, i);
      CHECK_MESSAGE(bad == 0, at << " dS: " << bad << " wrong elements");
      const std::vector<uint16_t> bk = cta.wgmma_kmajor_sw128(L::dq_b_step(kt_at, Dk, wg, kk),
                                                              Dk / 2);
      bad = 0;
      for (int r = 0; r < Dk / 2; ++r)
        for (int c = 0; c < 16; ++c)
          bad += bk[size_t(r * 16 + c)] != want_row(k, x0 + 16 * kk + c, wg * (Dk / 2) + r);
      CHECK_MESSAGE(bad == 0, at << " K^T: " << bad << " wrong elements");
      reads += 2;
    }
    const int tb = (tiles.t0 + it) * L::kBK;
    int bad = 0;
    for (int warp = 0; warp < 4; ++warp)
      for (int lane = 0; lane < 32; ++lane)
        for (int nt = 0; nt < Dk / 16; ++nt)
          for (int c = 0; c < 4; ++c) {
            const int i = 16 * warp + (lane >> 2) + (c >= 2 ? 8 : 0);
            const int n = 8 * nt + 2 * (lane & 3) + (c & 1);
            bad += L::dq_row(tb, warp, lane, c >= 2) != tb + i ||
                   L::dq_col(Dk, wg, nt, lane) + (c & 1) != wg * (Dk / 2) + n;
          }
    CHECK_MESSAGE(bad == 0, at << " atomics: " << bad << " accumulators added elsewhere");
  };
  // Between barriers it and it + 1: in lockstep every warpgroup's tile it; staggered,
  // warpgroup 0's tile it, warpgroup 1's rest of tile it - 1 and first products of tile it
  // (and after the last barrier its rest of the last tile); pipelined, every warpgroup's
  // first products of tile it and the outputs of its previous tile (the outputs of a run's
  // last tile before the next barrier, or after the last).
  // The pipelined one-pass kernel: at barrier it the Y part of tile it + 1 and the Z part of
  // tile it are copied (L::onepass_loads); then tile it's first products, tile it - 1's
  // products (its Z part, its dS^T buffer), tile it's dS^T stores into buffer it % 2.
  for (int it = 0; onepipe && it <= ntiles; ++it) {
    for (int tid = 0; tid < nt; ++tid) cta.wait_group(tid, 0);
    cta.bar_sync();
    L::OnepassLoads ld = L::onepass_loads(it, ntiles);
    if (sc == Sched::onepass_zsame) ld.z = ld.y;
    if (ld.y >= 0) load_y(L::ring_stage(ld.y, stages), ld.y);
    if (ld.z >= 0) load_z(L::ring_stage(ld.z, stages), ld.z);
    commit_all();
    const int buf = sc == Sched::onepass_onebuf ? 0 : it & 1;
    const int pbuf = sc == Sched::onepass_onebuf ? 0 : (it - 1) & 1;
    for (int wg = 0; it < ntiles && wg < bq / 64; ++wg) first(wg, it);
    for (int wg = 0; it > 0 && wg < bq / 64; ++wg) {
      rest(wg, it - 1);
      dq_reads(wg, it - 1, pbuf);
    }
    for (int wg = 0; it < ntiles && wg < bq / 64; ++wg) store_ds(wg, buf);
  }
  std::vector<int> pend(size_t(bq / 64), -1);
  for (int it = 0; !onepipe && it < ntiles; ++it) {
    for (int wg = 0; pipe && wg < bq / 64; ++wg)   // a run ends: its last outputs
      if (pend[size_t(wg)] >= 0 && skip(wg, it)) {
        rest(wg, pend[size_t(wg)]);
        pend[size_t(wg)] = -1;
      }
    ring_sync(it);
    for (int wg = 0; wg < bq / 64; ++wg) {
      int& pw = pend[size_t(wg)];
      if (pipe) {
        if (skip(wg, it)) continue;
        first(wg, it);
        if (pw >= 0) rest(wg, pw);
        pw = it;
      } else if (stag && wg == 1) {
        if (it > 0) rest(wg, it - 1);
        first(wg, it);
      } else {
        first(wg, it);
        rest(wg, it);
        if (one) store_ds(wg, 0);
      }
    }
    if (one) {   // the barrier after the dS^T stores, then every warpgroup's dQ products
      if (sc != Sched::onepass_nobar) cta.bar_sync();
      for (int wg = 0; wg < bq / 64; ++wg) dq_reads(wg, it, 0);
    }
  }
  if (stag && ntiles > 0) rest(1, ntiles - 1);
  for (int wg = 0; pipe && wg < bq / 64; ++wg)
    if (pend[size_t(wg)] >= 0) rest(wg, pend[size_t(wg)]);
  for (int tid = 0; tid < nt; ++tid) cta.wait_group(tid, 0);
  CHECK(cta.in_flight() == 0);
  // Every visible pair of a warpgroup's row and a column lies in a tile it processed.
  int missed = 0;
  for (int wg = 0; wg < bq / 64; ++wg)
    for (int r = x0 + wg * 64; r < std::min(x0 + wg * 64 + 64, T); ++r)
      for (int c = 0; c < T; ++c) {
        const bool vis = rows_are_queries ? P.visible(b, r, c) : P.visible(b, c, r);
        if (vis && !done[size_t(wg)][size_t(c / L::kBK)]) ++missed;
      }
  CHECK_MESSAGE(missed == 0, name(kind) << " rows " << bq << " block " << bx << ": " << missed
                                        << " visible pairs in tiles never processed");
  return reads;
}

// Whether the kernel of this kind and head dims has a 64-row build (flash_attention_sm90.cu).
bool built64(Kind kind, int Dk, int Dv) {
  if (kind == Kind::fwd) return L::rows64_fwd(Dk, Dv);
  return L::rows64_bwd(Dk, Dv, pass_of(kind));
}

// Whether it has a staggered build (flash_attention_sm90.cu).
bool built_stag(Kind kind, int Dk, int Dv) {
  if (kind == Kind::fwd) return L::stag_fwd(Dk, Dv);
  return L::stag_bwd(Dk, Dv, pass_of(kind));
}

std::vector<int32_t> segments(int B, int T, int kind) {   // 0 none, 1 runs, 2 labels
  std::vector<int32_t> s;
  if (kind == 0) return s;
  s.resize(size_t(B) * T);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      s[size_t(b * T + t)] = kind == 1 ? (t < T / 3 ? 5 : t < (2 * T) / 3 ? 6 : 7)
                                       : int((t * 7 + b) % 3);
  return s;
}

}  // namespace

TEST_CASE("wgmma attention: every operand read holds its tensor, with no race, all tiles covered") {
  const int dims[][2] = {{64, 64}, {96, 64}, {128, 128}, {192, 128}};
  int64_t reads = 0;
  for (const auto& d : dims)
    for (int T : {1, 64, 130, 333})
      for (int sk : {0, 1, 2}) {
        if (T > 130 && (d[0] == 128 || sk == 2)) continue;   // keep the run short
        Problem P{2, T, 2, d[0], d[1], segments(2, T, sk)};
        CAPTURE(T);
        CAPTURE(d[0]);
        CAPTURE(sk);
        const Tensor4 q = make(1, P.B, T, P.H, P.Dk), k = make(2, P.B, T, P.H, P.Dk);
        const Tensor4 v = make(3, P.B, T, P.H, P.Dv), dout = make(4, P.B, T, P.H, P.Dv);
        for (Kind kind : {Kind::fwd, Kind::dq, Kind::dk, Kind::dv, Kind::dkv, Kind::all})
          // 128 rows, 64 rows, 128 rows staggered, 128 rows pipelined
          for (int variant : {0, 1, 2, 3}) {
            const int bq = variant == 1 ? L::kBQ64 : L::kBQ;
            const Sched sc = variant == 2 ? Sched::staggered
                           : variant == 3 ? Sched::pipelined : Sched::lockstep;
            if ((kind == Kind::dkv || kind == Kind::all) && !L::bwd_fused_fits(P.Dk, P.Dv))
              continue;
            if (bq == L::kBQ64 && !built64(kind, P.Dk, P.Dv)) continue;
            // (the one-pass kernel: pipelined on its own ring, never staggered)
            if (variant == 2 && !built_stag(kind, P.Dk, P.Dv)) continue;
            if (variant == 3 && kind != Kind::all && !built_stag(kind, P.Dk, P.Dv)) continue;
            const int nbx = (T + bq - 1) / bq;
            for (int bx = 0; bx < nbx; ++bx) try {
                reads += run_block(P, kind, bq, sc, bx, q, k, v, dout);
              } catch (const emu::EmuError& e) {
                const std::string msg = name(kind) + " variant " + std::to_string(variant) +
                                        " rows " + std::to_string(bq) + " block " +
                                        std::to_string(bx) + ": " + e.what();
                FAIL_CHECK(msg);
              }
          }
      }
  MESSAGE("wgmma operand reads checked: " << reads);
  CHECK(reads > 1000);
}

TEST_CASE("wgmma attention: the pipelined order needs the ring's extra stage") {
  // on lockstep's ring the previous tile's stage is refilled at the barrier before its
  // outputs read it: every kind with more than a tile or two must fail somewhere
  const Problem P{2, 333, 2, 96, 64, {}};
  const Tensor4 q = make(1, P.B, P.T, P.H, P.Dk), k = make(2, P.B, P.T, P.H, P.Dk);
  const Tensor4 v = make(3, P.B, P.T, P.H, P.Dv), dout = make(4, P.B, P.T, P.H, P.Dv);
  for (Kind kind : {Kind::fwd, Kind::dq, Kind::dk, Kind::dv, Kind::dkv}) {
    CAPTURE(name(kind));
    int caught = 0;
    for (int bx = 0; bx < (P.T + L::kBQ - 1) / L::kBQ; ++bx) {
      run_block(P, kind, L::kBQ, Sched::pipelined, bx, q, k, v, dout);   // the real ring: fine
      try {
        run_block(P, kind, L::kBQ, Sched::pipelined_tight, bx, q, k, v, dout);
      } catch (const emu::EmuError&) {
        ++caught;
      }
    }
    CHECK(caught > 0);
  }
}

TEST_CASE("wgmma attention: the one-pass dQ products need the barrier after the dS^T stores") {
  // without it a warpgroup's dQ product reads the other warpgroup's dS^T stored since the
  // last barrier: every block must fail; with it, none
  for (const auto& d : {std::pair<int, int>{64, 64}, {96, 64}}) {
    const Problem P{2, 200, 2, d.first, d.second, segments(2, 200, 1)};
    CAPTURE(P.Dk);
    const Tensor4 q = make(1, P.B, P.T, P.H, P.Dk), k = make(2, P.B, P.T, P.H, P.Dk);
    const Tensor4 v = make(3, P.B, P.T, P.H, P.Dv), dout = make(4, P.B, P.T, P.H, P.Dv);
    const int nbx = (P.T + L::kBQ - 1) / L::kBQ;
    int caught = 0;
    for (int bx = 0; bx < nbx; ++bx) {
      CHECK(run_block(P, Kind::all, L::kBQ, Sched::lockstep, bx, q, k, v, dout) > 0);
      try {
        run_block(P, Kind::all, L::kBQ, Sched::onepass_nobar, bx, q, k, v, dout);
      } catch (const emu::EmuError&) {
        ++caught;
      }
    }
    CHECK(caught == nbx);
  }
}

TEST_CASE("wgmma attention: the pipelined one-pass kernel needs two dS^T buffers and its Z lag") {
  // One dS^T buffer: tile it's stores overwrite what tile it - 1's dQ products read since the
  // barrier (any block of two tiles or more). The Z part copied with the Y part: tile it + 1's
  // copy lands on the stage tile it - 1's products still read (three tiles or more). T = 333:
  // the three key blocks stream 6, 4 and 2 query tiles. The kernel's order must pass.
  const Problem P{2, 333, 2, 96, 64, {}};
  const Tensor4 q = make(1, P.B, P.T, P.H, P.Dk), k = make(2, P.B, P.T, P.H, P.Dk);
  const Tensor4 v = make(3, P.B, P.T, P.H, P.Dv), dout = make(4, P.B, P.T, P.H, P.Dv);
  const int nbx = (P.T + L::kBQ - 1) / L::kBQ;
  for (const auto& [bad, want] : {std::pair<Sched, int>{Sched::onepass_onebuf, 3},
                                  std::pair<Sched, int>{Sched::onepass_zsame, 2}}) {
    int caught = 0;
    for (int bx = 0; bx < nbx; ++bx) {
      CHECK(run_block(P, Kind::all, L::kBQ, Sched::pipelined, bx, q, k, v, dout) > 0);
      try {
        run_block(P, Kind::all, L::kBQ, bad, bx, q, k, v, dout);
      } catch (const emu::EmuError&) {
        ++caught;
      }
    }
    CHECK_MESSAGE(caught == want, "mutation " << int(bad) << " caught in " << caught << " of "
                                              << nbx << " blocks, expected " << want);
  }
}

TEST_CASE("wgmma attention layout: the shared memory fits and every region is 1024-aligned") {
  const std::pair<int, int> dims[] = {{64, 64}, {96, 64}, {128, 128}, {192, 128}};
  for (const auto& d : dims) {
    const L::FwdSmem f = L::fwd_smem(d.first, d.second);
    CHECK(f.bytes + 1024 <= 227u * 1024u);
    CHECK((f.stages % 1024 == 0 && f.stage_bytes % 1024 == 0 && f.vt % 1024 == 0));
    for (int pass : {L::kDQ, L::kDK, L::kDV, L::kDKV}) {
      if (pass == L::kDKV && !L::bwd_fused_fits(d.first, d.second)) continue;
      const L::BwdSmem s = L::bwd_smem(d.first, d.second, pass);
      CHECK(s.bytes + 1024 <= 227u * 1024u);
      CHECK((s.xv % 1024 == 0 && s.stages % 1024 == 0 && s.stage_bytes % 1024 == 0 &&
             s.yv % 1024 == 0 && s.z % 1024 == 0 && s.z2 % 1024 == 0));
      if (pass == L::kDKV) CHECK(s.z2 == s.z + uint32_t(d.first) * 128u);   // after Q^T
      if (pass == L::kDKV) {   // the one-pass kernel: kDKV's layout, then K^T and dS^T
        const L::BwdSmem o = L::bwd_smem(d.first, d.second, L::kAll);
        CHECK(o.bytes + 1024 <= 227u * 1024u);
        CHECK((o.xv == s.xv && o.stages == s.stages && o.stage_bytes == s.stage_bytes &&
               o.z == s.z && o.z2 == s.z2 && o.kt == s.bytes));
        CHECK((o.kt % 1024 == 0 && o.ds % 1024 == 0 && (uint32_t(d.first) / 2 * 128u) % 1024 == 0));
        CHECK(o.ds == o.kt + 2u * uint32_t(d.first) * 128u);
        CHECK(o.bytes == o.ds + 2u * uint32_t(L::kBQ) * 128u);   // two dS^T buffers
        CHECK(L::ds_buffer(o.ds, L::kBQ, 1) % 1024 == 0);
        CHECK_FALSE(L::rows64_bwd(d.first, d.second, L::kAll));
        CHECK_FALSE(L::stag_bwd(d.first, d.second, L::kAll));
      }
      if (L::rows64_bwd(d.first, d.second, pass)) {   // two 64-row blocks share an SM
        const L::BwdSmem h = L::bwd_smem(d.first, d.second, pass, L::kBQ64);
        CHECK(2 * (h.bytes + 1024 + 1024) <= 228u * 1024u);
        CHECK((h.xv % 1024 == 0 && h.stages % 1024 == 0 && h.stage_bytes == s.stage_bytes));
      }
    }
    if (L::rows64_fwd(d.first, d.second)) {
      const L::FwdSmem h = L::fwd_smem(d.first, d.second, L::kBQ64);
      CHECK(2 * (h.bytes + 1024 + 1024) <= 228u * 1024u);
      CHECK((h.stages % 1024 == 0 && h.stage_bytes == f.stage_bytes));
    }
  }
  // the kernels that have a 64-row build (the launcher still asks the occupancy calculator)
  CHECK(L::rows64_fwd(96, 64));
  CHECK(L::rows64_fwd(128, 128));
  CHECK_FALSE(L::rows64_fwd(192, 128));
  for (int pass : {L::kDQ, L::kDK, L::kDV, L::kDKV}) CHECK(L::rows64_bwd(96, 64, pass));
  CHECK_FALSE(L::rows64_bwd(192, 128, L::kDQ));
  CHECK_FALSE(L::rows64_bwd(192, 128, L::kDK));
  CHECK(L::rows64_bwd(192, 128, L::kDV));
  // the staggered builds: the forward at every head dim, the backward but dQ, dK at 192 / 128
  for (const auto& d : dims) {
    CHECK(L::stag_fwd(d.first, d.second));
    const L::FwdSmem f = L::fwd_smem(d.first, d.second, L::kBQ, L::kStagStages);
    CHECK((f.stages % 1024 == 0 && f.stage_bytes % 1024 == 0));
    for (int pass : {L::kDQ, L::kDK, L::kDV, L::kDKV}) {
      if (pass == L::kDKV && !L::bwd_fused_fits(d.first, d.second)) continue;
      const bool big = d.first == 192 && pass != L::kDV;
      CHECK(L::stag_bwd(d.first, d.second, pass) == !big);
      const L::BwdSmem h = L::bwd_smem(d.first, d.second, pass, L::kBQ, L::kStagBwdStages);
      CHECK((h.stages % 1024 == 0 && h.stage_bytes % 1024 == 0));
    }
  }
  // the ring: staggered, one tile less in flight and one stage more
  CHECK(L::ring_dist(L::kStages) == 2);
  CHECK(L::ring_dist(L::kStagStages, true) == 2);
  CHECK(L::ring_dist(L::kBwdStages) == 1);
  CHECK(L::ring_dist(L::kStagBwdStages, true) == 1);
}
