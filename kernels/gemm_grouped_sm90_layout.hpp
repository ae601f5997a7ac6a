// Index arithmetic of the grouped BF16 GEMM on warpgroup MMAs (kernels/gemm_grouped_sm90.cu),
// in plain C++ that nvcc compiles for the device and g++ for the host test
// (tests/kernels/test_layout_grouped_sm90.cpp runs the block's copies, ring, barriers and every
// wgmma operand read on the warp emulator, multiplies what the descriptors read and puts each
// accumulator where the epilogue does). The tiles and the group table are those of the
// mma.sync kernel (gemm_grouped_bf16_layout.hpp: 128 x 128 tiles of c, the groups' prefix sum
// of tiles, n fastest), so both kernels take the same host table.
//   * K in blocks of kBK = 64 (128 bytes of BF16: one row of the 128-byte swizzle);
//   * a stage holds a's block then b's, 16 KB each, 1024-aligned:
//       - an operand stored K-contiguous ((M, K) a, (N, K) b) as 128 rows x 128 bytes, K-major
//         (fa90::swizzled: row r's unit u at r * 128 + (u ^ r % 8) * 16);
//       - one stored (K, M) or (K, N) as two chunks of 64 columns (M or N), each 64 K-rows x
//         128 bytes in the same swizzle: the MN-major layout (atoms of 64 columns x 8 K-rows,
//         atom stride along M/N = the chunk stride 8 KB, 8-row groups 1024 bytes apart);
//   * warpgroup w computes rows 64w..64w+63 of the tile, all 128 columns: per k16 step one
//     wgmma.m64n128k16 with both operands from shared memory (trans-a for an MN-major a,
//     trans-b for an MN-major b).
#pragma once
#include <cstdint>

#include "kernels/flash_attention_sm90_layout.hpp"   // fa90::swizzled, desc_sw128
#include "kernels/gemm_grouped_bf16_layout.hpp"       // the tile grid and the group table

