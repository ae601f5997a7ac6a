// Index arithmetic of the wgmma attention kernels (kernels/flash_attention_sm90.cu), in plain
// C++ that nvcc compiles for the device and g++ for the host test
// (tests/kernels/test_layout_attention_sm90.cpp runs the kernels' copies, barriers and wgmma
// operand reads on the CPU emulation of tests/kernels/warp_emu.hpp). Everything that decides
// where data moves: the tile sizes and rings, the shared-memory layout of each kernel, which
// 16-byte chunk each thread copies and where it lands (the K-major 128-byte swizzle), the
// start address of every k16 step's operand, the transposed copies' layout, which rows a
// block and a thread own, which tiles a block streams and which a warpgroup skips. The
// rationale is in the .cu's header comment.
#pragma once
#include <cstdint>

#include "kernels/multi_tensor_index.hpp"   // DS_HD, imin

namespace ds::cuda::fa90 {

constexpr int kBQ = 128;         // rows per block by default: 2 warpgroups x 64
constexpr int kBQ64 = 64;        // the one-warpgroup block (DS_ATTENTION_ROWS=64)
constexpr int kBK = 64;          // rows per streamed tile (keys, or queries for dK / dV)
constexpr int kStages = 3;       // the forward's ring of tiles
constexpr int kBwdStages = 2;    // the backward passes' ring
constexpr int kThreads = 256;   // threads of a kBQ-row block
// Threads of a block of bq rows: one warpgroup (128 threads) per 64 rows.
DS_HD constexpr int block_threads(int bq) { return bq * 2; }

// The backward passes (one kernel template): rows are queries (dQ) or keys (dK, dV, and dK
// with dV in one pass: kDKV, for head dims up to 96 / 64, bwd_fused_fits; kAll: kDKV's pass
// that also adds each tile's dQ products into an F32 dQ, DS_ATTENTION_BWD=onepass).
enum Pass { kDQ = 0, kDK = 1, kDV = 2, kDKV = 3, kAll = 4 };
// The passes that compute dK and dV together (kDKV and kAll).
DS_HD constexpr bool bwd_kv(int pass) { return pass == kDKV || pass == kAll; }

// 64-column (128-byte) chunks of a head dim D (a multiple of 16).
DS_HD constexpr int chunks(int D) { return (D + 63) / 64; }

// K-major 128-byte swizzle of a tile of rows x 128 bytes (1024-byte aligned): row r's 16-byte
// unit u sits at r * 128 + (u ^ (r % 8)) * 16 (the layout wgmma's descriptor reads; the FP8
// GEMM stores the same).
DS_HD constexpr uint32_t swizzled(int r, int u) {
  return uint32_t(r) * 128u + (uint32_t(u ^ (r & 7)) << 4);
}

// An operand of `rows` rows x D columns (D a multiple of 16, up to chunks(D) * 64) in shared
// memory: chunk c (columns 64c..64c+63) is a swizzled tile of its own, rows * 128 bytes apart.
// Copy e (0 <= e < rows * chunks * 8) moves 16 bytes: chunk c, row r, unit u (columns
// 64c + 8u .. + 7); thread t of nt makes copies t, t + nt, ...
struct RowCopy {
  int c, r, u;
};
DS_HD constexpr int row_copies(int rows, int D, int nt = kThreads) {
  return rows * chunks(D) * 8 / nt;
}
DS_HD RowCopy row_copy(int e, int rows) { return {e / (rows * 8), (e >> 3) % rows, e & 7}; }
DS_HD uint32_t row_copy_dst(const RowCopy& x, int rows) {
  return uint32_t(x.c) * uint32_t(rows) * 128u + swizzled(x.r, x.u);
}
DS_HD int row_copy_col(const RowCopy& x) { return x.c * 64 + x.u * 8; }

// A tile of a transposed copy (N rows of the head dim, each kBK sequence positions = 128
// bytes): copy e (0 <= e < N * 8) is row e / 8, unit e % 8 (positions tb + 8u .. + 7).
DS_HD constexpr int t_copies(int N, int nt = kThreads) { return N * 8 / nt; }
DS_HD int t_copy_row(int e) { return e >> 3; }
DS_HD int t_copy_unit(int e) { return e & 7; }

// The transposed copies x^T (B*H, D, Tp) of a (B, T, H, D) tensor: rows padded to Tp (zeros).
DS_HD int padded_rows(int T) { return (T + kBK - 1) / kBK * kBK; }
DS_HD int64_t t_index(int64_t bh, int d, int t, int D, int Tp) {
  return (bh * D + d) * Tp + t;
}

// The start address of k16 step kk (columns 16kk..16kk+15) of an operand of `rows` rows at
// `base` (chunk kk / 4, bytes 32 (kk % 4) of each row); its descriptor is smem_desc(this).
DS_HD uint32_t kstep(uint32_t base, int rows, int kk) {
  return base + uint32_t(kk / 4) * uint32_t(rows) * 128u + 32u * uint32_t(kk % 4);
}
// Warpgroup wg's 64 rows of a block operand at `base` (chunk tiles of the block's rows).
DS_HD uint32_t wg_rows(uint32_t base, int wg) { return base + uint32_t(wg) * 64u * 128u; }

// The wgmma shared-memory descriptor of a 128-byte-swizzled operand: start address >> 4 in
// bits 0-13, LBO >> 4 in 16-29, SBO >> 4 in 32-45, base offset 0 (1024-aligned atoms), swizzle
// mode 1 (128 bytes) in 62-63 (PTX ISA, "Matrix Descriptor Format").
DS_HD uint64_t desc_sw128(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFFu) >> 4) | (uint64_t((lbo >> 4) & 0x3FFFu) << 16) |
         (uint64_t((sbo >> 4) & 0x3FFFu) << 32) | (uint64_t(1) << 62);
}
// An MN-major operand's descriptor (atoms of 64 M/N-columns x 8 K-rows of 128 bytes): the
// canonical assignment CUTLASS documents, LBO = the stride between atoms along M/N, SBO = the
// stride between 8-row groups along K. Every MN-major operand (the wgmma MLA decode's V, the
// wgmma grouped GEMM's) takes its descriptor here, so that should the GPU probe
// (sm90_probe.cu, gpu-check group ops-sm90-probes) find the card reading them swapped, this
// one line changes.
DS_HD uint64_t desc_mn_sw128(uint32_t addr, uint32_t atom_stride, uint32_t group_stride) {
  return desc_sw128(addr, atom_stride, group_stride);
}

