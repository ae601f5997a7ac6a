// The wgmma MLA decode kernel's data movement (kernels/mla_decode_sm90.cu), checked on the CPU
// with its index arithmetic (kernels/mla_decode_sm90_layout.hpp) over the warp emulator
// (warp_emu.hpp): for every block of small problems (splits, lengths that end inside a tile,
// bad rows), Q's stores, the tiles' copies, commit groups, waits and barriers in the kernel's
// order, and every operand a wgmma would read: Q and the key tile through the K-major
// descriptor for S = Q K^T, the tile's latent columns through the MN-major descriptor for
// P V (the canonical layout the GPU probe of sm90_probe.cu settles), each compared element by
// element with the tensor it must hold (zeros for keys past the split, for padded heads).
// What it cannot show: the arithmetic (fragments, softmax) and that wgmma reads what the
// descriptors say; the GPU test (test_ops_mla.cpp) covers the numbers.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/mla_decode_sm90_layout.hpp"
#include "kernels/mla_decode_tc_layout.hpp"
#include "warp_emu.hpp"

namespace emu = ds::test::emu;
namespace M = ds::cuda::mla90;

namespace {

struct Problem {
  int N, H, S, L;
  std::vector<int32_t> slot, len;
  std::vector<uint16_t> q, ckv, kpe;   // codes naming their element (never 0)
};

Problem make(int N, int H, int S, int L, std::vector<int32_t> slot, std::vector<int32_t> len) {
  Problem p{N, H, S, L, std::move(slot), std::move(len), {}, {}, {}};
  p.q.resize(size_t(N) * H * M::kD);
  for (size_t i = 0; i < p.q.size(); ++i) p.q[i] = uint16_t(1 + (i * 7919u) % 65521u);
  p.ckv.resize(size_t(S) * L * M::kR);
  for (size_t i = 0; i < p.ckv.size(); ++i) p.ckv[i] = uint16_t(1 + (i * 104729u) % 65521u);
  p.kpe.resize(size_t(S) * L * M::kDr);
  for (size_t i = 0; i < p.kpe.size(); ++i) p.kpe[i] = uint16_t(1 + (i * 1299709u) % 65521u);
  return p;
}

// Cache element (slot row `key` of S * L, dim d of 576), or 0 for a key past the split.
uint16_t cache_at(const Problem& p, int64_t key, int d) {
  return d < M::kR ? p.ckv[size_t(key) * M::kR + size_t(d)]
                   : p.kpe[size_t(key) * M::kDr + size_t(d - M::kR)];
}

// One block (row n, head group g, split sp of KS keys); returns the operand reads checked.
int64_t run_block(const Problem& p, int n, int g, int sp, int KS) {
  const int hg0 = g * M::kHeads;
  const auto kr = ds::cuda::mlatc::split_keys(sp, KS, p.slot[size_t(n)], p.len[size_t(n)],
                                              p.S, p.L);
  if (kr.jb >= kr.je) return 0;   // the kernel writes zeros / an empty partial and returns
  const int64_t row0 = ds::cuda::mlatc::cache_row0(p.slot[size_t(n)], p.L);
  const uint32_t base = 1024;
  emu::Cta cta(M::kSmemBytes + 2048, M::kThreads, 0);
  const emu::GlobalSpan gckv{p.ckv.data(), p.ckv.size() * 2};
  const emu::GlobalSpan gkpe{p.kpe.data(), p.kpe.size() * 2};
  auto stage = [&](int st) { return base + M::kStage0 + uint32_t(st) * M::kStageBytes; };
  auto load_tile = [&](int st, int t) {
    for (int tid = 0; tid < M::kThreads; ++tid)
      for (int i = 0; i < M::kCopies; ++i) {
        const M::Unit c = M::copy_unit(tid, i);
        const int j = kr.jb + t * M::kKeys + c.r;
        const bool ok = j < kr.je;
        const int64_t key = row0 + j;
        const bool lat = c.u < M::kR / 8;
        const size_t off = !ok ? 0
                         : lat ? (size_t(key) * M::kR + size_t(c.u) * 8) * 2
                               : (size_t(key) * M::kDr + size_t(c.u - M::kR / 8) * 8) * 2;
        cta.cp_async16(tid, stage(st) + M::unit_off(c.r, c.u), lat || !ok ? gckv : gkpe, off,
                       ok ? 16 : 0);
      }
  };
  auto commit_all = [&] {
    for (int tid = 0; tid < M::kThreads; ++tid) cta.commit_group(tid);
  };
  load_tile(0, 0);
  commit_all();
  for (int tid = 0; tid < M::kThreads; ++tid)   // Q's stores: 8 codes a unit
    for (int i = 0; i < M::kQUnits; ++i) {
      const M::Unit c = M::copy_unit(tid, i);
      const int h = hg0 + c.r;
      uint16_t v[8] = {};
      for (int e = 0; e < 8 && h < p.H; ++e)
        v[e] = p.q[(size_t(n) * p.H + size_t(h)) * M::kD + size_t(c.u) * 8 + size_t(e)];
      cta.st_shared(tid, base + M::kQ + M::unit_off(c.r, c.u), v, 16);
    }
  int64_t reads = 0;
  const int nt = M::tiles(kr.jb, kr.je);
  for (int it = 0; it < nt; ++it) {
    for (int tid = 0; tid < M::kThreads; ++tid) cta.wait_group(tid, 0);
    cta.bar_sync();
    if (it + 1 < nt) load_tile((it + 1) & 1, it + 1);
    commit_all();
    const uint32_t tb = stage(it & 1);
    const int k0 = kr.jb + it * M::kKeys;
    const std::string at = "block n " + std::to_string(n) + " g " + std::to_string(g) +
                           " split " + std::to_string(sp) + " tile " + std::to_string(it);
    int bad = 0;
    for (int wg = 0; wg < 2; ++wg) {   // both warpgroups read the same S operands
      for (int kk = 0; kk < M::kD / 16; ++kk) {
        const std::vector<uint16_t> qa =
            cta.wgmma_kmajor_sw128(M::kmajor_step(base + M::kQ, kk), 64);
        const std::vector<uint16_t> kb = cta.wgmma_kmajor_sw128(M::kmajor_step(tb, kk), 64);
        for (int r = 0; r < 64; ++r)
          for (int c = 0; c < 16; ++c) {
            const int h = hg0 + r, d = 16 * kk + c, j = k0 + r;
            const size_t qi = (size_t(n) * p.H + size_t(h)) * M::kD + size_t(d);
            const uint16_t wq = h < p.H ? p.q[qi] : 0;
            const uint16_t wk = j < kr.je ? cache_at(p, row0 + j, d) : 0;
            bad += qa[size_t(r * 16 + c)] != wq;
            bad += kb[size_t(r * 16 + c)] != wk;
          }
        reads += 2;
      }
      for (int kk = 0; kk < 4; ++kk) {   // P V: this warpgroup's 256 latent columns
        const std::vector<uint16_t> v =
            cta.wgmma_mnmajor_sw128(M::v_step(tb, wg, kk), 256, M::kVLbo, M::kVSbo);
        for (int col = 0; col < 256; ++col)
          for (int k = 0; k < 16; ++k) {
            const int j = k0 + 16 * kk + k, d = 256 * wg + col;
            const uint16_t want = j < kr.je ? cache_at(p, row0 + j, d) : 0;
            bad += v[size_t(col * 16 + k)] != want;
          }
        ++reads;
      }
    }
    CHECK_MESSAGE(bad == 0, at << ": " << bad << " wrong elements");
  }
  for (int tid = 0; tid < M::kThreads; ++tid) cta.wait_group(tid, 0);
  CHECK(cta.in_flight() == 0);
  return reads;
}

}  // namespace

