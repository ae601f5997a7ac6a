// The grouped BF16 GEMM kernel's data movement, checked on the CPU (no GPU, no CUDA needed):
// the kernel's block algorithm (kernels/gemm_grouped_bf16.cu) is run on the host with its own
// index arithmetic (kernels/gemm_grouped_bf16_layout.hpp) over an emulation of cp.async,
// ldmatrix and mma (warp_emu.hpp), every block of small grouped calls, prologue / multi-stage
// main loop / epilogue in the kernel's order with its stage indices, and the result compared
// with a double-precision GEMM. Operands are small integers (every sum exact in FP32, so the
// comparison is exact) except in one tolerance case. The emulator also refuses misaligned or
// out-of-range shared accesses, reads of unwritten / in-flight / unpublished shared bytes and
// write-after-read races on a stage. First, the emulator against the PTX ISA's definitions.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/gemm_grouped_bf16_layout.hpp"
#include "warp_emu.hpp"

namespace emu = ds::test::emu;
namespace L = ds::cuda::gbf16;

namespace {

// Shared memory holding `vals` (BF16 codes) at `addr`, published to every thread, as a
// kernel would stage it: cp.async by thread 0, commit, wait, barrier.
void stage(emu::Cta& cta, uint32_t addr, const std::vector<uint16_t>& vals) {
  const emu::GlobalSpan g{vals.data(), vals.size() * 2};
  for (size_t off = 0; off < g.bytes; off += 16)
    cta.cp_async16(0, addr + uint32_t(off), g, off, 16);
  cta.commit_group(0);
  cta.wait_group(0, 0);
  cta.bar_sync();
}

uint32_t pack(uint16_t lo, uint16_t hi) { return uint32_t(lo) | uint32_t(hi) << 16; }

}  // namespace

TEST_CASE("warp emulator: ldmatrix .x4 and .trans follow the PTX definition") {
  // Matrix j row r at a scattered 16-byte slot; element (j, r, c) = 64 j + 8 r + c.
  emu::Cta cta(4096, 32, 1024);
  std::vector<uint16_t> img(2048, 0);
  emu::LaneU32 addr{};
  for (int j = 0; j < 4; ++j)
    for (int r = 0; r < 8; ++r) {
      const int slot = (5 * (8 * j + r) + 3) % 32;   // a permutation of the 32 slots
      for (int c = 0; c < 8; ++c) img[size_t(slot * 16 + c)] = uint16_t(64 * j + 8 * r + c);
      addr[size_t(8 * j + r)] = 1024 + uint32_t(slot) * 32;
    }
  stage(cta, 1024, img);
  const auto plain = cta.ldmatrix<4>(addr, false);
  const auto trans = cta.ldmatrix<4>(addr, true);
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, c = 2 * (l % 4);
      const auto e = [j](int r, int col) { return uint16_t(64 * j + 8 * r + col); };
      CHECK(plain[size_t(j)][size_t(l)] == pack(e(g, c), e(g, c + 1)));
      CHECK(trans[size_t(j)][size_t(l)] == pack(e(c, g), e(c + 1, g)));
    }
  // .x2: lanes 16.. give no address (garbage there is ignored).
  emu::LaneU32 a2 = addr;
  for (int l = 16; l < 32; ++l) a2[size_t(l)] = 7;
  const auto two = cta.ldmatrix<2>(a2, false);
  CHECK(two[1][5] == plain[1][5]);

  emu::LaneU32 bad = addr;
  bad[9] += 2;
  CHECK_THROWS_WITH_AS(cta.ldmatrix<4>(bad, false), doctest::Contains("not 16-byte aligned"),
                       emu::EmuError);
  bad = addr;
  bad[31] = 1024 + 4096;
  CHECK_THROWS_WITH_AS(cta.ldmatrix<4>(bad, true), doctest::Contains("outside shared memory"),
                       emu::EmuError);
  bad[31] = 1008;
  CHECK_THROWS_AS(cta.ldmatrix<4>(bad, true), emu::EmuError);
}

