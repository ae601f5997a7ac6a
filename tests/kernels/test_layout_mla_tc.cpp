// The tensor-core MLA latent-attention kernel's data movement and arithmetic order, checked on
// the CPU (no GPU, no CUDA needed): the kernel's block algorithm (kernels/mla_decode_tc.cu,
// emulated by mla_tc_block_emu.hpp) is run on the host with its own index arithmetic
// (kernels/mla_decode_tc_layout.hpp) over an emulation of cp.async, ldmatrix, mma, shared loads /
// stores, shuffles and barriers (warp_emu.hpp): every block of small problems, in the kernel's
// order (q staging, prologue, ring of stages, score mma, partial-score exchange, online softmax, P
// V mma, epilogue), then the combine step of several splits (mla_combine_kernel of
// kernels/mla_decode.cu), the launcher's choices (heads per CTA, stages, splits) from the layout
// header for a given shared-memory capacity and CTA target. The emulator refuses out-of-range,
// misaligned, unwritten, in-flight or racing shared accesses; the test also refuses global reads
// outside q and the cache, cache rows outside the block's visible keys, and output stores outside
// their tensors or repeated. Results against a double-precision reference over the same BF16
// cache, with the tolerance of the kernel's roundings (reference_check).
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
#include "mla_tc_block_emu.hpp"
#include "warp_emu.hpp"

namespace emu = ds::test::emu;
namespace M = ds::cuda::mlatc;

using namespace ds::test::mla_emu;

