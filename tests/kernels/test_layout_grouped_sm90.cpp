// The wgmma grouped BF16 GEMM's block algorithm (kernels/gemm_grouped_sm90.cu), run on the
// CPU with its own index arithmetic (kernels/gemm_grouped_sm90_layout.hpp) over the warp
// emulator (warp_emu.hpp): every block of small grouped calls in all four layouts, the copies,
// commit groups, waits and both barriers of the main loop in the kernel's order, every
// operand a wgmma reads taken through the descriptor the kernel builds (decoded, then read by
// the K-major or MN-major model), multiplied, and each accumulator put where the epilogue
// puts it; the tiles must equal a reference GEMM exactly (small integers: every sum exact).
// A wgmma group may read its stage until the wait that retires it, so its operands are read
// again there: a refill of a stage still being read shows as a race or as wrong sums (checked
// by mutation). What it cannot show: that the card reads what the descriptors say (the
// MN-major layout is the GPU probe's question) and the accumulator layout the epilogue
// assumes; the GPU tests (test_ops_grouped.cpp) cover the numbers.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/gemm_grouped_sm90_layout.hpp"
#include "warp_emu.hpp"

namespace emu = ds::test::emu;
namespace W = ds::cuda::gw90;
namespace G = ds::cuda::gbf16;