TEST_CASE("warp emulator: cp.async zero fill, groups, barriers and races") {
  std::vector<uint16_t> src(64);
  std::iota(src.begin(), src.end(), uint16_t(1));
  const emu::GlobalSpan g{src.data(), src.size() * 2};
  emu::Cta cta(1024, 64);
  // Thread 3 copies 8 bytes and zero-fills 8, thread 4 zero-fills 16 (nothing read, so an
  // offset past the operand is fine), in two groups.
  cta.cp_async16(3, 0, g, 16, 8);
  cta.commit_group(3);
  cta.cp_async16(4, 16, g, 1u << 20, 0);
  cta.commit_group(4);
  cta.commit_group(4);   // an empty group
  CHECK_THROWS_WITH_AS(cta.ld_b16(0), doctest::Contains("in flight"), emu::EmuError);
  cta.wait_group(4, 2);   // two pending: nothing completes
  CHECK(cta.in_flight() == 2);
  cta.wait_group(4, 0);
  cta.wait_group(3, 0);
  CHECK(cta.in_flight() == 0);
  CHECK_THROWS_WITH_AS(cta.ld_b16(2), doctest::Contains("no barrier since"), emu::EmuError);
  cta.bar_sync();
  CHECK(cta.ld_b16(0) == 9);   // src[8]
  CHECK(cta.ld_b16(6) == 12);
  CHECK(cta.ld_b16(8) == 0);   // zero-filled tail
  for (uint32_t a = 16; a < 32; a += 2) CHECK(cta.ld_b16(a) == 0);
  CHECK_THROWS_WITH_AS(cta.ld_b16(32), doctest::Contains("never written"), emu::EmuError);

  // Refilling bytes read since the last barrier is a race; after a barrier it is fine.
  CHECK_THROWS_WITH_AS(cta.cp_async16(5, 0, g, 0, 16), doctest::Contains("write-after-read"),
                       emu::EmuError);
  cta.bar_sync();
  cta.cp_async16(5, 0, g, 0, 16);
  CHECK_THROWS_WITH_AS(cta.cp_async16(6, 0, g, 0, 16), doctest::Contains("still in flight"),
                       emu::EmuError);
  CHECK_THROWS_WITH_AS(cta.cp_async16(6, 8, g, 0, 16), doctest::Contains("16-byte aligned"),
                       emu::EmuError);
  CHECK_THROWS_WITH_AS(cta.cp_async16(6, 1024, g, 0, 16),
                       doctest::Contains("outside shared memory"), emu::EmuError);
  CHECK_THROWS_WITH_AS(cta.cp_async16(6, 48, g, 120, 16), doctest::Contains("outside the operand"),
                       emu::EmuError);
}