namespace ds::cuda::gw90 {

constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 3, kThreads = 256;
static_assert(kBM == gbf16::kBM && kBN == gbf16::kBN, "the mma.sync kernel's tile grid");
constexpr uint32_t kOperandBytes = 128u * 128u;        // 16 KB: 128 rows (or 64 K-rows x 2)
constexpr uint32_t kStageBytes = 2 * kOperandBytes;    // a, then b
constexpr uint32_t kChunkBytes = 64u * 128u;           // an MN-major chunk: 64 K-rows
constexpr int kSmemBytes = kStages * int(kStageBytes) + 1024;   // + room to align to 1024
constexpr int kCopies = 128 * kBK / 8 / kThreads;      // 16-byte copies per thread per operand
static_assert(kCopies * kThreads * 8 == 128 * kBK, "copies cover an operand's block");
// Two blocks per SM: 2 x (97 KB + the 1 KB the runtime reserves per block) <= 228 KB.
static_assert(2 * (kSmemBytes + 1024) <= 228 * 1024, "two blocks per SM");

// The main loop's schedule (the kernel and the emulation test both use these): before block
// kb's products, wait until at most kCpPending of this thread's copy groups are pending
// (block kb + 1's); after issuing them, until at most kWgmmaPending wgmma groups are (block
// kb's); then, after a barrier, refill the stage of block kb - 1 with block kb + kPrefetch.
constexpr int kCpPending = kStages - 2, kWgmmaPending = 1, kPrefetch = kStages - 1;
// Which operands are staged MN-major (wgmma's imm-trans-a / imm-trans-b): a stored (K, M)
// (TA), b stored (K, N) (!TB).
template <bool TA>
constexpr bool a_mn_major() { return TA; }
template <bool TB>
constexpr bool b_mn_major() { return !TB; }

DS_HD int k_blocks(int K) { return (K + kBK - 1) / kBK; }
DS_HD uint32_t stage_a(uint32_t base, int s) { return base + uint32_t(s) * kStageBytes; }
DS_HD uint32_t stage_b(uint32_t base, int s) { return stage_a(base, s) + kOperandBytes; }

// Copy i (< kCopies) of thread tid when one operand's K block [k0, k0 + 64) of a 128-wide tile
// (origin o0 along M for a, N for b; ext its extent there) is staged:
//   KC (stored (ext, K)): e = tid + 256 i, row r = e / 8 (global row o0 + r), unit u = e % 8
//     (columns k0 + 8u .. + 7): 8 threads read one row's 128 bytes;
//   !KC (stored (K, ext)): K-row r = e / 16 (global row k0 + r), unit v = e % 16 (columns
//     o0 + 8v .. + 7) in chunk v / 8: 16 threads read 256 contiguous bytes.
// Returns the predicate (false: past the matrix, zero-filled; the contiguous extent is a
// multiple of 8, so a unit is wholly in or out); cc gets the shared offset from the operand's
// start and the unit's first element (row, col) as stored.
using gbf16::ChunkCopy;
template <bool KC>
DS_HD bool block_copy(int tid, int i, int ext, int K, int o0, int k0, ChunkCopy& cc) {
  const int e = tid + kThreads * i;
  if constexpr (KC) {
    const int r = e >> 3, u = e & 7;
    const int o = o0 + r, k = k0 + 8 * u;
    cc = {o, k, fa90::swizzled(r, u)};
    return o < ext && k < K;
  } else {
    const int r = e >> 4, v = e & 15;
    const int k = k0 + r, o = o0 + 8 * v;
    cc = {k, o, uint32_t(v >> 3) * kChunkBytes + fa90::swizzled(r, v & 7)};
    return k < K && o < ext;
  }
}

// The start address of warpgroup wg's operand for k16 step kk (< 4) of a stage's block:
//   a K-major (!TA): rows 64 wg.., bytes 32 kk of each row (SBO 1024, LBO unused);
//   a MN-major (TA): chunk wg (its 64 M-columns), K-rows 16 kk.. (two 8-row groups);
//   b K-major (TB): all 128 rows, bytes 32 kk; b MN-major (!TB): both chunks, K-rows 16 kk..
template <bool TA>
DS_HD uint32_t a_step(uint32_t stage_a_addr, int wg, int kk) {
  return TA ? stage_a_addr + uint32_t(wg) * kChunkBytes + uint32_t(kk) * 2048u
            : stage_a_addr + uint32_t(wg) * 64u * 128u + 32u * uint32_t(kk);
}
template <bool TB>
DS_HD uint32_t b_step(uint32_t stage_b_addr, int kk) {
  return TB ? stage_b_addr + 32u * uint32_t(kk) : stage_b_addr + uint32_t(kk) * 2048u;
}
// The descriptors' byte offsets: K-major LBO unused (16, as sm90::smem_desc), SBO 1024;
// MN-major (fa90::desc_mn_sw128's assignment) atom stride kChunkBytes, 8-row groups 1024.
DS_HD uint64_t a_desc(bool mn_major, uint32_t addr) {
  return mn_major ? fa90::desc_mn_sw128(addr, kChunkBytes, 1024u)
                  : fa90::desc_sw128(addr, 16u, 1024u);
}
DS_HD uint64_t b_desc(bool mn_major, uint32_t addr) { return a_desc(mn_major, addr); }

// Epilogue: accumulator d[nt][c] of lane `lane` in warp `warp` (0..3) of warpgroup wg is c at
// row acc_row(...), column acc_col(...) relative to the tile origin (wgmma's m64nN
// accumulator layout, sm90_wgmma_bf16.cuh); c & 1 is the column's pair.
DS_HD int acc_row(int wg, int warp, int lane, int c) {
  return 64 * wg + 16 * warp + (lane >> 2) + (c >= 2 ? 8 : 0);
}
DS_HD int acc_col(int nt, int lane) { return 8 * nt + 2 * (lane & 3); }

}  // namespace ds::cuda::gw90