namespace {

struct Case {
  const char* what;
  int H, R, Dr, S, L;
  std::vector<int32_t> lens;   // visible lengths of the valid rows
  bool bad;                    // interleave rows with a bad slot or len
  size_t cap;                  // shared memory per block (opt-in), bytes
  int64_t target;              // CTA slots the splits fill (per SM x SMs)
  int KS = 0;                  // keys per split forced (0: the launcher's choice)
};
constexpr size_t kCapH100 = 232448, kCapA100 = 166912;

Problem make_problem(const Case& c, std::mt19937& rng) {
  Problem p;
  std::tie(p.H, p.R, p.Dr, p.S, p.L) = std::tie(c.H, c.R, c.Dr, c.S, c.L);
  const int32_t bad_slot[] = {-1, c.S, INT_MIN, 0, 0, 0};
  const int32_t bad_len[] = {5, 5, 3, 0, c.L + 1, INT_MAX};
  std::uniform_int_distribution<int> pick(0, c.S - 1);
  for (size_t i = 0; i < c.lens.size(); ++i) {
    p.slot.push_back(pick(rng));
    p.len.push_back(c.lens[i]);
    p.valid.push_back(true);
    if (c.bad && i < 6) {
      p.slot.push_back(bad_slot[i]);
      p.len.push_back(bad_len[i]);
      p.valid.push_back(false);
    }
  }
  p.N = int(p.slot.size());
  // q ~ U(-3, 3), cache ~ U(-1, 1) in BF16, scale 1 / sqrt(R + Dr): scores ~ N(0, 1), as in
  // the GPU test (test_ops_attention.cpp)
  std::uniform_real_distribution<float> u3(-3.f, 3.f), u1(-1.f, 1.f);
  const size_t NH = size_t(p.N) * size_t(p.H), SL = size_t(p.S) * size_t(p.L);
  p.q_lat.resize(NH * size_t(p.R));
  p.q_pe.resize(NH * size_t(p.Dr));
  p.ckv.resize(SL * size_t(p.R));
  p.kpe.resize(SL * size_t(p.Dr));
  for (auto* q : {&p.q_lat, &p.q_pe})
    for (float& x : *q) x = u3(rng);
  for (auto* c : {&p.ckv, &p.kpe})
    for (uint16_t& x : *c) x = bf(u1(rng));
  p.scale = 1.f / std::sqrt(float(p.R + p.Dr));
  return p;
}

Plan make_plan(const Case& c, int N) {
  const int64_t D = c.R + c.Dr;
  Plan pl;
  pl.MT = M::head_mtiles(c.H, D, c.cap);
  pl.stages = M::ring_stages(pl.MT, D, c.cap);
  pl.groups = M::head_groups(c.H, pl.MT);
  pl.cgroups = M::col_groups(c.R);
  const M::SplitPlan sp = M::split_plan(int64_t(N) * pl.groups * pl.cgroups, c.target, c.L, pl.MT);
  pl.KS = c.KS > 0 ? c.KS : int(sp.KS);
  pl.splits = c.KS > 0 ? (c.L + c.KS - 1) / c.KS : int(sp.splits);
  return pl;
}

// Kernel against the double-precision reference (unrounded q, the same BF16 cache), per
// element. The kernel's departures: q rounded to BF16 shifts score j by d_j = scale (q~ - q).k_j
// (computed here exactly); p rounded to BF16 scales each weight by 1 + rho, |rho| <= 2^-9;
// FP32 sums (score partials, exp, the online rescaling, row sums, combine). So each
// unnormalised weight is exp(s_j - m)(1 + e_j) with |ln(1 + e_j)| <= Delta = max_j (|d_j| +
// g a_j) + 2^-9 (1 + 2^-8) + f, a_j = scale sum_d |q~_d k_jd|, g = (D/16 + 10) 2^-22 (FP32
// score sums), f = (4 tiles + 16) 2^-23 (exp, rescaling); the normalised weights then move by
// at most w_j (e^{2 Delta} - 1), and since they sum to 1 the output by at most
// (e^{2 Delta} - 1) sum_j w_j |v_j - o| + k sum_j w_j |v_j|, k = (8 tiles + 64) 2^-23 for the
// FP32 accumulation of P V, the row sums and the normalisation. With these inputs Delta ~
// 5e-3: the bound is ~1% of the spread of the values, far below what a wrong key, column,
// head or tile gives (a single-key row must even come out exact: p = 1, l = 1). Rows with a
// bad slot or len must be exactly 0.
struct Verdict {
  int64_t over = 0, nonzero_bad = 0, inexact_single = 0, nonfinite = 0;
  double worst = 0;   // max |err| / tol
  std::string first;
};
Verdict reference_check(const Problem& P, const std::vector<float>& got) {
  Verdict v;
  const int D = P.R + P.Dr, R = P.R;
  for (int n = 0; n < P.N; ++n)
    for (int h = 0; h < P.H; ++h) {
      const float* g = got.data() + (int64_t(n) * P.H + h) * R;
      if (!P.valid[size_t(n)]) {
        for (int r = 0; r < R; ++r) v.nonzero_bad += g[r] != 0.f;
        continue;
      }
      const int nk = P.len[size_t(n)];
      const uint16_t* C = P.ckv.data() + int64_t(P.slot[size_t(n)]) * P.L * R;
      const uint16_t* K = P.kpe.data() + int64_t(P.slot[size_t(n)]) * P.L * P.Dr;
      const float* ql = P.q_lat.data() + (int64_t(n) * P.H + h) * R;
      const float* qp = P.q_pe.data() + (int64_t(n) * P.H + h) * P.Dr;
      std::vector<double> s(size_t(nk), 0.0);
      double mx = -INFINITY, delta = 0;
      for (int j = 0; j < nk; ++j) {
        double a = 0, shift = 0, mag = 0;
        for (int d = 0; d < D; ++d) {
          const double q = d < R ? ql[d] : qp[d - R];
          const double k = d < R ? fb(C[int64_t(j) * R + d]) : fb(K[int64_t(j) * P.Dr + d - R]);
          const double qr = fb(bf(float(q)));
          a += q * k;
          shift += (qr - q) * k;
          mag += std::fabs(qr * k);
        }
        s[size_t(j)] = a * P.scale;
        mx = std::max(mx, s[size_t(j)]);
        delta = std::max(delta, P.scale * (std::fabs(shift) + (D / 16 + 10) * 0x1p-22 * mag));
      }
      const int tiles = (nk + M::kBK - 1) / M::kBK;
      delta += 0x1p-9 * (1 + 0x1p-8) + (4 * tiles + 16) * 0x1p-23;
      const double widen = std::expm1(2 * delta), kappa = (8 * tiles + 64) * 0x1p-23;
      double z = 0;
      for (double& x : s) z += (x = std::exp(x - mx));
      for (int r = 0; r < R; ++r) {
        double o = 0, spread = 0, mag = 0;
        for (int j = 0; j < nk; ++j) o += s[size_t(j)] / z * fb(C[int64_t(j) * R + r]);
        for (int j = 0; j < nk; ++j) {
          const double c = fb(C[int64_t(j) * R + r]), w = s[size_t(j)] / z;
          spread += w * std::fabs(c - o);
          mag += w * std::fabs(c);
        }
        const double tol = widen * spread + kappa * mag + 1e-30, err = std::fabs(g[r] - o);
        if (!std::isfinite(g[r])) ++v.nonfinite;
        if (nk == 1 && g[r] != fb(C[r])) ++v.inexact_single;
        v.worst = std::max(v.worst, err / tol);
        if (!(err <= tol) && v.over++ == 0)
          v.first = "row " + std::to_string(n) + " head " + std::to_string(h) + " col " +
                    std::to_string(r) + ": " + std::to_string(g[r]) + ", want " +
                    std::to_string(o) + " +- " + std::to_string(tol);
      }
    }
  return v;
}

template <int MT>
void run_case(const Case& c, const Problem& P, const Plan& pl) {
  Outputs o;
  const size_t nout = size_t(P.N) * size_t(P.H) * size_t(P.R);
  o.out.init(nout);
  if (pl.splits > 1) {
    o.po.init(nout * size_t(pl.splits));
    o.pm.init(size_t(P.N) * size_t(pl.splits) * size_t(P.H));
    o.pl.init(o.pm.n);
  }
  auto blk = std::make_unique<Block<MT>>(P, pl, o);
  for (int sp = 0; sp < pl.splits; ++sp)   // every block of the grid (N groups cgroups, splits)
    for (unsigned bx = 0; bx < unsigned(P.N * pl.groups * pl.cgroups); ++bx) {
      try {
        blk->run(bx, sp);
      } catch (const emu::EmuError& e) {
        FAIL("block (" << bx << ", " << sp << "): " << std::string(e.what()));
      }
    }
  CHECK(blk->bad_chunks == 0);
  if (pl.splits > 1) {   // the combine refuses m, l or weighed partials not stored once
    CHECK((o.po.guard_intact() && o.pm.guard_intact() && o.pl.guard_intact()));
    try {
      combine(P, pl, o);
    } catch (const emu::EmuError& e) {
      FAIL("combine: " << std::string(e.what()));
    }
  }
  int64_t bad_writes = 0;
  for (size_t i = 0; i < nout; ++i) bad_writes += o.out.writes[i] != 1;
  CHECK(bad_writes == 0);   // each output element stored exactly once
  CHECK(o.out.guard_intact());
  const Verdict v = reference_check(P, o.out.v);
  MESSAGE(std::string(c.what) << ": MT " << pl.MT << " stages " << pl.stages << " groups "
                              << pl.groups << " cgroups " << pl.cgroups << " splits " << pl.splits
                              << " KS " << pl.KS << ", " << blk->mmas << " mma, " << blk->copies
                              << " cp.async; worst err/tol " << v.worst);
  INFO(v.first);
  CHECK(v.over == 0);
  CHECK(v.nonfinite == 0);
  CHECK(v.nonzero_bad == 0);      // bad rows: exact zeros
  CHECK(v.inexact_single == 0);   // one visible key: that row, exactly
}

void check_case(const Case& c, std::mt19937& rng) {
  const Problem P = make_problem(c, rng);
  const Plan pl = make_plan(c, P.N);
  INFO(std::string(c.what) << " (H " << c.H << " R " << c.R << " Dr " << c.Dr << " L " << c.L
                           << ")");
  REQUIRE(M::smem_bytes(pl.MT, pl.stages, c.R + c.Dr) <= c.cap);
  REQUIRE(M::smem_layout(16 * pl.MT, pl.stages, c.R + c.Dr).bytes ==
          M::smem_bytes(pl.MT, pl.stages, c.R + c.Dr));
  switch (pl.MT) {
    case 1: run_case<1>(c, P, pl); break;
    case 2: run_case<2>(c, P, pl); break;
    case 3: run_case<3>(c, P, pl); break;
    default: run_case<4>(c, P, pl); break;
  }
}

}  // namespace