TEST_CASE("warp emulator: mma.m16n8k16 fragments, alone and fed by ldmatrix") {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> d(-9, 9);
  float A[16][16], B[16][8], C[16][8];
  for (auto& r : A)
    for (float& v : r) v = float(d(rng));
  for (auto& r : B)
    for (float& v : r) v = float(d(rng));
  for (auto& r : C)
    for (float& v : r) v = float(d(rng)) * 0.5f;
  const auto bf = [](float v) { return emu::float_to_bf16(v); };
  // The fragments as the PTX ISA lists them (groupID g, threadID_in_group t).
  std::array<emu::LaneU32, 4> a{};
  emu::LaneU32 b0{}, b1{};
  std::array<emu::LaneF32, 4> c{};
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const size_t L = size_t(l);
    a[0][L] = pack(bf(A[g][2 * t]), bf(A[g][2 * t + 1]));
    a[1][L] = pack(bf(A[g + 8][2 * t]), bf(A[g + 8][2 * t + 1]));
    a[2][L] = pack(bf(A[g][2 * t + 8]), bf(A[g][2 * t + 9]));
    a[3][L] = pack(bf(A[g + 8][2 * t + 8]), bf(A[g + 8][2 * t + 9]));
    b0[L] = pack(bf(B[2 * t][g]), bf(B[2 * t + 1][g]));
    b1[L] = pack(bf(B[2 * t + 8][g]), bf(B[2 * t + 9][g]));
    c[0][L] = C[g][2 * t];
    c[1][L] = C[g][2 * t + 1];
    c[2][L] = C[g + 8][2 * t];
    c[3][L] = C[g + 8][2 * t + 1];
  }
  // The same fragments through ldmatrix: A row-major [16][16] (lane l: row l%16, column
  // 8 (l/16)), B stored [n][k] (8 x 16; .x2, lane l < 16: row l%8, column 8 (l/8)).
  emu::Cta cta(1024, 32);
  std::vector<uint16_t> img(512);
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < 16; ++k) img[size_t(16 * i + k)] = bf(A[i][k]);
  for (int n = 0; n < 8; ++n)
    for (int k = 0; k < 16; ++k) img[size_t(256 + 16 * n + k)] = bf(B[k][n]);
  stage(cta, 0, img);
  emu::LaneU32 aa{}, ba{};
  for (int l = 0; l < 32; ++l) {
    aa[size_t(l)] = uint32_t((l % 16) * 32 + 16 * (l / 16));
    ba[size_t(l)] = 512 + uint32_t((l % 8) * 32 + 16 * ((l / 8) % 2));
  }
  const auto a2 = cta.ldmatrix<4>(aa, false);
  const auto bb = cta.ldmatrix<2>(ba, false);
  CHECK(a2 == a);
  CHECK(bb[0] == b0);
  CHECK(bb[1] == b1);

  emu::mma_m16n8k16_bf16(c, a, b0, b1);
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const int row = l / 4 + 8 * (i / 2), col = 2 * (l % 4) + i % 2;
      double s = C[row][col];
      for (int k = 0; k < 16; ++k) s += double(A[row][k]) * B[k][col];
      CHECK(c[size_t(i)][size_t(l)] == float(s));
    }
}

TEST_CASE("grouped BF16 layout: tiles map to (group, m0, n0) one to one") {
  struct E {
    int first_tile, N;
  };
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    const int count = 1 + int(rng() % 9);
    std::vector<E> tab;
    std::vector<int64_t> Ms;
    int64_t tiles = 0;
    for (int i = 0; i < count; ++i) {
      const int M = 1 + int(rng() % 700), N = 2 + 2 * int(rng() % 350);
      tab.push_back({int(tiles), N});
      Ms.push_back(M);
      tiles += L::tile_count(M, N);
    }
    std::set<std::tuple<int, int, int>> seen;
    bool ok = true;
    for (int t = 0; t < int(tiles); ++t) {
      const int gi = L::group_of(tab.data(), count, t);
      const L::TileOrigin o = L::tile_origin(t, tab[size_t(gi)].first_tile, tab[size_t(gi)].N);
      ok = ok && tab[size_t(gi)].first_tile <= t && o.m0 >= 0 && o.m0 < Ms[size_t(gi)] &&
           o.n0 >= 0 && o.n0 < tab[size_t(gi)].N && o.m0 % L::kBM == 0 && o.n0 % L::kBN == 0;
      seen.insert({gi, o.m0, o.n0});
    }
    CHECK(ok);
    CHECK(int64_t(seen.size()) == tiles);   // every tile of every group exactly once
  }
}