TEST_CASE("wgmma MLA decode: every operand read holds its tensor, with no race") {
  // 3 slots of 200 keys; rows: full, ending inside a tile, one key, a bad slot, a bad length;
  // 70 heads (a padded second head group); one split, and splits of 64 and 128 keys
  const Problem p = make(5, 70, 3, 200, {0, 2, 1, 7, 1}, {200, 130, 1, 50, 0});
  int64_t reads = 0;
  for (int KS : {256, 64, 128})
    for (int n = 0; n < p.N; ++n)
      for (int g = 0; g < M::head_groups(p.H); ++g)
        for (int sp = 0; sp * KS < p.L; ++sp) {
          try {
            reads += run_block(p, n, g, sp, KS);
          } catch (const emu::EmuError& e) {
            const std::string msg = "KS " + std::to_string(KS) + " n " + std::to_string(n) +
                                    " split " + std::to_string(sp) + ": " + e.what();
            FAIL_CHECK(msg);
          }
        }
  MESSAGE("wgmma MLA operand reads checked: " << reads);
  CHECK(reads > 500);
}

TEST_CASE("wgmma MLA decode layout: the plan and the shared memory") {
  CHECK(M::kSmemBytes + 1024 <= 227u * 1024u);
  CHECK(M::kStage0 % 1024 == 0);
  CHECK(M::kStageBytes % 1024 == 0);
  // one block per SM: splits fill the SMs once, at least 256 keys a split, 64-key multiples
  const M::Plan a = M::split_plan(4, 132, 4096);
  CHECK(a.splits == 16);   // 132 / 4 = 33, capped at 4096 / 256
  CHECK(a.KS == 256);
  const M::Plan b = M::split_plan(2, 132, 32768);   // 66 asked, 512-key splits: 64
  CHECK(b.splits == 64);
  CHECK(b.KS % 64 == 0);
  CHECK((b.splits - 1) * b.KS < 32768);
  CHECK(M::split_plan(200, 132, 4096).splits == 1);
  CHECK(M::split_plan(1, 132, 100).splits == 1);
  // the descriptor's fields, decoded as the PTX ISA lays them out
  const uint32_t addr = 1024u + M::kStage0 + 4u * M::kChunkBytes + 3u * 2048u;
  const uint64_t d = M::desc_sw128(addr, M::kVLbo, M::kVSbo);
  CHECK(((d & 0x3FFFu) << 4) == addr);
  CHECK((((d >> 16) & 0x3FFFu) << 4) == 8192u);
  CHECK((((d >> 32) & 0x3FFFu) << 4) == 1024u);
  CHECK(((d >> 49) & 7u) == 0u);   // base offset: the operands are 1024-aligned
  CHECK((d >> 62) == 1u);          // 128-byte swizzle
  // the problems it takes: DeepSeek-V3's dims and a full head group
  CHECK(M::takes(128, 512, 64));
  CHECK(M::takes(64, 512, 64));
  CHECK_FALSE(M::takes(16, 512, 64));
  CHECK_FALSE(M::takes(128, 256, 32));
}