TEST_CASE("warp emulator: plain shared stores and loads, races, shuffles") {
  const auto refused = [](auto&& f, const char* why) {
    CHECK_THROWS_WITH_AS(f(), doctest::Contains(why), emu::EmuError);
  };
  emu::Cta cta(256, 64);
  cta.st<uint32_t>(3, 16, 0x01020304u);
  CHECK(cta.ld<uint32_t>(3, 16) == 0x01020304u);   // the storing thread sees its store
  refused([&] { cta.ld<uint32_t>(4, 16); }, "read-after-write");
  refused([&] { cta.st<uint16_t>(5, 18, 7); }, "write-after-write");
  refused([&] { cta.ld<float>(3, 32); }, "never written");
  refused([&] { cta.st<uint64_t>(3, 36, 0); }, "8-byte aligned");
  refused([&] { cta.st<uint32_t>(3, 256, 0); }, "outside shared memory");
  emu::LaneU32 rows{};
  rows.fill(16);
  refused([&] { cta.ldmatrix<1>(rows, false); }, "no barrier since");
  cta.bar_sync();
  CHECK(cta.ld<uint32_t>(4, 16) == 0x01020304u);
  CHECK(cta.ld<uint32_t>(5, 16) == 0x01020304u);
  refused([&] { cta.st<uint32_t>(4, 16, 0); }, "write-after-read");
  cta.bar_sync();
  cta.ld<uint32_t>(4, 16);
  cta.st<uint32_t>(4, 16, 9);   // the only reader may overwrite
  const std::vector<uint16_t> src(8, 1);
  refused([&] { cta.cp_async16(6, 16, {src.data(), 16}, 0, 16); }, "since the last barrier");
  cta.cp_async16(6, 48, {src.data(), 16}, 0, 16);
  refused([&] { cta.st<uint32_t>(6, 52, 0); }, "in flight");
  cta.commit_group(6);
  cta.wait_group(6, 0);
  CHECK(cta.ld<uint16_t>(6, 50) == 1);   // its own completed copy
  refused([&] { cta.ld<uint16_t>(7, 50); }, "no barrier since");
  emu::LaneF32 v{};
  for (int l = 0; l < 32; ++l) v[size_t(l)] = float(l);
  CHECK(emu::shfl_bfly(v, 5)[0] == 5.f);
  CHECK(emu::shfl_bfly(v, 5)[7] == 2.f);
  CHECK(warp_sum(v)[13] == 496.f);
  CHECK(warp_max(v)[3] == 31.f);
}