namespace {

// One product of a grouped call, with the host table's fields (first_tile, leading
// dimensions) and a guard region after c that no block may touch.
struct Group {
  int M = 0, N = 0, K = 0, lda = 0, ldb = 0, ldc = 0, first_tile = 0;
  std::vector<uint16_t> a, b;
  std::vector<float> c, c0;    // c with guard, and its initial contents
  std::vector<int> writes;     // stores per element of c (guard included)
};
constexpr int kGuard = 64;

struct Call {
  bool ta, tb;
  float alpha, beta;
  bool integers;   // small-integer operands: exact comparison, else a tolerance
  std::vector<std::tuple<int, int, int>> shapes;   // (M, N, K) per group
};

// The kernel's block algorithm for block `tile` of the call, in its order: group and origin,
// prologue (kStages - 1 slices, one commit group each), main loop (wait, barrier, refill stage
// wr, fragments and mma from stage rd, advance both), final wait, epilogue. Per-thread steps
// run for every thread, per-warp steps for every warp, between the same barriers.
template <bool TA, bool TB>
class Block {
 public:
  Block(std::vector<Group>& groups, float alpha, float beta)
      : groups_(groups), alpha_(alpha), beta_(beta) {}

  void run(int tile) {
    emu::Cta cta(uint32_t(L::smem_bytes<TA, TB>()), L::kThreads, 0x400);
    constexpr int kABytes = L::stage_bytes<!TA>(), kBBytes = L::stage_bytes<TB>();
    Group& gd = groups_[size_t(L::group_of(groups_.data(), int(groups_.size()), tile))];
    const L::TileOrigin org = L::tile_origin(tile, gd.first_tile, gd.N);
    const int m0 = org.m0, n0 = org.n0, K = gd.K;
    const uint32_t sa = cta.base(), sb = sa + L::kStages * kABytes;
    const emu::GlobalSpan ga{gd.a.data(), gd.a.size() * 2}, gb{gd.b.data(), gd.b.size() * 2};
    const auto load = [&](int s, int slice) {
      for (int tid = 0; tid < L::kThreads; ++tid) {
        load_slice<!TA>(cta, tid, sa + uint32_t(s * kABytes), ga, gd.lda, gd.M, K, m0,
                        slice * L::kBK, TA ? K : gd.M);
        load_slice<TB>(cta, tid, sb + uint32_t(s * kBBytes), gb, gd.ldb, gd.N, K, n0,
                       slice * L::kBK, TB ? gd.N : K);
      }
    };
    for (auto& w : acc_)
      for (auto& m : w)
        for (auto& n : m)
          for (auto& r : n) r.fill(0.0f);

    const int ktiles = L::k_slices(K);
    for (int s = 0; s < L::kStages - 1; ++s) {
      if (s < ktiles) load(s, s);
      for (int tid = 0; tid < L::kThreads; ++tid) cta.commit_group(tid);
    }
    int rd = 0, wr = L::kStages - 1;
    for (int kt = 0; kt < ktiles; ++kt) {
      for (int tid = 0; tid < L::kThreads; ++tid) cta.wait_group(tid, L::kStages - 2);
      cta.bar_sync();
      const int nk = kt + L::kStages - 1;
      if (nk < ktiles) load(wr, nk);
      for (int tid = 0; tid < L::kThreads; ++tid) cta.commit_group(tid);
      for (int warp = 0; warp < L::kThreads / 32; ++warp)
        warp_step(cta, warp, sa + uint32_t(rd * kABytes), sb + uint32_t(rd * kBBytes));
      rd = L::next_stage(rd);
      wr = L::next_stage(wr);
    }
    for (int tid = 0; tid < L::kThreads; ++tid) cta.wait_group(tid, 0);
    if (cta.in_flight() != 0) throw emu::EmuError("copies in flight at exit");
    epilogue(gd, m0, n0);
  }

  int64_t bad_chunks = 0;   // predicated-on chunks not wholly inside their matrix row