namespace {

enum class Mutation { none, refill_in_flight, refill_landed, no_second_barrier, mn_step_half };

struct Product {
  int M, N, K;
  std::vector<uint16_t> a, b;   // as stored: a (M, K) or (K, M) when TA; b (K, N) or (N, K)
  std::vector<float> c0;        // c before the call (beta != 0)
};

uint16_t small(uint32_t i) {   // a BF16 code of a small integer in [-3, 3]
  const int v = int((i * 2654435761u) >> 29) % 7 - 3;
  return emu::float_to_bf16(float(v));
}

Product make(int M, int N, int K, uint32_t seed) {
  Product p{M, N, K, {}, {}, {}};
  p.a.resize(size_t(M) * K);
  p.b.resize(size_t(K) * N);
  p.c0.resize(size_t(M) * N);
  for (size_t i = 0; i < p.a.size(); ++i) p.a[i] = small(uint32_t(i) * 3 + seed);
  for (size_t i = 0; i < p.b.size(); ++i) p.b[i] = small(uint32_t(i) * 5 + seed * 7 + 1);
  for (size_t i = 0; i < p.c0.size(); ++i) p.c0[i] = float(int(i % 5) - 2);
  return p;
}

// op(a)[m][k], op(b)[k][n] as values.
template <bool TA>
float a_at(const Product& p, int m, int k) {
  return emu::bf16_to_float(TA ? p.a[size_t(k) * p.M + m] : p.a[size_t(m) * p.K + k]);
}
template <bool TB>
float b_at(const Product& p, int k, int n) {
  return emu::bf16_to_float(TB ? p.b[size_t(n) * p.K + k] : p.b[size_t(k) * p.N + n]);
}

// A descriptor's fields (PTX ISA "Matrix Descriptor Format"); the swizzle must be 128 bytes.
struct Desc {
  uint32_t start, lbo, sbo;
};
Desc decode(uint64_t d) {
  if ((d >> 62) != 1u || ((d >> 49) & 7u) != 0u)
    throw emu::EmuError("descriptor without the 128-byte swizzle or with a base offset");
  return {uint32_t(d & 0x3FFFu) << 4, uint32_t((d >> 16) & 0x3FFFu) << 4,
          uint32_t((d >> 32) & 0x3FFFu) << 4};
}
// The operand a descriptor reads: [row][k] of `rows` rows (M or N) x 16.
std::vector<uint16_t> read(emu::Cta& cta, bool mn_major, uint64_t d, int rows) {
  const Desc x = decode(d);
  return mn_major ? cta.wgmma_mnmajor_sw128(x.start, rows, x.lbo, x.sbo)
                  : cta.wgmma_kmajor_sw128(x.start, rows, x.sbo);
}

// One block (tile m0, n0 of product p): c's tile as the kernel leaves it (alpha, beta), into
// c. Returns the operand reads.
template <bool TA, bool TB>
int64_t run_block(const Product& p, int m0, int n0, float alpha, float beta,
                  std::vector<float>& c, Mutation mut = Mutation::none) {
  const uint32_t base = 1024;
  emu::Cta cta(uint32_t(W::kSmemBytes) + 1024, W::kThreads, 0);
  const emu::GlobalSpan ga{p.a.data(), p.a.size() * 2}, gb{p.b.data(), p.b.size() * 2};
  const int lda = TA ? p.M : p.K, ldb = TB ? p.K : p.N;
  auto load = [&](int kb, int s) {
    for (int tid = 0; tid < W::kThreads; ++tid)
      for (int i = 0; i < W::kCopies; ++i) {
        G::ChunkCopy cc;
        bool ok = W::block_copy<!TA>(tid, i, p.M, p.K, m0, kb * W::kBK, cc);
        cta.cp_async16(tid, W::stage_a(base, s) + cc.soff, ga,
                       ok ? (size_t(cc.row) * lda + size_t(cc.col)) * 2 : 0, ok ? 16 : 0);
        ok = W::block_copy<TB>(tid, i, p.N, p.K, n0, kb * W::kBK, cc);
        cta.cp_async16(tid, W::stage_b(base, s) + cc.soff, gb,
                       ok ? (size_t(cc.row) * ldb + size_t(cc.col)) * 2 : 0, ok ? 16 : 0);
      }
  };
  auto commit = [&] {
    for (int tid = 0; tid < W::kThreads; ++tid) cta.commit_group(tid);
  };
  std::vector<double> acc(size_t(W::kBM) * W::kBN, 0.0);   // [row][col] of the tile
  int64_t reads = 0;
  constexpr bool amn = W::a_mn_major<TA>(), bmn = W::b_mn_major<TB>();
  // Block kb's wgmma group (both warpgroups): its operands, read when it is issued (then
  // multiplied, and kept) and again when the wait retires it (a wgmma may read its operands
  // until then): the second read must find the same values.
  std::vector<std::vector<uint16_t>> issued[W::kStages];
  auto group = [&](int kb, bool issue) {
    const int s = kb % W::kStages;
    std::vector<std::vector<uint16_t>>& kept = issued[s];
    if (issue) kept.clear();
    size_t at = 0;
    for (int wg = 0; wg < 2; ++wg)
      for (int kk = 0; kk < W::kBK / 16; ++kk) {
        uint32_t bs = W::b_step<TB>(W::stage_b(base, s), kk);
        if (mut == Mutation::mn_step_half && bmn) bs -= uint32_t(kk) * 1024u;
        std::vector<uint16_t> av =
            read(cta, amn, W::a_desc(amn, W::a_step<TA>(W::stage_a(base, s), wg, kk)), 64);
        std::vector<uint16_t> bv = read(cta, bmn, W::b_desc(bmn, bs), 128);
        reads += 2;
        if (!issue) {   // retiring: the operands must not have changed under the wgmma
          if (kept.at(at) != av || kept.at(at + 1) != bv)
            throw emu::EmuError("block " + std::to_string(kb) +
                                "'s operands changed before its wgmma group retired");
          at += 2;
          continue;
        }
        kept.push_back(av);
        kept.push_back(bv);
        for (int r = 0; r < 64; ++r)
          for (int n = 0; n < 128; ++n) {
            double sum = 0;
            for (int k = 0; k < 16; ++k)
              sum += double(emu::bf16_to_float(av[size_t(r * 16 + k)])) *
                     emu::bf16_to_float(bv[size_t(n * 16 + k)]);
            acc[size_t(64 * wg + r) * W::kBN + size_t(n)] += sum;
          }
      }
  };
  const int nk = W::k_blocks(p.K);
  static_assert(W::kWgmmaPending == 1, "one group in flight: kb - 1 retires at kb's wait");
  for (int s = 0; s < W::kPrefetch; ++s) {
    if (s < nk) load(s, s);
    commit();
  }
  for (int kb = 0; kb < nk; ++kb) {
    for (int tid = 0; tid < W::kThreads; ++tid) cta.wait_group(tid, W::kCpPending);
    cta.bar_sync();
    group(kb, true);                     // issued
    if (kb > 0) group(kb - 1, false);    // block kb - 1 reads until this wait retires it
    if (mut != Mutation::no_second_barrier) cta.bar_sync();
    const int next = kb + W::kPrefetch;
    const bool wrong = mut == Mutation::refill_in_flight || mut == Mutation::refill_landed;
    if (next < nk) load(next, wrong ? kb % W::kStages : next % W::kStages);
    commit();
    if (mut == Mutation::refill_landed)   // the refill completes before the group retires
      for (int tid = 0; tid < W::kThreads; ++tid) cta.wait_group(tid, 0);
  }
  if (nk > 0) group(nk - 1, false);   // the last group retires at the final wait
  for (int tid = 0; tid < W::kThreads; ++tid) cta.wait_group(tid, 0);
  if (cta.in_flight() != 0) throw emu::EmuError("copies left in flight");
  // Epilogue: each accumulator to its (row, col); every tile position exactly once.
  std::vector<int> seen(acc.size(), 0);
  for (int wg = 0; wg < 2; ++wg)
    for (int warp = 0; warp < 4; ++warp)
      for (int lane = 0; lane < 32; ++lane)
        for (int nt = 0; nt < 16; ++nt)
          for (int e = 0; e < 4; ++e) {
            const int r = W::acc_row(wg, warp, lane, e), col = W::acc_col(nt, lane) + (e & 1);
            ++seen[size_t(r) * W::kBN + size_t(col)];
            const int m = m0 + r, n = n0 + col;
            if (m >= p.M || n >= p.N) continue;
            const size_t i = size_t(m) * p.N + size_t(n);
            const float v = alpha * float(acc[size_t(r) * W::kBN + size_t(col)]);
            c[i] = beta != 0.0f ? v + beta * p.c0[i] : v;
          }
  for (int x : seen)
    if (x != 1) throw emu::EmuError("the epilogue's positions do not cover the tile once");
  return reads;
}

// Every block of a grouped call through the host's table (prefix sums of tiles, the
// tile grid of gbf16); returns the number of elements that differ from the reference.
template <bool TA, bool TB>
int64_t run_call(const std::vector<Product>& ps, float alpha, float beta, int64_t* reads) {
  std::vector<G::GroupTile> table(ps.size());
  int tiles = 0;
  for (size_t g = 0; g < ps.size(); ++g) {
    table[g] = {};
    table[g].N = ps[g].N;
    table[g].first_tile = tiles;
    tiles += int(G::tile_count(ps[g].M, ps[g].N));
  }
  std::vector<std::vector<float>> out(ps.size());
  for (size_t g = 0; g < ps.size(); ++g) out[g].assign(ps[g].c0.size(), -12345.0f);
  for (int t = 0; t < tiles; ++t) {
    const int g = G::group_of(table.data(), int(table.size()), t);
    const G::TileOrigin o = G::tile_origin(t, table[size_t(g)].first_tile, ps[size_t(g)].N);
    *reads += run_block<TA, TB>(ps[size_t(g)], o.m0, o.n0, alpha, beta, out[size_t(g)]);
  }
  int64_t bad = 0;
  for (size_t g = 0; g < ps.size(); ++g) {
    const Product& p = ps[g];
    for (int m = 0; m < p.M; ++m)
      for (int n = 0; n < p.N; ++n) {
        double sum = 0;
        for (int k = 0; k < p.K; ++k) sum += double(a_at<TA>(p, m, k)) * b_at<TB>(p, k, n);
        const size_t i = size_t(m) * p.N + size_t(n);
        float want = alpha * float(sum);
        if (beta != 0.0f) want += beta * p.c0[i];
        bad += out[g][i] != want;
      }
  }
  return bad;
}

template <bool TA, bool TB>
void check_layout(const std::vector<int>& Ks) {
  // M and N that end inside a tile, the contiguous extents multiples of 8 (M only when TA);
  // K from the caller (a multiple of 8 where it is contiguous); enough K blocks to wrap the ring
  std::vector<Product> ps;
  const int shapes[3][2] = {{TA ? 136 : 130, 136}, {64, 24}, {200, 128}};
  for (size_t g = 0; g < Ks.size(); ++g)
    ps.push_back(make(shapes[g % 3][0], shapes[g % 3][1], Ks[g], uint32_t(g) + 1));
  int64_t reads = 0;
  for (const auto& ab : {std::pair<float, float>{1.0f, 0.0f}, {2.0f, 0.5f}}) {
    int64_t bad = -1;
    try {
      bad = run_call<TA, TB>(ps, ab.first, ab.second, &reads);
    } catch (const emu::EmuError& e) {
      FAIL_CHECK("TA " << TA << " TB " << TB << ": " << std::string(e.what()));
    }
    CHECK_MESSAGE(bad == 0, "TA " << TA << " TB " << TB << " alpha " << ab.first << ": " << bad
                                  << " wrong elements");
  }
  MESSAGE("TA " << TA << " TB " << TB << ": " << reads << " operand reads checked");
  CHECK(reads > 0);
}

}  // namespace