TEST_CASE("MLA TC layout: shared memory, key splits, tile copies, the launcher's splits") {
  CHECK(M::ring_pending(M::kMaxStages) <= 2);   // the kernel's cp_wait_upto takes 0..2
  bool smem = true, splits_ok = true, copies_ok = true, plans = true;
  for (int MT = 1; MT <= 4; ++MT)
    for (int stages = 2; stages <= M::kMaxStages; ++stages)
      for (int D : {48, 160, 576, 1280}) {   // regions 16-byte aligned, in order, as sized
        const M::Smem m = M::smem_layout(16 * MT, stages, D);
        smem = smem && m.bytes == M::smem_bytes(MT, stages, D) && m.q == m.alpha + 192 * MT &&
               (m.alpha | m.q | m.p | m.tiles | m.stage) % 16 == 0;
      }
  // the splits of a row cover [0, len) in order, their tiles each key once; bad rows: none
  for (int KS : {32, 64, 224})
    for (int ln : {1, 31, 32, 33, 100, 300}) {
      const int L = 300;
      int covered = 0, tiles_keys = 0;
      for (int sp = 0; sp * KS < L; ++sp) {
        const M::KeyRange k = M::split_keys(sp, KS, 0, ln, 1, L);
        for (const auto& [sl, bl] : {std::pair{-1, 5}, {1, 5}, {0, 0}, {0, L + 1}}) {
          const M::KeyRange e = M::split_keys(sp, KS, sl, bl, 1, L);
          splits_ok = splits_ok && e.je == e.jb;
        }
        if (k.je <= k.jb) continue;
        splits_ok = splits_ok && k.jb == covered;
        covered = k.je;
        for (int t = 0; t < M::tile_count(k.jb, k.je); ++t)
          tiles_keys += M::tile_keys(k.je, M::tile_key0(k.jb, t));
      }
      splits_ok = splits_ok && covered == ln && tiles_keys == ln;
    }
  // a tile's copies: each (row, chunk) once, predicated on for the visible rows
  for (int CD : {6, 20, 72, 160})
    for (int nk : {1, 7, 32}) {
      std::vector<int> hits(size_t(M::kBK * CD), 0);
      for (int tid = 0; tid < M::kNT; ++tid)
        M::tile_copies(tid >> 5, tid & 31, nk, CD, [&](int r, int c, bool ok) {
          copies_ok = copies_ok && ok == (r < nk) && c >= 0 && c < CD && bump(hits, r * CD + c);
        });
      copies_ok = copies_ok && all_once(hits);
    }
  // the launcher's splits: multiples of kBK covering L, none empty
  for (int64_t L : {1, 100, 600, 4096})
    for (int64_t base : {1, 8, 200})
      for (int MT = 1; MT <= 4; ++MT) {
        const M::SplitPlan sp = M::split_plan(base, 132, L, MT);
        plans = plans && sp.KS % M::kBK == 0 && sp.splits >= 1 && sp.splits * sp.KS >= L &&
                (sp.splits - 1) * sp.KS < L;
      }
  CHECK(smem);
  CHECK(splits_ok);
  CHECK(copies_ok);
  CHECK(plans);
}