 private:
  // load_slice: copy i of thread tid is slice_copy's chunk, zero-filled when predicated off
  // (the kernel then passes the operand's base, never read). rows: the operand's stored rows.
  template <bool KC>
  void load_slice(emu::Cta& cta, int tid, uint32_t s, const emu::GlobalSpan& g, int ld, int ext,
                  int K, int o0, int k0, int rows) {
    for (int i = 0; i < L::kCopies; ++i) {
      L::ChunkCopy cc;
      const bool ok = L::slice_copy<KC>(tid, i, ext, K, o0, k0, cc);
      if (ok && (cc.row < 0 || cc.row >= rows || cc.col < 0 || cc.col + 8 > ld)) ++bad_chunks;
      const size_t off = ok ? (size_t(cc.row) * size_t(ld) + size_t(cc.col)) * 2 : 0;
      cta.cp_async16(tid, s + cc.soff, g, off, ok ? 16 : 0);
    }
  }

  // One k slice of one warp from stages at as_ / bs_: for each k16 step, the 4 A fragments,
  // then per n-tile pair the B fragments and 8 mma, as the kernel orders them.
  void warp_step(emu::Cta& cta, int warp, uint32_t as_, uint32_t bs_) {
    const int wm = L::warp_m(warp), wn = L::warp_n(warp);
    emu::LaneU32 as{}, bs{};
    for (int l = 0; l < 32; ++l) {
      as[size_t(l)] = as_ + L::AFrag<TA>::lane_off(l, wm);
      bs[size_t(l)] = bs_ + L::BFrag<TB>::lane_off(l, wn);
    }
    auto& acc = acc_[size_t(warp)];
    for (int ks = 0; ks < L::kBK / 16; ++ks) {
      std::array<std::array<emu::LaneU32, 4>, 4> af;
      for (int mt = 0; mt < 4; ++mt)
        af[size_t(mt)] = cta.ldmatrix<4>(
            shift(as, ks * L::AFrag<TA>::kKs + mt * L::AFrag<TA>::kMt), L::AFrag<TA>::kTrans);
      for (int np = 0; np < 2; ++np) {
        const auto bf = cta.ldmatrix<4>(
            shift(bs, ks * L::BFrag<TB>::kKs + np * L::BFrag<TB>::kNp), L::BFrag<TB>::kTrans);
        for (int mt = 0; mt < 4; ++mt) {
          emu::mma_m16n8k16_bf16(acc[size_t(mt)][size_t(2 * np)], af[size_t(mt)], bf[0], bf[1]);
          emu::mma_m16n8k16_bf16(acc[size_t(mt)][size_t(2 * np + 1)], af[size_t(mt)], bf[2],
                                 bf[3]);
        }
      }
    }
  }
  static emu::LaneU32 shift(emu::LaneU32 a, uint32_t by) {
    for (uint32_t& x : a) x += by;
    return a;
  }

  // The kernel's epilogue per lane: float2 stores of alpha * acc (+ beta * c when beta != 0).
  void epilogue(Group& gd, int m0, int n0) {
    for (int warp = 0; warp < L::kThreads / 32; ++warp) {
      const int wm = L::warp_m(warp), wn = L::warp_n(warp);
      const auto& acc = acc_[size_t(warp)];
      for (int lane = 0; lane < 32; ++lane)
        for (int mt = 0; mt < 4; ++mt)
          for (int h = 0; h < 2; ++h) {
            const int row = m0 + L::acc_row(wm, mt, lane, h);
            if (row >= gd.M) continue;
            for (int nt = 0; nt < 4; ++nt) {
              const int col = n0 + L::acc_col(wn, nt, lane);
              if (col >= gd.N) continue;
              const size_t i = size_t(row) * size_t(gd.ldc) + size_t(col);
              if (i % 2 != 0 || i + 2 > gd.c.size()) throw emu::EmuError("misplaced c store");
              const auto& r = acc[size_t(mt)][size_t(nt)];
              float x = alpha_ * r[size_t(2 * h)][size_t(lane)];
              float y = alpha_ * r[size_t(2 * h + 1)][size_t(lane)];
              if (beta_ != 0.0f) {
                x = std::fma(beta_, gd.c[i], x);
                y = std::fma(beta_, gd.c[i + 1], y);
              }
              gd.c[i] = x;
              gd.c[i + 1] = y;
              ++gd.writes[i];
              ++gd.writes[i + 1];
            }
          }
    }
  }