// ---- shared memory (byte offsets from the 1024-aligned base) ---------------------------------
// Forward: Q (chunks(DK) x bq rows), then kStages x [K (chunks(DK) x kBK rows), V^T (DV rows)].
struct FwdSmem {
  uint32_t q, stages, stage_bytes, vt, bytes;   // vt: offset inside a stage
};
DS_HD constexpr FwdSmem fwd_smem(int DK, int DV, int bq = kBQ, int stages = kStages) {
  return {0u, uint32_t(chunks(DK)) * uint32_t(bq) * 128u,
          uint32_t(chunks(DK)) * kBK * 128u + uint32_t(DV) * 128u,
          uint32_t(chunks(DK)) * kBK * 128u,
          uint32_t(chunks(DK)) * uint32_t(bq) * 128u +
              uint32_t(stages) * (uint32_t(chunks(DK)) * kBK * 128u + uint32_t(DV) * 128u)};
}
// Backward pass: X_k (chunks(DK) x bq), X_v (chunks(DV) x bq; not for kDV), then kBwdStages
// x [Y_k (chunks(DK) x kBK), Y_v (chunks(DV) x kBK; not for kDV), Z^T (N rows), Z2^T (N2
// rows)], N = DV for kDV, else DK; N2 = DV for kDKV and kAll (dO^T, for dV), else 0. kAll
// then holds the block's K^T (kt: two chunks of kBK keys, each DK rows x 128 bytes) and two
// buffers of its dS^T (ds: each bq key rows x 128 bytes, a tile's 64 queries along a row;
// the lockstep kernel uses the first), 0 for the others.
struct BwdSmem {
  uint32_t xk, xv, stages, stage_bytes, yv, z, z2, bytes;   // yv, z, z2: offsets in a stage
  uint32_t kt, ds;
};
DS_HD constexpr int bwd_n(int DK, int DV, int pass) { return pass == kDV ? DV : DK; }
DS_HD constexpr int bwd_n2(int DV, int pass) { return bwd_kv(pass) ? DV : 0; }
DS_HD constexpr int bwd_vc(int DV, int pass) { return pass == kDV ? 0 : chunks(DV); }
DS_HD constexpr uint32_t bwd_stage_bytes(int DK, int DV, int pass) {
  return uint32_t(chunks(DK) + bwd_vc(DV, pass)) * kBK * 128u +
         uint32_t(bwd_n(DK, DV, pass) + bwd_n2(DV, pass)) * 128u;
}
DS_HD constexpr uint32_t bwd_ring_end(int DK, int DV, int pass, int bq, int stages) {
  return uint32_t(chunks(DK) + bwd_vc(DV, pass)) * uint32_t(bq) * 128u +
         uint32_t(stages) * bwd_stage_bytes(DK, DV, pass);
}
DS_HD constexpr uint32_t bwd_onepass_bytes(int DK, int bq) {   // kAll's K^T and dS^T
  return 2u * uint32_t(DK) * 128u + 2u * uint32_t(bq) * 128u;
}
DS_HD constexpr BwdSmem bwd_smem(int DK, int DV, int pass, int bq = kBQ,
                                 int stages = kBwdStages) {
  return {0u, uint32_t(chunks(DK)) * uint32_t(bq) * 128u,
          uint32_t(chunks(DK) + bwd_vc(DV, pass)) * uint32_t(bq) * 128u,
          bwd_stage_bytes(DK, DV, pass),
          uint32_t(chunks(DK)) * kBK * 128u,
          uint32_t(chunks(DK) + bwd_vc(DV, pass)) * kBK * 128u,
          uint32_t(chunks(DK) + bwd_vc(DV, pass)) * kBK * 128u +
              uint32_t(bwd_n(DK, DV, pass)) * 128u,
          bwd_ring_end(DK, DV, pass, bq, stages) +
              (pass == kAll ? bwd_onepass_bytes(DK, bq) : 0u),
          pass == kAll ? bwd_ring_end(DK, DV, pass, bq, stages) : 0u,
          pass == kAll ? bwd_ring_end(DK, DV, pass, bq, stages) + 2u * uint32_t(DK) * 128u
                       : 0u};
}
// The head dims the fused dK/dV pass takes: its accumulators (dK and dV, S^T, dP^T and two
// register A operands: 176 floats a thread at 96 / 64) must fit the registers without
// spilling; (128, 128) and (192, 128) keep the split passes.
DS_HD constexpr bool bwd_fused_fits(int DK, int DV) { return DK <= 96 && DV <= 64; }