template <int MT>
void check_roles() {
  constexpr int HG = M::Tiling<MT>::HG, NP = M::Tiling<MT>::NP;
  bool ok = true;
  // scores: each k-step of each m-tile in one part
  for (int nks : {3, 10, 36, 80}) {
    std::vector<int> steps(size_t(MT * nks), 0);
    for (int w = 0; w < M::kNW; ++w)
      for (int ks = M::kstep<MT>(M::score_part<MT>(w), nks);
           M::score_warp<MT>(w) && ks < M::kstep<MT>(M::score_part<MT>(w) + 1, nks); ++ks)
        ok = ok && ks >= 0 && ks < nks && bump(steps, M::score_mtile<MT>(w) * nks + ks);
    ok = ok && all_once(steps);
  }
  // the slab of warp (m-tile, part) holds (head, key) where the softmax of that head reads
  // that part; every head in one softmax row
  std::vector<int> slab(size_t(M::kNW * 16 * M::kSPS), -1), rows(size_t(HG), 0);
  for (int w = 0; w < M::kNW; ++w)
    for (int lane = 0; M::score_warp<MT>(w) && lane < 32; ++lane)
      for (int nt = 0; nt < 4; ++nt)
        for (int e = 0; e < 4; ++e) {
          const int head = M::score_mtile<MT>(w) * 16 + (lane >> 2) + 8 * (e / 2);
          const int at = M::score_off(w, lane, nt, e / 2) + e % 2;
          ok = ok && at >= 0 && size_t(at) < slab.size();
          if (ok) slab[size_t(at)] = (head * 32 + nt * 8 + 2 * (lane & 3) + e % 2) * NP +
                                     M::score_part<MT>(w);
        }
  for (int w = 0; w < M::kNW; ++w)
    for (int i = 0; i < M::Tiling<MT>::RPW; ++i) {
      const int r = M::softmax_head<MT>(w, i);
      ok = ok && bump(rows, r);
      for (int lane = 0; lane < 32; ++lane)
        for (int pp = 0; pp < NP; ++pp) {
          const int at = M::score_sum_off<MT>(r, pp, lane);
          ok = ok && at >= 0 && size_t(at) < slab.size() &&
               slab[size_t(at)] == (r * 32 + lane) * NP + pp;
        }
    }
  ok = ok && all_once(rows);
  // P V: every (head, column) of a column group from one accumulator element
  for (int R : {128, 512, 640}) {
    const int c0 = R > M::kCols ? M::kCols : 0, ncols = M::group_cols(R, c0);
    std::vector<int> hits(size_t(HG * ncols), 0);
    for (int w = 0; w < M::kNW; ++w)
      for (int lane = 0; lane < 32; ++lane)
        for (int mt = 0; mt < MT; ++mt)
          for (int i = 0; i < M::kCPW; ++i)
            for (int e = 0; M::pv_col(c0, w, i) < R && e < 8; ++e) {
              const int h = M::acc_head(mt, lane, (e & 3) / 2);
              const int c = M::acc_col(M::pv_col(c0, w, i), e / 4, lane) + e % 2;
              ok = ok && h >= 0 && h < HG && c >= c0 && c < c0 + ncols &&
                   bump(hits, int64_t(h) * ncols + c - c0);
            }
    ok = ok && all_once(hits);
  }
  CHECK(ok);
}