  std::vector<Group>& groups_;
  float alpha_, beta_;
  // acc[warp][mt][nt] = the 4 accumulator registers of every lane.
  std::array<std::array<std::array<std::array<emu::LaneF32, 4>, 4>, 4>, L::kThreads / 32> acc_;
};

// Operands for a call: the host's table order (longest K first, first_tile prefix sums).
std::vector<Group> make_groups(const Call& call, std::mt19937& rng) {
  std::uniform_int_distribution<int> small(-6, 6);
  std::normal_distribution<float> real(0.0f, 1.0f);
  const auto value = [&] {
    return emu::float_to_bf16(call.integers ? float(small(rng)) : real(rng));
  };
  std::vector<Group> gs;
  for (const auto& [M, N, K] : call.shapes) {
    Group g;
    g.M = M;
    g.N = N;
    g.K = K;
    g.lda = call.ta ? M : K;
    g.ldb = call.tb ? K : N;
    g.ldc = N;
    g.a.resize(size_t(M) * size_t(K));
    g.b.resize(size_t(K) * size_t(N));
    for (auto& v : g.a) v = value();
    for (auto& v : g.b) v = value();
    g.c.resize(size_t(M) * size_t(N) + kGuard);
    for (auto& v : g.c)
      v = call.beta == 0.0f ? std::numeric_limits<float>::quiet_NaN()
                            : (call.integers ? float(small(rng)) : real(rng));
    g.c0 = g.c;
    g.writes.assign(g.c.size(), 0);
    gs.push_back(std::move(g));
  }
  std::stable_sort(gs.begin(), gs.end(), [](const Group& x, const Group& y) { return x.K > y.K; });
  int64_t tiles = 0;
  for (Group& g : gs) {
    g.first_tile = int(tiles);
    tiles += L::tile_count(g.M, g.N);
  }
  return gs;
}

// Emulates every block of the call and compares each group with a double-precision GEMM.
template <bool TA, bool TB>
void check_call(const Call& call, std::mt19937& rng) {
  std::vector<Group> gs = make_groups(call, rng);
  const Group& last = gs.back();
  const int tiles = last.first_tile + int(L::tile_count(last.M, last.N));
  Block<TA, TB> block(gs, call.alpha, call.beta);
  for (int t = 0; t < tiles; ++t) {
    try {
      block.run(t);
    } catch (const emu::EmuError& e) {
      FAIL("block " << t << " of " << tiles << ": " << std::string(e.what()));
    }
  }
  CHECK(block.bad_chunks == 0);
  for (const Group& g : gs) {
    CAPTURE(g.M);
    CAPTURE(g.N);
    CAPTURE(g.K);
    int64_t bad = 0, bad_writes = 0;
    std::string first;
    for (int i = 0; i < g.M; ++i)
      for (int j = 0; j < g.N; ++j) {
        double s = 0.0, mag = 0.0;
        for (int k = 0; k < g.K; ++k) {
          const size_t ai = TA ? size_t(k) * size_t(g.lda) + size_t(i)
                               : size_t(i) * size_t(g.lda) + size_t(k);
          const size_t bi = TB ? size_t(j) * size_t(g.ldb) + size_t(k)
                               : size_t(k) * size_t(g.ldb) + size_t(j);
          const double p = double(emu::bf16_to_float(g.a[ai])) * emu::bf16_to_float(g.b[bi]);
          s += p;
          mag += std::fabs(p);
        }
        const size_t ci = size_t(i) * size_t(g.ldc) + size_t(j);
        double want = double(call.alpha) * s;
        if (call.beta != 0.0f) want += double(call.beta) * g.c0[ci];
        const double tol = call.integers ? 0.0 : 1e-5 * (std::fabs(call.alpha) * mag +
                                                        std::fabs(call.beta * g.c0[ci])) + 1e-30;
        const double got = g.c[ci];
        if (!(std::fabs(got - want) <= tol)) {
          if (bad++ == 0)
            first = "c[" + std::to_string(i) + "][" + std::to_string(j) + "] = " +
                    std::to_string(got) + ", want " + std::to_string(want);
        }
        bad_writes += g.writes[ci] != 1;
      }
    INFO(first);
    CHECK(bad == 0);
    CHECK(bad_writes == 0);   // each element stored exactly once
    bool guard = true;
    for (size_t i = size_t(g.M) * size_t(g.N); i < g.c.size(); ++i)
      guard = guard && g.writes[i] == 0 && std::isnan(g.c[i]) == std::isnan(g.c0[i]) &&
              (std::isnan(g.c[i]) || g.c[i] == g.c0[i]);
    CHECK(guard);   // nothing past c touched
  }
}

// Shapes respecting grouped_bf16_kernel_fits: the contiguous extent of a (K, or M when ta) and
// of b (N, or K when tb) a multiple of 8, N even. M, N mostly not multiples of 128, K not of
// 32; K spans 1 .. 9 slices (fewer slices than stages, and several trips round the stages).
std::vector<Call> calls_for(bool ta, bool tb) {
  const auto fit = [ta, tb](int M, int N, int K) {
    const auto up8 = [](int v) { return (v + 7) / 8 * 8; };
    if (ta) M = up8(M);
    if (!ta || tb) K = up8(K);
    N = tb ? (N + 1) / 2 * 2 : up8(N);
    return std::tuple<int, int, int>{M, N, K};
  };
  std::vector<Call> calls;
  calls.push_back({ta, tb, 1.0f, 0.0f, true,   // beta 0: c (NaN) must not be read
                   {fit(200, 136, 72), fit(8, 8, 8), fit(130, 264, 40), fit(64, 50, 264),
                    fit(256, 256, 64)}});
  calls.push_back({ta, tb, 0.5f, 1.5f, true,
                   {fit(129, 130, 104), fit(1, 258, 16), fit(256, 7, 96), fit(40, 128, 136),
                    fit(300, 390, 520)}});
  calls.push_back({ta, tb, -2.0f, -1.0f, false, {fit(96, 200, 200), fit(17, 30, 24)}});
  calls.push_back({ta, tb, 1.0f, 1.0f, true, {fit(136, 72, 48)}});
  if (ta && !tb)   // the weight gradient: K = any token count, several in one call
    calls.push_back({ta, tb, 1.0f, 0.0f, true,
                     {fit(136, 200, 1), fit(48, 136, 7), fit(256, 16, 33), fit(8, 256, 130),
                      fit(144, 264, 130), fit(24, 40, 2), fit(16, 16, 31), fit(32, 8, 32),
                      fit(8, 24, 64), fit(40, 16, 96)}});
  return calls;
}

template <bool TA, bool TB>
void check_layout() {
  std::mt19937 rng(1000 + 2 * int(TA) + int(TB));
  for (const Call& call : calls_for(TA, TB)) {
    CAPTURE(call.alpha);
    CAPTURE(call.beta);
    check_call<TA, TB>(call, rng);
  }
}

}  // namespace

TEST_CASE("grouped BF16 kernel, emulated on the CPU: (0,1) forward") {
  check_layout<false, true>();
}
TEST_CASE("grouped BF16 kernel, emulated on the CPU: (0,0) input gradient") {
  check_layout<false, false>();
}
TEST_CASE("grouped BF16 kernel, emulated on the CPU: (1,0) weight gradient") {
  check_layout<true, false>();
}
TEST_CASE("grouped BF16 kernel, emulated on the CPU: (1,1)") {
  check_layout<true, true>();
}
