// Index arithmetic of the tensor-core MLA latent-attention kernel (kernels/mla_decode_tc.cu), in
// plain C++ that nvcc compiles for the device and g++ for the host test
// (tests/kernels/test_layout_mla_tc.cpp runs the kernel's block algorithm on a CPU emulation of
// cp.async, ldmatrix, mma, shared loads / stores and barriers, tests/kernels/warp_emu.hpp).
// Everything that decides where data moves or which thread computes what: the shared-memory
// layout, which block owns which (row, head group, column group, key split), the key split and
// its 32-key tiles and their ring of stages, the 16-byte chunk each thread copies and from
// where, the row address each lane gives ldmatrix, which warp owns which heads / k-steps /
// output columns, where partial scores, P and the accumulators live, and where the output and
// the split partials go; plus the launcher's choices (heads per CTA, stages, splits). The
// rationale (bank conflicts, fragment layouts, sizes) is in the .cu's header comment.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/multi_tensor_index.hpp"   // DS_HD, imin

namespace ds::cuda::mlatc {

constexpr int kBK = 32;                  // keys per tile (= the warp width: softmax lane = key)
constexpr int kNW = 8;                   // warps per CTA
constexpr int kNT = kNW * 32;
constexpr int kCPW = 4;                  // 16-column output chunks per warp
constexpr int kCols = kNW * kCPW * 16;   // output columns per CTA (512)
constexpr int kMaxHeads = 64;            // heads per CTA (4 m-tiles)
constexpr int kPS = kBK + 8;             // P row stride (BF16 elements, 80 bytes)
constexpr int kSPS = kBK + 8;            // partial-score row stride (floats)
constexpr int kMaxStages = 4;

// Heads per CTA (HG, MT m-tiles of 16), score parts per m-tile (NP warps split the k-steps of
// one m-tile) and softmax rows per warp (RPW).
template <int MT>
struct Tiling {
  static_assert(MT >= 1 && MT <= 4, "1..4 m-tiles of 16 heads");
  static constexpr int HG = 16 * MT, NP = kNW / MT, RPW = HG / kNW;
};

// Row pitch (BF16 elements) of q and of a key tile: D + kPad, an odd number of 16-byte units
// so the 8 rows of an ldmatrix hit distinct banks; 16-byte chunks of n BF16 values (a latent
// row R / 8, a tile row D / 8); k-steps of 16 over D.
constexpr int kPad = 8;
DS_HD int row_pitch(int D) { return D + kPad; }
DS_HD int chunks(int n) { return n / 8; }
DS_HD int ksteps(int D) { return D / 16; }

// ---- shared memory --------------------------------------------------------------------------
// Byte offsets from the dynamic shared memory's start: FP32 partial scores (kNW, 16, kSPS);
// alpha, mrow, lrow (HG floats each); q (HG, D + 8) BF16; P (HG, kPS) BF16; the ring of
// `stages` key tiles (kBK, D + 8) BF16, `stage` bytes apart; `bytes` in all. Every region and
// row starts 16-byte aligned (D is a multiple of 16).
struct Smem {
  uint32_t alpha, mrow, lrow, q, p, tiles, stage, bytes;
};
DS_HD Smem smem_layout(int HG, int stages, int D) {
  const uint32_t ksb = uint32_t(row_pitch(D)) * 2u;   // bytes per q / tile row
  const uint32_t alpha = uint32_t(kNW * 16 * kSPS) * 4u, mrow = alpha + uint32_t(HG) * 4u;
  const uint32_t lrow = mrow + uint32_t(HG) * 4u, q = lrow + uint32_t(HG) * 4u;
  const uint32_t p = q + uint32_t(HG) * ksb, tiles = p + uint32_t(HG * kPS) * 2u;
  const uint32_t stage = uint32_t(kBK) * ksb;
  return {alpha, mrow, lrow, q, p, tiles, stage, tiles + uint32_t(stages) * stage};
}
// The same total, in the launcher's arithmetic (any D).
inline size_t smem_bytes(int MT, int stages, int64_t D) {
  const size_t HG = size_t(16 * MT), KSt = size_t(D + kPad);
  return sizeof(float) * (size_t(kNW) * 16 * kSPS + 3 * HG) +
         2 * (HG * KSt + HG * kPS + size_t(stages) * kBK * KSt);
}

// ---- blocks, splits, tiles ------------------------------------------------------------------
// blockIdx.x = (n, cg, g) with g fastest: row n, heads [hg0, hg0 + HG), output columns
// [c0, c0 + kCols) of column group cg.
struct BlockPos {
  int n, hg0, cg, c0;
};
DS_HD BlockPos block_pos(unsigned bx, int groups, int cgroups, int HG) {
  const int GC = groups * cgroups;
  const int n = bx / GC, gi = bx % GC;
  const int hg0 = (gi % groups) * HG, cg = gi / groups, c0 = cg * kCols;
  return {n, hg0, cg, c0};
}
// Output columns of column group c0 (the last may be narrower; R is a multiple of 16).
DS_HD int group_cols(int R, int c0) { return imin(kCols, R - c0); }
// Keys [jb, je) of split sp (KS keys each) of a row with slot sl, visible length ln; empty
// (je == jb) for a bad row (slot outside [0, S), len outside [1, L]) or a split past ln.
struct KeyRange {
  int jb, je;
};
DS_HD KeyRange split_keys(int sp, int KS, int sl, int ln, int S, int L) {
  const bool bad = sl < 0 || sl >= S || ln < 1 || ln > L;
  const int jb = sp * KS, je = bad ? jb : imin(ln, jb + KS);
  return {jb, je};
}
// First cache row (of S * L) of slot sl.
DS_HD int64_t cache_row0(int sl, int L) { return int64_t(sl) * L; }
// Tiles of kBK keys; tile t starts at key tile_key0(jb, t), has tile_keys(je, j0) >= 1 keys
// (the rest of its rows zero-filled) and lives in ring slot t % stages.
DS_HD int tile_count(int jb, int je) { return (je - jb + kBK - 1) / kBK; }
DS_HD int tile_key0(int jb, int t) { return jb + t * kBK; }
DS_HD int tile_keys(int je, int j0) { return imin(kBK, je - j0); }
DS_HD int ring_slot(int t, int stages) { return t % stages; }
// The ring: a prologue of stages - 1 commit groups (tiles 0 .. stages - 2, empty past the
// last tile); iteration it waits until at most ring_pending groups are pending (tile it has
// landed), syncs, then refills tile ring_refill(it) (the slot tile it - 1 used) in one group.
// ring_pending(kMaxStages) <= 2: what the kernel's cp_wait_upto takes.
DS_HD int ring_pending(int stages) { return stages - 2; }
DS_HD int ring_refill(int it, int stages) { return it + stages - 1; }

// ---- global -> shared copies ----------------------------------------------------------------
// Thread (warp, lane)'s 16-byte copies of one tile, in issue order: f(r, c, ok) for tile rows
// r = warp, warp + kNW, .. < kBK and chunks c = lane, lane + 32, .. < CD (D / 8); ok = r < nk,
// false: zero fill (nothing read).
template <class F>
DS_HD void tile_copies(int warp, int lane, int nk, int CD, F&& f) {
  for (int r = warp; r < kBK; r += kNW) {
    const bool ok = r < nk;
    for (int c = lane; c < CD; c += 32) f(r, c, ok);
  }
}
// Source of chunk c (CR = R / 8 latent chunks first, then rope) of absolute cache row `key`
// (slot * L + j), and its element offset in the tile (row stride KSt = D + 8).
template <class T>
DS_HD const T* chunk_src(const T* ckv, const T* kpe, int64_t key, int c, int CR, int R, int Dr) {
  return c < CR ? ckv + key * R + c * 8 : kpe + key * Dr + (c - CR) * 8;
}
DS_HD int tile_elem(int r, int c, int KSt) { return r * KSt + c * 8; }
// q staging: thread (warp, lane) converts the pairs f(hh, d) for group rows hh = warp,
// warp + kNW, .. < HG and dims d = 2 lane, 2 lane + 64, .. < D; the pair's source (row
// qr = n H + h of q_lat / q_pe) and its element offset in q (HG, KSt).
template <class F>
DS_HD void q_pairs(int warp, int lane, int HG, int D, F&& f) {
  for (int hh = warp; hh < HG; hh += kNW)
    for (int d = 2 * lane; d < D; d += 64) f(hh, d);
}
template <class T>
DS_HD const T* q_src(const T* q_lat, const T* q_pe, int64_t qr, int d, int R, int Dr) {
  return d < R ? q_lat + qr * R + d : q_pe + qr * Dr + (d - R);
}
DS_HD int q_elem(int hh, int d, int KSt) { return hh * KSt + d; }

// ---- ldmatrix.x4 lane addresses (element offsets in a tile with row stride ld) --------------
// A (rows r0.., k0..) of a [row][k] tile: lanes 0-15 rows r0+0..15 at k0, 16-31 at k0+8,
// giving a0..a3 in order.
DS_HD int a_off(int lane, int r0, int k0, int ld) {
  return (r0 + (lane & 15)) * ld + k0 + (lane >> 4) * 8;
}
// B from an [n][k] tile (k contiguous), non-trans: b0, b1 of n-tile n0, then of n0+8.
DS_HD int bn_off(int lane, int n0, int k0, int ld) {
  return (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8;
}
// B from a [k][n] tile (n contiguous), trans: b0, b1 of n-tile n0, then of n0+8.
DS_HD int bt_off(int lane, int k0, int n0, int ld) {
  return (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8;
}

// The kernel's fragments: A = q rows of m-tile mt at k-step ks; B = keys 16 half .. +15 (two
// n-tiles) at k-step ks; A = P rows of m-tile mt at key step kk; B = V rows of key step kk,
// columns col .. col + 15 (two n-tiles). Element offsets in q, a tile, P, a tile.
DS_HD int q_frag(int lane, int mt, int ks, int KSt) { return a_off(lane, mt * 16, ks * 16, KSt); }
DS_HD int k_frag(int lane, int half, int ks, int KSt) {
  return bn_off(lane, half * 16, ks * 16, KSt);
}
DS_HD int p_frag(int lane, int mt, int kk) { return a_off(lane, mt * 16, kk * 16, kPS); }
DS_HD int v_frag(int lane, int kk, int col, int KSt) { return bt_off(lane, kk * 16, col, KSt); }

// ---- warp roles -----------------------------------------------------------------------------
// 1. S = Q K^T: warp = mtile * NP + part for warp < MT * NP (MT = 3 leaves two warps idle);
//    part p takes k-steps [kstep(p), kstep(p + 1)) of D / 16; its 16 heads x 32 keys go to
//    its (16, kSPS) slab of partial scores: accumulator e (0..3) of n-tile nt of a lane at
//    score_off(warp, lane, nt, e / 2) (+ e % 2), floats from the scores' start.
template <int MT>
DS_HD int score_mtile(int warp) { return warp / Tiling<MT>::NP; }
template <int MT>
DS_HD int score_part(int warp) { return warp % Tiling<MT>::NP; }
template <int MT>
DS_HD bool score_warp(int warp) { return warp < MT * Tiling<MT>::NP; }
template <int MT>
DS_HD int kstep(int part, int nks) { return part * nks / Tiling<MT>::NP; }
DS_HD int score_off(int warp, int lane, int nt, int hr) {
  return warp * 16 * kSPS + ((lane >> 2) + 8 * hr) * kSPS + nt * 8 + (lane & 3) * 2;
}
// 2. online softmax: warp w owns group rows (heads) softmax_head(w, i), i < RPW, a lane one
//    key; the row's partial score of part pp at score_sum_off(r, pp, lane) (summed in order
//    pp = 0, 1, ..); P of (head r, key) at p_elem(r, key).
template <int MT>
DS_HD int softmax_head(int warp, int i) { return warp * Tiling<MT>::RPW + i; }
template <int MT>
DS_HD int score_sum_off(int r, int pp, int lane) {
  return ((r >> 4) * Tiling<MT>::NP * 16 + (r & 15)) * kSPS + lane + pp * 16 * kSPS;
}
DS_HD int p_elem(int r, int key) { return r * kPS + key; }
// 3. O += P V: warp w owns output columns pv_col(c0, w, i) .. +15, i < kCPW (skipped when
//    >= R), for every head; accumulator [mt][i][hf][e] of a lane is head acc_head(mt, lane,
//    e / 2), column acc_col(col, hf, lane) + e % 2.
DS_HD int pv_col(int c0, int warp, int i) { return c0 + (warp + kNW * i) * 16; }
DS_HD int acc_head(int mt, int lane, int hr) { return mt * 16 + (lane >> 2) + 8 * hr; }
DS_HD int acc_col(int col, int hf, int lane) { return col + hf * 8 + (lane & 3) * 2; }

// ---- results --------------------------------------------------------------------------------
// out (N, H, R): row (n, h) at out_row * R. Partials of split sp (several splits): po
// (N, splits, H, R) at part_row * R, pm / pl (N, splits, H) at part_row.
DS_HD int64_t out_row(int n, int H, int h) { return int64_t(n) * H + h; }
DS_HD int64_t part_row(int n, int splits, int sp, int H, int h) {
  return (int64_t(n) * splits + sp) * H + h;
}
// An empty block with one split zeroes its output: thread (warp, lane) the columns c0 + c of
// group rows f(hh, c) for hh = warp, warp + kNW, .. < HG (real heads: hg0 + hh < H) and
// c = lane, lane + 32, .. < ncols.
template <class F>
DS_HD void zero_rows(int warp, int lane, int HG, int hg0, int H, int ncols, F&& f) {
  for (int hh = warp; hh < HG; hh += kNW) {
    if (hg0 + hh >= H) break;
    for (int c = lane; c < ncols; c += 32) f(hh, c);
  }
}
// With several splits, thread tid of column group 0 writes (m, l) of group row tid.
DS_HD bool ml_writer(int cg, int tid, int HG, int hg0, int H) {
  return cg == 0 && tid < HG && hg0 + tid < H;
}

// ---- launcher choices -----------------------------------------------------------------------
// Heads: the fewest groups of at most kMaxHeads, each padded to m-tiles of 16; fewer m-tiles
// when q and two tiles do not fit in `cap` bytes. Then the deepest ring that fits.
inline int head_mtiles(int64_t H, int64_t D, size_t cap) {
  const int64_t groups0 = (H + kMaxHeads - 1) / kMaxHeads;
  int MT = int(((H + groups0 - 1) / groups0 + 15) / 16);
  while (MT > 1 && smem_bytes(MT, 2, D) > cap) --MT;
  return MT;
}
inline int ring_stages(int MT, int64_t D, size_t cap) {
  int stages = kMaxStages;
  while (stages > 2 && smem_bytes(MT, stages, D) > cap) --stages;
  return stages;
}
// Head groups of 16 MT heads, column groups of kCols columns (gridDim.x = N groups cgroups).
inline int head_groups(int64_t H, int MT) { return int((H + 16 * MT - 1) / (16 * MT)); }
inline int col_groups(int64_t R) { return int((R + kCols - 1) / kCols); }
// Splits of L keys for `base` CTAs per split so that the CTAs fill `target` slots about once
// (floor: no straggler wave), keeping at least max(128, 4 HG) keys per split; KS a multiple of
// kBK, every split non-empty for a row of length L.
struct SplitPlan {
  int64_t KS, splits;
};
inline SplitPlan split_plan(int64_t base, int64_t target, int64_t L, int MT) {
  const auto cdiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  const int64_t min_keys = std::max<int64_t>(128, 4 * 16 * MT);
  int64_t splits = base >= target ? 1 : std::min(target / base, cdiv(L, min_keys));
  splits = std::max<int64_t>(splits, 1);
  const int64_t ks = cdiv(cdiv(L, splits), kBK) * kBK;
  return {ks, cdiv(L, ks)};
}

}  // namespace ds::cuda::mlatc
