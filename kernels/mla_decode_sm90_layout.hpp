// Index arithmetic of the wgmma MLA decode kernel (kernels/mla_decode_sm90.cu), in plain C++
// that nvcc compiles for the device and g++ for the host test
// (tests/kernels/test_layout_mla_sm90.cpp runs the block's copies, ring and wgmma operand
// reads on the warp emulator). DeepSeek-V3's latent dims only: R 512 + Dr 64 = 576.
//   * a block: one query row n, 64 heads (both warpgroups compute the same S = Q K^T over a
//     64-key tile and the same softmax, then warpgroup w the output columns 256w..256w+255),
//     keys [KS sp, KS sp + KS) of split sp;
//   * shared memory (1024-aligned): Q (64 heads x 576, BF16) then 2 stages of one 64-key tile
//     (64 cache rows x 576), each as 9 chunks of 64 dims, a chunk 64 rows x 128 bytes in the
//     K-major 128-byte swizzle (fa90::swizzled): S reads Q and the tile K-major; P V reads the
//     tile's first 8 chunks as MN-major B (rows = keys = K, 64 dims = 128 bytes per row along
//     N: atoms 1024 bytes, LBO the chunk stride, SBO 1024).
#pragma once
#include <cstdint>

#include "kernels/flash_attention_sm90_layout.hpp"   // fa90::swizzled
#include "kernels/multi_tensor_index.hpp"            // DS_HD, imin

namespace ds::cuda::mla90 {

constexpr int kR = 512, kDr = 64, kD = kR + kDr;   // the latent dims this kernel takes
constexpr int kHeads = 64;                         // heads per block (one m64 tile)
constexpr int kKeys = 64;                          // keys per tile
constexpr int kChunks = kD / 64;                   // 9 chunks of 64 dims
constexpr int kThreads = 256;                      // two warpgroups
constexpr int kStages = 2;                         // the ring of tiles
constexpr uint32_t kChunkBytes = 64u * 128u;       // 64 rows x 128 bytes
constexpr uint32_t kQ = 0;                         // Q's offset
constexpr uint32_t kStage0 = kChunks * kChunkBytes;   // the first stage
constexpr uint32_t kStageBytes = kChunks * kChunkBytes;
constexpr uint32_t kSmemBytes = kStage0 + kStages * kStageBytes;   // 216 KB
constexpr int kUnits = kD / 8;                     // 16-byte units of a row (72)
constexpr int kCopies = kKeys * kUnits / kThreads;  // per thread per tile (18)
constexpr int kQUnits = kHeads * kUnits / kThreads;  // q units per thread (18)
static_assert(kKeys * kUnits % kThreads == 0 && kHeads * kUnits % kThreads == 0, "copies");
static_assert(kSmemBytes + 1024 <= 227u * 1024u, "shared memory");

// Byte offset of unit u (dims 8u..8u+7) of row r (a head of Q, a key of a tile) from the
// operand's start: chunk u / 8, swizzled unit u % 8.
DS_HD uint32_t unit_off(int r, int u) {
  return uint32_t(u / 8) * kChunkBytes + fa90::swizzled(r, u % 8);
}
// Copy i (< kCopies) of thread tid of a tile: row (key) r, unit u.
struct Unit {
  int r, u;
};
DS_HD Unit copy_unit(int tid, int i) {
  const int e = tid + i * kThreads;
  return {e / kUnits, e % kUnits};
}
// The k16 step kk (dims 16kk..16kk+15; kk < 36) of a K-major operand of 64 rows at `base`.
DS_HD uint32_t kmajor_step(uint32_t base, int kk) { return fa90::kstep(base, 64, kk); }
// P V: warpgroup wg's B for keys 16kk..16kk+15 (kk < 4): chunks 4wg..4wg+3 of the tile, from
// key row 16 kk (two 8-row groups, SBO 1024 apart); LBO the chunk stride.
constexpr uint32_t kVLbo = kChunkBytes, kVSbo = 1024u;
DS_HD uint32_t v_step(uint32_t stage, int wg, int kk) {
  return stage + uint32_t(4 * wg) * kChunkBytes + uint32_t(kk) * 2048u;
}
// The descriptors (fa90's: the K-major one, and the MN-major one of V with LBO = kVLbo, the
// chunk stride between atoms along N, SBO = kVSbo between 8-key groups).
using fa90::desc_mn_sw128;
using fa90::desc_sw128;
// The wgmma kernel takes a problem: these dims and at least one full head group (at 16 heads
// three quarters of every block would be padding: those stay on the mma.sync kernel).
DS_HD bool takes(int64_t H, int64_t R, int64_t Dr) { return R == kR && Dr == kDr && H >= kHeads; }
// Blocks: blockIdx.x = n * groups + g (heads 64 g ..), blockIdx.y = split.
DS_HD int head_groups(int H) { return (H + kHeads - 1) / kHeads; }
// Tiles of a split's keys [jb, je): tile t covers keys jb + 64 t .. (rows past je zero-filled).
DS_HD int tiles(int jb, int je) { return (je - jb + kKeys - 1) / kKeys; }
// Splits: about one block per SM (its shared memory allows one), at least 256 keys a split,
// KS a multiple of kKeys; every split non-empty for a row of length L.
struct Plan {
  int64_t KS, splits;
};
inline Plan split_plan(int64_t blocks, int64_t sms, int64_t L) {
  const auto cdiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  int64_t splits = blocks >= sms ? 1 : sms / blocks;
  splits = splits < 1 ? 1 : splits > cdiv(L, 256) ? cdiv(L, 256) : splits;
  const int64_t ks = cdiv(cdiv(L, splits), kKeys) * kKeys;
  return {ks, cdiv(L, ks)};
}

}  // namespace ds::cuda::mla90
