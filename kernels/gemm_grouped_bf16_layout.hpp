// Index arithmetic of the grouped BF16 GEMM kernel (kernels/gemm_grouped_bf16.cu), in plain
// C++ that nvcc compiles for the device and g++ for the host test
// (tests/kernels/test_layout_grouped_bf16.cpp runs the kernel's block algorithm on a CPU
// emulation of cp.async, ldmatrix and mma, tests/kernels/warp_emu.hpp). Everything that
// decides where data moves: the tile geometry and shared-memory pitches and stage sizes, the
// 16-byte chunk each thread copies into a stage, the row address each lane gives ldmatrix,
// where each accumulator lands in c, and which group and tile a block owns. The rationale
// (bank groups, fragment layouts) is in the .cu's header comment and next to each function.
#pragma once
#include <cstdint>

#include "kernels/multi_tensor_index.hpp"   // DS_HD, last_at_or_below

namespace ds::cuda::gbf16 {

// Block tile kBM x kBN of c, K in slices of kBK through kStages shared-memory stages; kThreads
// threads = 8 warps as 2 (M) x 4 (N), warp tile kWarpM x kWarpN (4 m16 x 4 n8 mma tiles).
constexpr int kBM = 128, kBN = 128, kBK = 32, kStages = 3, kThreads = 256;
constexpr int kWarpM = 64, kWarpN = 32;
constexpr int kPitchK = kBK + 8;    // K-contiguous tile [128][kPitchK] (BF16 elements)
constexpr int kPitchT = kBM + 8;    // K-major tile [kBK][kPitchT]
constexpr int kBytesK = kBM * kPitchK * 2;   // 10240 bytes per stage
constexpr int kBytesT = kBK * kPitchT * 2;   // 8704 bytes per stage
constexpr int kCopies = kBM * kBK / 8 / kThreads;   // 16-byte chunks per thread per operand
static_assert(kBM == kBN, "one tile geometry serves both operands");
static_assert(kBM == 2 * kWarpM && kBN == 4 * kWarpN && kThreads == 8 * 32, "2 x 4 warps");
static_assert(kCopies == 2 && kBK % 16 == 0, "load_slice and the k16 loop assume these");
static_assert(kBytesK % 16 == 0 && kBytesT % 16 == 0 && (kPitchK * 2) % 16 == 0 &&
                  (kPitchT * 2) % 16 == 0,
              "ldmatrix rows and cp.async chunks must stay 16-byte aligned");

// Stage bytes of an operand: K-contiguous ([128][40]) or K-major ([32][136]). a is
// K-contiguous unless TA, b K-contiguous when TB.
template <bool KC>
constexpr int stage_bytes() {
  return KC ? kBytesK : kBytesT;
}
template <bool TA, bool TB>
constexpr int smem_bytes() {
  return kStages * (stage_bytes<!TA>() + stage_bytes<TB>());
}
static_assert(smem_bytes<false, true>() <= 60 * 1024 && smem_bytes<true, false>() <= 60 * 1024,
              "two blocks per SM (__launch_bounds__(kThreads, 2)) must fit");

// Tiles of one product (the host's prefix sum first_tile) and K slices of one block.
constexpr int64_t tile_count(int64_t M, int64_t N) {
  return ((M + kBM - 1) / kBM) * ((N + kBN - 1) / kBN);
}
DS_HD int k_slices(int K) { return (K + kBK - 1) / kBK; }
// The stage after s (rd and wr of the main loop advance together, kStages - 1 apart).
DS_HD int next_stage(int s) { return s == kStages - 1 ? 0 : s + 1; }

// Warp tile of warp w: rows warp_m(w) * kWarpM.., columns warp_n(w) * kWarpN.. of the block
// tile.
DS_HD int warp_m(int warp) { return warp >> 2; }
DS_HD int warp_n(int warp) { return warp & 3; }

// Per-group descriptor (built on the host, read by every block of the group; the wgmma kernel
// of gemm_grouped_sm90.cu takes the same table).
struct GroupTile {
  const uint16_t* a;
  const uint16_t* b;
  float* c;
  int M, N, K;
  int lda, ldb, ldc;   // row lengths: a K (or M when TA), b N (or K when TB), c N
  int first_tile;      // prefix sum of ceil(M/128) * ceil(N/128) over the earlier groups
  int pad;
};

// The group of block `tile`: the last one whose first_tile <= tile (every listed group has a
// tile). G: any table entry with a first_tile member, sorted by it.
template <class G>
DS_HD int group_of(const G* groups, int count, int tile) {
  return last_at_or_below(count, tile, [groups](int i) { return groups[i].first_tile; });
}
// Origin in c of block `tile` of a group whose first tile is first_tile: its tiles in row-major
// order, n fastest.
struct TileOrigin {
  int m0, n0;
};
DS_HD TileOrigin tile_origin(int tile, int first_tile, int N) {
  const int tiles_n = (N + kBN - 1) / kBN, local = tile - first_tile;
  return {(local / tiles_n) * kBM, (local % tiles_n) * kBN};
}

// Copy i (< kCopies) of thread tid when one operand's K slice [k0, k0 + 32) of a 128-wide tile
// (origin o0 along M for a, N for b; ext its extent there) is staged: 512 chunks of 8 BF16.
//   KC (stored (ext, K)): tile [128][kPitchK], chunk (r, ch) = (tid/4 + 64i, tid%4): global
//     row o0 + r, columns k0 + 8ch .. +7.
//   !KC (stored (K, ext)): tile [32][kPitchT], chunk (r, ch) = (tid/16 + 16i, tid%16): global
//     row k0 + r, columns o0 + 8ch .. +7.
// Returns the predicate: false when the chunk lies past the matrix and is zero-filled (the
// contiguous extent is a multiple of 8, so a chunk is wholly in or out). cc gets the shared
// offset (bytes from the stage start) and the chunk's first element (row, col) in the operand
// as stored (row-major, leading dimension ld). The predicate is returned rather than stored in
// cc: that keeps the kernel's instruction schedule as it was with the formulas inline.
struct ChunkCopy {
  int row, col;
  uint32_t soff;
};
template <bool KC>
DS_HD bool slice_copy(int tid, int i, int ext, int K, int o0, int k0, ChunkCopy& cc) {
  if constexpr (KC) {
    const int r = (tid >> 2) + 64 * i, ch = tid & 3;
    const int o = o0 + r, k = k0 + 8 * ch;
    const bool ok = o < ext && k < K;
    cc = {o, k, uint32_t(r * kPitchK + 8 * ch) * 2u};
    return ok;
  } else {
    const int r = (tid >> 4) + 16 * i, ch = tid & 15;
    const int k = k0 + r, o = o0 + 8 * ch;
    const bool ok = k < K && o < ext;
    cc = {k, o, uint32_t(r * kPitchT + 8 * ch) * 2u};
    return ok;
  }
}

// ldmatrix.x4: lanes 8j..8j+7 give the 8 row addresses of 8x8 matrix j, which lands in
// register j. Non-trans: lane (g = lane/4, t = lane%4) receives row g, elements 2t, 2t+1 of
// each matrix as stored; .trans: stored rows 2t, 2t+1 of column g.
// mma.m16n8k16 fragments: A regs {A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]},
// B regs {B[k=2t..][n=g], B[k=2t+8..][n=g]}, C {c0,c1: row g, cols 2t, 2t+1; c2,c3: row g+8}.
//
// A fragment of rows wm*64 + 16mt, k 16ks, matrices j = (rows +8 if j&1, k +8 if j&2):
//   !TA, tile sa[m][k]: lane l addresses row (l & 15), column 8 (l >> 4) (non-trans: matrix j
//     = rows 8(j&1).., k 8(j>>1).., thread gets A[g][2t..] as required).
//   TA, tile sa[k][m]: matrix j is stored rows k = 8(j>>1)..+7, columns m = 8(j&1)..+7; .trans
//     gives thread (g, t) stored [2t][g], [2t+1][g] = A[m g][k 2t, 2t+1]. Lane l addresses
//     k row (l & 7) + 8 (l >> 4), m column 8 ((l >> 3) & 1).
// B fragments of two n-tiles (columns wn*32 + 16np + {0, 8}), k 16ks; registers {b0, b1} of
// the first n-tile then {b0, b1} of the second, so matrix j = (k +8 if j&1, n +8 if j&2):
//   TB, tile sb[n][k]: non-trans, stored row n = g, elements k 2t, 2t+1 = B[k 2t..][n g].
//     Lane l addresses n row (l & 7) + 8 (l >> 4), k column 8 ((l >> 3) & 1).
//   !TB, tile sb[k][n]: .trans, stored [k 2t][n g], [k 2t+1][n g] = B[k 2t..][n g]. Lane l
//     addresses k row (l & 7) + 8 ((l >> 3) & 1), n column 8 (l >> 4).
// Offsets are in bytes from the stage start, for ks = 0, mt = 0 / np = 0, plus the steps.
template <bool TA>
struct AFrag {
  static constexpr bool kTrans = TA;   // ldmatrix .trans
  static DS_HD uint32_t lane_off(int lane, int wm) {
    return TA ? uint32_t(((lane & 7) + 8 * (lane >> 4)) * kPitchT + wm * kWarpM +
                         8 * ((lane >> 3) & 1)) * 2u
              : uint32_t((wm * kWarpM + (lane & 15)) * kPitchK + 8 * (lane >> 4)) * 2u;
  }
  static constexpr uint32_t kMt = TA ? 16 * 2 : 16 * kPitchK * 2;   // next m16 tile
  static constexpr uint32_t kKs = TA ? 16 * kPitchT * 2 : 16 * 2;   // next k16 step
};
template <bool TB>
struct BFrag {
  static constexpr bool kTrans = !TB;
  static DS_HD uint32_t lane_off(int lane, int wn) {
    return TB ? uint32_t((wn * kWarpN + (lane & 7) + 8 * (lane >> 4)) * kPitchK +
                         8 * ((lane >> 3) & 1)) * 2u
              : uint32_t(((lane & 7) + 8 * ((lane >> 3) & 1)) * kPitchT + wn * kWarpN +
                         8 * (lane >> 4)) * 2u;
  }
  static constexpr uint32_t kNp = TB ? 16 * kPitchK * 2 : 16 * 2;   // next pair of n8 tiles
  static constexpr uint32_t kKs = TB ? 16 * 2 : 16 * kPitchT * 2;   // next k16 step
};

// Epilogue: acc[mt][nt][2h], acc[mt][nt][2h + 1] of lane l in warp tile (wm, wn) are c at row
// acc_row(wm, mt, l, h), columns acc_col(wn, nt, l) and + 1, relative to the block's (m0, n0)
// (the mma C fragment: row g + 8h, columns 2t, 2t+1 of the m16 x n8 tile).
DS_HD int acc_row(int wm, int mt, int lane, int h) {
  return wm * kWarpM + mt * 16 + (lane >> 2) + 8 * h;
}
DS_HD int acc_col(int wn, int nt, int lane) { return wn * kWarpN + nt * 8 + 2 * (lane & 3); }

}  // namespace ds::cuda::gbf16