// ---- the one-pass backward (kAll, DS_ATTENTION_BWD=onepass) ----------------------------------
// kDKV's pass (rows = 128 keys, two warpgroups; lockstep, or pipelined below) that also
// computes each query tile's dQ products: after its dK / dV operands are packed, warpgroup w
// stores its dS^T (BF16, rows 64w..64w+63 of ds; a skipped tile's as zeros) and, after a
// barrier, computes columns [w DK/2, (w + 1) DK/2) of dQ_tile (64 queries x DK) = dS (64 x 128
// keys) K (128 x DK): wgmma.m64n{DK/2}k16 over 8 k16 steps of keys, A = dS read MN-major from
// ds (imm-trans-a: one 64-query atom, 16 key rows a step), B = the block's K^T K-major from kt
// (its DK/2 rows of each 64-key chunk). The F32 products, times the softmax scale, are added
// into dQ with atomics (2-float vector adds; the order of the key blocks' adds is not fixed,
// so dQ is not bit-reproducible, dK and dV are kDKV's). Head dims as kDKV's; 128-row blocks
// only.
// Pipelined (DS_ATTENTION_SCHEDULE=pipelined): tile it's S^T and dP^T are issued before tile
// it - 1's products (dK, dV, dQ) and its softmax step runs under them, on kDKV's 2-stage
// ring with each stage's Z part (Q^T, dO^T) one tile behind its Y part: barrier it waits for
// every copy, publishes Y(it), Z(it - 1) and dS^T(it - 1) (buffer (it - 1) % 2), then copies
// Y(it + 1) and Z(it) (onepass_loads), the stages' previous tenants read before it. No tile is
// skipped (an invisible one gives zero P^T and dS^T), so both warpgroups run the same loop.
// dS^T store j (0..3) of k16 step kk of lane `lane` in warp `warp` of warpgroup wg: the
// 2 BF16 of register A operand a2[kk][j] (key row 16 warp + lane/4 + 8 (j & 1) of the
// warpgroup, queries 16 kk + 8 (j >> 1) + 2 (lane % 4) + {0, 1}): 4 bytes at this offset.
DS_HD uint32_t ds_store(int wg, int warp, int lane, int kk, int j) {
  const int r = wg * 64 + warp * 16 + (lane >> 2) + 8 * (j & 1), u = 2 * kk + (j >> 1);
  return swizzled(r, u) + 4u * uint32_t(lane & 3);
}
// The dQ product's k16 step kk (keys 16 kk..16 kk + 15 of the block): A's start in ds (16 key
// rows of 128 bytes; its descriptor desc_mn_sw128(addr, 1024, 1024), both strides 1024 since
// the 64 queries are one atom), B's in kt (warpgroup wg's DK/2 rows of chunk kk / 4).
DS_HD uint32_t dq_a_step(uint32_t ds, int kk) { return ds + uint32_t(kk) * 2048u; }
// dS^T buffer buf (0, 1) of a block of bq rows at ds.
DS_HD uint32_t ds_buffer(uint32_t ds, int bq, int buf) {
  return ds + uint32_t(buf) * uint32_t(bq) * 128u;
}
DS_HD uint32_t dq_b_step(uint32_t kt, int DK, int wg, int kk) {
  return kstep(kt + uint32_t(wg) * uint32_t(DK / 2) * 128u, DK, kk);
}
// The pipelined one-pass ring: at barrier it (0 <= it <= ntiles) the Y part of tile it + 1
// and the Z part of tile it are copied (where they exist), each into stage tile % 2.
struct OnepassLoads {
  int y, z;   // the tiles, or -1
};
DS_HD OnepassLoads onepass_loads(int it, int ntiles) {
  return {it + 1 < ntiles ? it + 1 : -1, it < ntiles ? it : -1};
}
// Where the dQ accumulators dq[nt][c] of lane `lane` in warp `warp` of warpgroup wg go: query
// dq_row(tb, warp, lane, c >= 2) of the tile at tb, columns dq_col(...) + (c & 1) of dQ.
DS_HD int dq_row(int tb, int warp, int lane, int half) {
  return tb + warp * 16 + (lane >> 2) + 8 * half;
}
DS_HD int dq_col(int DK, int wg, int nt, int lane) {
  return wg * (DK / 2) + nt * 8 + (lane & 3) * 2;
}