TEST_CASE("MLA TC layout: warp roles cover score parts, softmax rows and output columns once") {
  check_roles<1>();
  check_roles<2>();
  check_roles<3>();
  check_roles<4>();
}

// Lengths 1, 7, 31, 32, 33, 100 (one tile, a full one, one key past it, several), rows with a
// bad slot / len among them; heads per block 16 (H 1, 16), 32 (H 20), 48 (H 40), 64 (H 128:
// two groups).
TEST_CASE("MLA TC kernel, emulated on the CPU: heads per block, (R, Dr), one split") {
  std::mt19937 rng(2024);
  const std::vector<int32_t> lens = {1, 7, 31, 32, 33, 100};
  for (const auto& [R, Dr] : std::vector<std::array<int, 2>>{{512, 64}, {128, 32}, {256, 32}})
    for (int H : {1, 16, 20, 40, 128}) {
      if (R == 512 && (H == 16 || H == 20)) continue;   // covered below at other R
      check_case({"one split", H, R, Dr, 3, 100, lens, true, kCapH100, 132}, rng);
    }
}

TEST_CASE("MLA TC kernel, emulated on the CPU: splits and the combine step") {
  std::mt19937 rng(7);
  const std::vector<int32_t> lens = {1, 7, 31, 32, 33, 100};
  // forced 32 / 64 keys per split (4 / 2 splits at L 100; empty splits for short rows)
  check_case({"KS 32", 1, 512, 64, 2, 100, lens, true, kCapH100, 132, 32}, rng);
  check_case({"KS 64", 40, 256, 32, 2, 100, lens, true, kCapH100, 132, 64}, rng);
  check_case({"KS 32", 16, 128, 32, 2, 100, lens, true, kCapH100, 132, 32}, rng);
  // the launcher's choice: 3 splits of 128 keys (MT 2), of 224 keys (MT 4, two groups)
  check_case({"launcher splits", 20, 256, 32, 2, 300, {300, 1, 7, 33, 100, 129, 257}, true,
              kCapH100, 132}, rng);
  check_case({"launcher splits", 128, 512, 64, 2, 600, {600, 1, 33, 257}, false, kCapH100,
              1000}, rng);
  // 35 splits: more splits than combine lanes
  check_case({"KS 32, L 1100", 1, 128, 32, 2, 1100, {1100, 1, 40}, true, kCapH100, 132, 32}, rng);
}

TEST_CASE("MLA TC kernel, emulated on the CPU: column groups, smaller shared memory, Dr 0") {
  std::mt19937 rng(99);
  const std::vector<int32_t> lens = {1, 7, 31, 32, 33, 100};
  // R 640: two column groups (512 + 128 columns), one and several splits
  check_case({"R 640", 20, 640, 64, 2, 100, lens, true, kCapH100, 132}, rng);
  check_case({"R 640 KS 32", 16, 640, 64, 2, 100, lens, true, kCapH100, 132, 32}, rng);
  // R 1024, Dr 256: one m-tile (shared memory), 3 head groups, two stages, two column groups
  check_case({"R 1024", 40, 1024, 256, 2, 70, {1, 33, 70}, true, kCapH100, 132}, rng);
  // A100's 163 KiB: 128 heads in 3 groups of 48 (the last padded), two stages
  check_case({"A100 capacity", 128, 512, 64, 2, 100, {1, 31, 100}, true, kCapA100, 132}, rng);
  // no rope part; the tiny preset's dims; many rows with one split
  check_case({"Dr 0", 16, 128, 0, 2, 70, {1, 33, 70}, true, kCapH100, 132}, rng);
  check_case({"tiny", 4, 32, 16, 2, 100, {100, 1, 17, 50}, true, kCapH100, 132, 32}, rng);
  std::vector<int32_t> many(40);
  for (size_t i = 0; i < many.size(); ++i) many[i] = int32_t(1 + (i * 37) % 64);
  check_case({"many rows", 16, 128, 32, 4, 64, many, true, kCapH100, 132}, rng);
}