TEST_CASE("wgmma grouped GEMM: every block of all four layouts gives the reference, no race") {
  check_layout<false, true>({200, 64, 8});    // forward: a (M, K), b (N, K)
  check_layout<false, false>({136, 72, 256});  // input gradient: b (K, N) MN-major
  check_layout<true, false>({77, 1, 193});    // weight gradient: K = tokens, any count
  check_layout<true, true>({200, 8, 64});
}

TEST_CASE("wgmma grouped GEMM: the emulation catches a wrong ring, barrier or step") {
  const Product p = make(128, 128, 320, 3);   // 5 K blocks: the ring wraps
  std::vector<float> c(size_t(128) * 128);
  auto outcome = [&](Mutation m) -> std::string {
    try {
      run_block<false, false>(p, 0, 0, 1.0f, 0.0f, c, m);
    } catch (const emu::EmuError& e) {
      return std::string("error: ") + e.what();
    }
    for (int i = 0; i < 128; ++i)
      for (int n = 0; n < 128; ++n) {
        double sum = 0;
        for (int k = 0; k < p.K; ++k) sum += double(a_at<false>(p, i, k)) * b_at<false>(p, k, n);
        if (c[size_t(i) * 128 + size_t(n)] != float(sum)) return "wrong sums";
      }
    return "exact";
  };
  CHECK(outcome(Mutation::none) == "exact");
  // refilling the stage of the group just issued: its retiring read meets the copy in flight,
  // or (the copy waited for at once) finds other values than the group was issued with
  CHECK(outcome(Mutation::refill_in_flight).find("in flight") != std::string::npos);
  CHECK(outcome(Mutation::refill_landed).find("operands changed") != std::string::npos);
  // the refill without the barrier after the wait: a write-after-read race
  CHECK(outcome(Mutation::no_second_barrier).find("write-after-read") != std::string::npos);
  // the MN-major b stepping 8 K-rows instead of 16: other elements
  CHECK(outcome(Mutation::mn_step_half) != "exact");
}