// The 64-row block (one warpgroup, DS_ATTENTION_ROWS=64) is built for a kernel only where two
// such blocks could share an SM's 228 KB (shared memory of at most 112 KB each, with the
// alignment slack and the 1 KB the runtime reserves per block); the launcher still asks the
// occupancy calculator and keeps 128 rows unless two blocks are resident.
DS_HD constexpr bool rows64_fwd(int DK, int DV) {
  return fwd_smem(DK, DV, kBQ64).bytes <= 112u * 1024u;
}
DS_HD constexpr bool rows64_bwd(int DK, int DV, int pass) {
  return pass != kAll && bwd_smem(DK, DV, pass, kBQ64).bytes <= 112u * 1024u;
}

// Staggered warpgroups (DS_ATTENTION_SCHEDULE=staggered, 128-row blocks): warpgroup 1 meets
// the ring barrier of tile it after its first products of tile it - 1 (S, and dP in the
// backward) instead of before them, so that one warpgroup's softmax step runs while the
// other's products do. It then still reads tile it - 1 after that barrier, so the ring
// prefetches one tile less and holds one more: kStagStages in the forward, kStagBwdStages in
// the backward, where they fit the shared memory (stag_fwd, stag_bwd).
constexpr int kStagStages = 4;
constexpr int kStagBwdStages = 3;
DS_HD constexpr bool stag_fwd(int DK, int DV) {
  return fwd_smem(DK, DV, kBQ, kStagStages).bytes + 1024u <= 227u * 1024u;
}
DS_HD constexpr bool stag_bwd(int DK, int DV, int pass) {
  return pass != kAll && bwd_smem(DK, DV, pass, kBQ, kStagBwdStages).bytes + 1024u <= 227u * 1024u;
}

// ---- the ring of tiles ----------------------------------------------------------------------
// Tile it of a block sits in stage it % stages. Before the loop the block's rows and tiles
// 0 .. dist - 1 are copied, one commit group per tile (the rows in the first), dist =
// ring_dist: stages - 1, or stages - 2 staggered. Barrier it waits until at most ring_wait
// groups of the thread are pending (tile it has landed), publishes them with a barrier, then
// refills the stage of tile it + dist - stages (it - 1, or it - 2 staggered: every warpgroup
// has waited for its products of that tile before the barrier) with tile ring_refill and
// commits a group, empty or not.
DS_HD constexpr int ring_dist(int stages, bool stag = false) {
  return stag ? stages - 2 : stages - 1;
}
DS_HD constexpr int ring_wait(int stages, bool stag = false) {
  return ring_dist(stages, stag) - 1;
}
DS_HD int ring_stage(int it, int stages) { return it % stages; }
DS_HD int ring_refill(int it, int stages, bool stag = false) {
  return it + ring_dist(stages, stag);
}

// ---- blocks, tiles, rows -------------------------------------------------------------------
// A block's first row: the forward and dQ take query blocks from the end (the longest rows
// first), dK and dV key blocks from the start (the keys most queries see first).
DS_HD int block_row0(bool from_end, int bx, int nbx, int bq = kBQ) {
  return (from_end ? nbx - 1 - bx : bx) * bq;
}
// The tiles [t0, t1) a block streams. Rows are queries (forward, dQ): keys from klo (the
// segments' smallest first visible key, 0 without segments) to the block's last row;
// rows are keys (dK, dV): queries from the block's first key to qhi (the segments' largest
// last visible query + 1, T without segments).
struct Tiles {
  int t0, t1;
};
DS_HD Tiles key_tiles(int klo, int x0, int T, int bq = kBQ) {
  return {klo / kBK, (imin(x0 + bq, T) + kBK - 1) / kBK};
}
DS_HD Tiles query_tiles(int x0, int qhi) { return {x0 / kBK, (qhi + kBK - 1) / kBK}; }
// Whether warpgroup rows [r0, r0 + 64) see nothing of the tile at tb (warpgroup-uniform):
// query rows see keys <= themselves; key rows are seen by queries >= themselves.
DS_HD bool skip_query_rows(int tb, int r0, int T) { return r0 >= T || tb > r0 + 63; }
DS_HD bool skip_key_rows(int tb, int r0, int T) { return r0 >= T || tb + kBK - 1 < r0; }
// Row `half` (0, 1) of a thread: its accumulator rows lane / 4 and + 8 of its warp's 16.
DS_HD int thread_row(int x0, int wg, int warp, int lane, int half) {
  return x0 + wg * 64 + warp * 16 + (lane >> 2) + 8 * half;
}

}  // namespace ds::cuda::fa90