TEST_CASE("wgmma grouped GEMM layout: shared memory, descriptors, copies") {
  CHECK(W::kSmemBytes <= 227 * 1024);
  CHECK(W::kStageBytes % 1024 == 0);
  CHECK(W::kOperandBytes % 1024 == 0);
  // K-major: SBO 1024 (8 rows of 128 bytes); MN-major: atoms 8 KB apart along M/N, SBO 1024
  const Desc k = decode(W::a_desc(false, 1024u + 32u));
  CHECK(k.start == 1056u);
  CHECK(k.sbo == 1024u);
  const Desc m = decode(W::b_desc(true, 1024u + 2048u));
  CHECK(m.start == 3072u);
  CHECK(m.lbo == W::kChunkBytes);
  CHECK(m.sbo == 1024u);
  // every shared byte of an operand's block is written by exactly one copy, in both layouts
  for (bool kc : {true, false}) {
    std::vector<int> hit(W::kOperandBytes, 0);
    for (int tid = 0; tid < W::kThreads; ++tid)
      for (int i = 0; i < W::kCopies; ++i) {
        G::ChunkCopy cc;
        if (kc) W::block_copy<true>(tid, i, 128, 64, 0, 0, cc);
        else W::block_copy<false>(tid, i, 128, 64, 0, 0, cc);
        for (uint32_t b = 0; b < 16; ++b) ++hit[cc.soff + b];
      }
    int once = 0;
    for (int h : hit) once += h == 1;
    CHECK(once == int(W::kOperandBytes));
  }
}
