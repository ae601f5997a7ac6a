// GPU vs CPU reference for the absorbed-MLA inference ops (lib/ops/cuda/attention.cpp):
// head_matmul (both weight layouts) and the latent attention (split-K, single split, odd dims,
// wide-dim fallback, bad rows) over an F32 cache (exact kernel) and over a BF16 cache
// (tensor-core kernel, against the reference over the same BF16 cache, also under forced
// launch plans), and set_rows into a BF16 cache (bit-exact). Split from test_ops_attention.cpp.
// Guard bytes are checked after every case.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <utility>

#include "ds/core/error.hpp"
#include "gpu_harness.hpp"
#include "kernels/mla_decode.cuh"
#include "kernels/runtime.cuh"

using namespace ds;
using namespace ds::gpu_test;

TEST_CASE("gpu head_matmul matches the reference") {
  struct C { int64_t N, H, I, O; };
  for (const C c : {C{5, 3, 7, 11}, C{1, 1, 1, 1}, C{33, 16, 128, 512}, C{17, 8, 512, 128}})
    for (bool trans : {false, true}) {
      INFO("N " << c.N << " H " << c.H << " I " << c.I << " O " << c.O << " trans " << trans);
      const Tensor x = rand_f32({c.N, c.H, c.I});
      const Tensor w = trans ? rand_f32({c.H, c.O, c.I}) : rand_f32({c.H, c.I, c.O});
      Tensor y_r = Tensor::empty({c.N, c.H, c.O});
      ops::head_matmul(cpu_ref(), x, w, trans, y_r);
      Arena ar;
      Tensor y = ar.empty(y_r.shape());
      ops::head_matmul(gpu(), ar.upload(x), ar.upload(w), trans, y);
      expect_close(y, y_r, 1e-10, "head_matmul");
      CHECK(ar.check());
    }
}

namespace {

struct MlaCase {
  int64_t N, H, R, Dr, S, L;
};

void mla_case(const MlaCase& c) {
  INFO("N " << c.N << " H " << c.H << " R " << c.R << " Dr " << c.Dr << " S " << c.S << " L "
            << c.L);
  const Tensor q_lat = rand_f32({c.N, c.H, c.R}, -3, 3), q_pe = rand_f32({c.N, c.H, c.Dr}, -3, 3);
  const Tensor ckv = rand_f32({c.S, c.L, c.R}), kpe = rand_f32({c.S, c.L, c.Dr});
  Tensor slot = rand_i32({c.N}, 0, int(c.S) - 1), len = rand_i32({c.N}, 1, int(c.L));
  len.i32()[0] = int(c.L);
  len.i32()[c.N - 1] = 1;
  const float scale = 1.0f / std::sqrt(float(c.R + c.Dr));
  Tensor out_r = Tensor::empty({c.N, c.H, c.R});
  ops::mla_latent_attention(cpu_ref(), q_lat, q_pe, ckv, kpe, slot, len, scale, out_r);
  Arena ar;
  Tensor out = ar.empty(out_r.shape());
  ops::mla_latent_attention(gpu(), ar.upload(q_lat), ar.upload(q_pe), ar.upload(ckv),
                            ar.upload(kpe), ar.upload(slot), ar.upload(len), scale, out);
  expect_close(out, out_r, 1e-10, "mla_latent_attention");
  CHECK(ar.check());
}

}  // namespace

TEST_CASE("gpu mla_latent_attention matches the reference") {
  const MlaCase cases[] = {
      {1, 16, 512, 64, 1, 1},      // one key
      {1, 128, 512, 64, 2, 2048},  // DeepSeek-V3 heads, one sequence: many splits
      {4, 20, 512, 64, 3, 700},    // partial head group
      {5, 3, 37, 7, 3, 50},        // odd dims: 4-byte copies
      {300, 2, 64, 16, 2, 128},    // many rows: one split, direct output
      {3, 4, 600, 36, 2, 100},     // two column groups per thread
      {2, 2, 700, 9, 2, 40},       // wide: fallback kernel
  };
  for (const MlaCase& c : cases) mla_case(c);
}

TEST_CASE("gpu mla_latent_attention zeroes rows with bad slot or len") {
  const int64_t N = 4, H = 3, R = 32, Dr = 8, S = 2, L = 16;
  const Tensor q_lat = rand_f32({N, H, R}), q_pe = rand_f32({N, H, Dr});
  const Tensor ckv = rand_f32({S, L, R}), kpe = rand_f32({S, L, Dr});
  Tensor slot = Tensor::empty({N}, DType::i32), len = Tensor::empty({N}, DType::i32);
  const int32_t sl[] = {1, -1, 2, 0}, ln[] = {5, 3, 4, 0};   // rows 1..3 invalid
  std::copy(sl, sl + N, slot.i32());
  std::copy(ln, ln + N, len.i32());
  Arena ar;
  Tensor out = ar.empty({N, H, R});
  ops::mla_latent_attention(gpu(), ar.upload(q_lat), ar.upload(q_pe), ar.upload(ckv),
                            ar.upload(kpe), ar.upload(slot), ar.upload(len), 0.1f, out);
  const Tensor h = download(out);
  for (int64_t i = H * R; i < N * H * R; ++i) REQUIRE(h.f32()[i] == 0.0f);
  // row 0 is valid: compare it with the reference
  Tensor out_r = Tensor::empty({1, H, R});
  ops::mla_latent_attention(cpu_ref(), q_lat.slice0(0, 1), q_pe.slice0(0, 1), ckv, kpe,
                            slot.slice0(0, 1), len.slice0(0, 1), 0.1f, out_r);
  expect_close(download(out).slice0(0, 1), out_r, 1e-10, "mla row 0");
  CHECK(ar.check());
}

// ---- BF16 latent cache: the tensor-core kernel (kernels/mla_decode_tc.cu) -------------------
namespace {

Tensor to_bf16(const Tensor& x) {
  Tensor t = Tensor::empty(x.shape(), DType::bf16);
  for (int64_t i = 0; i < x.numel(); ++i) t.data<uint16_t>()[i] = f32_to_bf16(x.f32()[i]);
  return t;
}

// Tolerance of the BF16-cache kernel against the reference over the same BF16 cache. Its only
// roundings are q and p to BF16 (RNE: relative error <= 2^-8, RMS ~1.7e-3 for log-uniform
// mantissas) and FP32 sums. The output o = sum_j w_j v_j is a convex combination of cache rows;
// weights perturbed to w_j (1 + e_j) move it by sum_j w_j e_j (v_j - o). P rounding gives e_j
// of RMS ~1.7e-3; q rounding shifts each score by scale * sum_d q_d eps_d k_jd, which with the
// inputs below (q ~ U(-3,3), cache ~ U(-1,1), scale = 1/sqrt(R+Dr): scores ~ N(0, 1)) is also
// ~1.7e-3 RMS. With v independent of the weights, |delta o|^2 / |o|^2 ~ E[e^2] ~ 5e-6 per
// (row, head) whatever the number of keys (1 key: exact). A host emulation of the kernel
// (warp-level PTX emulator, these shapes, 6 seeds) gave per-(row, head) NMSE up to 2.6e-5 and
// whole-output NMSE up to 4.9e-6. Bounds: 2e-4 per (row, head) (1.4% RMS), 3e-5 overall; a
// wrong fragment mapping or a lost tile gives O(1e-2 .. 1).
constexpr double kBf16RowTol = 2e-4, kBf16Tol = 3e-5;

// One batch: valid rows with visible lengths `lens` (slots drawn from [0, S)), and, when `bad`,
// rows with slot -1 / S / INT_MIN or len 0 / L+1 / INT_MAX interleaved (they must come out 0).
void mla_bf16_case(int64_t H, int64_t R, int64_t Dr, int64_t S, int64_t L,
                   const std::vector<int32_t>& lens, bool bad) {
  std::vector<int32_t> slot, len;
  std::vector<bool> valid;
  const int32_t bad_slot[] = {-1, int32_t(S), INT_MIN, 0, 0, 0};
  const int32_t bad_len[] = {5, 5, 3, 0, int32_t(L + 1), INT_MAX};
  std::uniform_int_distribution<int> pick(0, int(S) - 1);
  for (size_t i = 0; i < lens.size(); ++i) {
    slot.push_back(pick(rng()));
    len.push_back(lens[i]);
    valid.push_back(true);
    if (bad && i < 6) {
      slot.push_back(bad_slot[i]);
      len.push_back(bad_len[i]);
      valid.push_back(false);
    }
  }
  const int64_t N = int64_t(slot.size());
  INFO("BF16 cache: N " << N << " H " << H << " R " << R << " Dr " << Dr << " S " << S << " L "
                        << L);
  const Tensor q_lat = rand_f32({N, H, R}, -3, 3), q_pe = rand_f32({N, H, Dr}, -3, 3);
  const Tensor ckv = to_bf16(rand_f32({S, L, R})), kpe = to_bf16(rand_f32({S, L, Dr}));
  const float scale = 1.0f / std::sqrt(float(R + Dr));
  // reference over the same BF16 cache; bad rows replaced by (slot 0, len 1) there
  Tensor slot_h = Tensor::empty({N}, DType::i32), len_h = Tensor::empty({N}, DType::i32);
  Tensor slot_r = Tensor::empty({N}, DType::i32), len_r = Tensor::empty({N}, DType::i32);
  for (int64_t n = 0; n < N; ++n) {
    slot_h.i32()[n] = slot[size_t(n)];
    len_h.i32()[n] = len[size_t(n)];
    slot_r.i32()[n] = valid[size_t(n)] ? slot[size_t(n)] : 0;
    len_r.i32()[n] = valid[size_t(n)] ? len[size_t(n)] : 1;
  }
  Tensor out_r = Tensor::empty({N, H, R});
  ops::mla_latent_attention(cpu_ref(), q_lat, q_pe, ckv, kpe, slot_r, len_r, scale, out_r);
  Arena ar;
  Tensor out = ar.empty({N, H, R});
  ops::mla_latent_attention(gpu(), ar.upload(q_lat), ar.upload(q_pe), ar.upload(ckv),
                            ar.upload(kpe), ar.upload(slot_h), ar.upload(len_h), scale, out);
  const Tensor got = download(out);
  double num = 0, den = 0, worst = 0;
  int64_t nonfinite = 0, bad_nonzero = 0, rows_over = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const float* g = got.f32() + (n * H + h) * R;
      const float* w = out_r.f32() + (n * H + h) * R;
      double rn = 0, rd = 0;
      for (int64_t r = 0; r < R; ++r) {
        if (!std::isfinite(g[r])) ++nonfinite;
        if (!valid[size_t(n)]) {
          bad_nonzero += g[r] != 0.0f;
          continue;
        }
        rn += (double(g[r]) - w[r]) * (double(g[r]) - w[r]);
        rd += double(w[r]) * w[r];
      }
      if (!valid[size_t(n)]) continue;
      num += rn;
      den += rd;
      const double row = rd > 0 ? rn / rd : rn;
      worst = std::max(worst, row);
      rows_over += row > kBf16RowTol;
    }
  MESSAGE("BF16-cache MLA H " << H << " R " << R << " Dr " << Dr << ": nmse " << num / den
                              << ", worst (row, head) nmse " << worst);
  CHECK(nonfinite == 0);
  CHECK(bad_nonzero == 0);
  CHECK(rows_over == 0);
  CHECK(num / den <= kBf16Tol);
  CHECK(ar.check());
}

// Byte-exact comparison of a BF16 (or any) tensor with the CPU's.
void expect_same_bytes(const Tensor& got_any, const Tensor& want, const char* what) {
  const Tensor got = got_any.device() == Device::cpu ? got_any : download(got_any);
  REQUIRE(got.nbytes() == want.nbytes());
  const auto* a = static_cast<const uint8_t*>(got.data<uint8_t>());
  const auto* b = static_cast<const uint8_t*>(want.data<uint8_t>());
  size_t diff = 0;
  for (size_t i = 0; i < got.nbytes(); ++i) diff += a[i] != b[i];
  INFO(what << ": " << diff << " bytes differ of " << got.nbytes());
  CHECK(diff == 0);
}

}  // namespace

TEST_CASE("gpu mla_latent_attention over a BF16 cache (tensor cores) matches the reference") {
  const std::vector<int32_t> lens = {1, 7, 63, 64, 65, 1000, 4096};
  struct Dims { int64_t R, Dr; };
  for (const Dims d : {Dims{512, 64}, Dims{128, 32}, Dims{256, 32}})
    for (int64_t H : {1, 16, 128}) mla_bf16_case(H, d.R, d.Dr, 3, 4096, lens, true);
  // 3 m-tiles per CTA; two 512-column groups; the tiny preset's dims; many rows (one split,
  // direct output) with bad rows among them
  mla_bf16_case(40, 256, 32, 2, 300, {300, 1, 31, 32, 33, 299}, true);
  mla_bf16_case(20, 640, 64, 2, 700, {700, 5, 64, 129}, true);
  mla_bf16_case(4, 32, 16, 2, 100, {100, 1, 17, 50}, true);
  std::vector<int32_t> many(200);
  for (size_t i = 0; i < many.size(); ++i) many[i] = int32_t(1 + (i * 37) % 256);
  mla_bf16_case(16, 512, 64, 4, 256, many, true);
  mla_bf16_case(128, 512, 64, 2, 96, std::vector<int32_t>(80, 96), false);
}

// The launch plans a benchmark can force (set_mla_bf16_plan): every ring depth and several
// splits per row give the reference's numbers, and the plan is the one asked for.
TEST_CASE("gpu mla_latent_attention over a BF16 cache: forced ring depths and splits") {
  const bool wgmma_was = ds::cuda::mla_wgmma();
  ds::cuda::set_mla_wgmma(false);   // the plans are the mma.sync kernel's
  for (int stages : {2, 3, 4})
    for (int splits : {1, 3, 8}) {
      ds::cuda::set_mla_bf16_plan(stages, splits);
      mla_bf16_case(16, 512, 64, 3, 1000, {1, 63, 64, 65, 1000}, false);
      const ds::cuda::MlaPlan p = ds::cuda::mla_bf16_last_plan();
      CHECK(p.stages == stages);   // 16 heads: every depth fits
      CHECK(p.splits == splits);   // 1000 keys: 1000, 352 or 128 a split
    }
  ds::cuda::set_mla_bf16_plan(0, 0);
  ds::cuda::set_mla_wgmma(wgmma_was);
}

TEST_CASE("gpu mla_latent_attention: a BF16 cache with one visible key returns that row") {
  // p = 1 exactly, so the output is the BF16 row widened, whatever q.
  const int64_t N = 3, H = 16, R = 128, Dr = 32, S = 2, L = 64;
  const Tensor q_lat = rand_f32({N, H, R}, -3, 3), q_pe = rand_f32({N, H, Dr}, -3, 3);
  const Tensor ckv = to_bf16(rand_f32({S, L, R})), kpe = to_bf16(rand_f32({S, L, Dr}));
  Tensor slot = Tensor::empty({N}, DType::i32), len = Tensor::empty({N}, DType::i32);
  const int32_t sl[] = {1, 0, 1};
  for (int64_t n = 0; n < N; ++n) { slot.i32()[n] = sl[n]; len.i32()[n] = 1; }
  Arena ar;
  Tensor out = ar.empty({N, H, R});
  ops::mla_latent_attention(gpu(), ar.upload(q_lat), ar.upload(q_pe), ar.upload(ckv),
                            ar.upload(kpe), ar.upload(slot), ar.upload(len), 0.3f, out);
  const Tensor got = download(out);
  int64_t wrong = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t r = 0; r < R; ++r)
        wrong += got.f32()[(n * H + h) * R + r] !=
                 bf16_to_f32(ckv.data<uint16_t>()[int64_t(sl[n]) * L * R + r]);
  CHECK(wrong == 0);
  CHECK(ar.check());
}

TEST_CASE("gpu mla_latent_attention rejects BF16 caches the kernel cannot take") {
  Arena ar;
  const Tensor q_lat = ar.zeros({1, 2, 40}), q_pe = ar.zeros({1, 2, 8});
  const Tensor ckv = ar.zeros({1, 4, 40}, DType::bf16), kpe = ar.zeros({1, 4, 8}, DType::bf16);
  const Tensor slot = ar.zeros({1}, DType::i32), len = ar.zeros({1}, DType::i32);
  Tensor out = ar.empty({1, 2, 40});
  CHECK_THROWS_WITH_AS(
      ops::mla_latent_attention(gpu(), q_lat, q_pe, ckv, kpe, slot, len, 0.1f, out),
      doctest::Contains("needs R and Dr multiples of 16"), InternalError);
  CHECK(ar.check());
}

TEST_CASE("gpu set_rows into a BF16 cache is bit-exact") {
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t C : {576, 7, 64}) {   // vector paths, scalar path
    INFO("C " << C);
    const int64_t M = 5, Nd = 9;
    Tensor src = rand_f32({M, C}, -100, 100);
    // rounding ties both ways, specials, a subnormal
    const float special[] = {1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8), inf,
                             -inf, std::numeric_limits<float>::quiet_NaN(), 1.0e-40f, -0.0f};
    for (int i = 0; i < 7; ++i) src.f32()[i * 3 % (M * C)] = special[i];
    Tensor rows = Tensor::empty({M}, DType::i32);
    const int32_t rv[] = {8, 0, 3, 5, 1};
    std::copy(rv, rv + M, rows.i32());
    Tensor init = to_bf16(rand_f32({Nd, C}));
    // F32 -> BF16
    Tensor want = init.clone();
    ops::set_rows(cpu_ref(), src, rows, want);
    Arena ar;
    Tensor gdst = ar.upload(init);
    ops::set_rows(gpu(), ar.upload(src), ar.upload(rows), gdst);
    expect_same_bytes(gdst, want, "set_rows F32 -> BF16");
    // BF16 -> BF16
    const Tensor bsrc = to_bf16(rand_f32({M, C}));
    Tensor want_b = init.clone();
    ops::set_rows(cpu_ref(), bsrc, rows, want_b);
    Tensor gdst_b = ar.upload(init);
    ops::set_rows(gpu(), ar.upload(bsrc), ar.upload(rows), gdst_b);
    expect_same_bytes(gdst_b, want_b, "set_rows BF16 -> BF16");
    // bad rows are skipped on the GPU (the CPU rejects them): expected = the valid writes
    const int32_t bv[] = {-1, 2, INT_MIN, int32_t(Nd), INT_MAX};
    Tensor brows = Tensor::empty({M}, DType::i32);
    std::copy(bv, bv + M, brows.i32());
    Tensor want_s = init.clone(), row2 = Tensor::empty({1}, DType::i32);
    row2.i32()[0] = 2;
    ops::set_rows(cpu_ref(), src.slice0(1, 2), row2, want_s);
    Tensor gdst_s = ar.upload(init);
    ops::set_rows(gpu(), ar.upload(src), ar.upload(brows), gdst_s);
    expect_same_bytes(gdst_s, want_s, "set_rows F32 -> BF16 with bad rows");
    CHECK(ar.check());
  }
}

// The wgmma kernel over a BF16 cache (opt-in, DS_MLA_KERNEL=wgmma; R 512 + Dr 64 only):
// against the same reference as the mma.sync kernel, with padded head groups (70, 16 heads),
// splits, tile-crossing lengths, bad rows, and many rows with one split. (scripts/gpu-check.sh
// runs it in a process of its own, group ops-mla-wgmma, until it has run on a GPU.)
TEST_CASE("gpu mla wgmma kernel (opt-in): the latent attention matches the reference") {
  if (!ds::cuda::mla_wgmma_supported(128, 512, 64)) {
    MESSAGE("skipped: not an sm_90a device");
    return;
  }
  const bool was = ds::cuda::mla_wgmma();
  ds::cuda::set_mla_wgmma(true);
  const int64_t before = ds::cuda::mla_wgmma_launches();
  const std::vector<int32_t> lens = {1, 7, 63, 64, 65, 1000, 4096};
  for (int64_t H : {128, 64, 70}) mla_bf16_case(H, 512, 64, 3, 4096, lens, true);
  mla_bf16_case(128, 512, 64, 2, 96, std::vector<int32_t>(80, 96), true);   // one split
  mla_bf16_case(16, 512, 64, 3, 300, {300, 1}, true);   // 16 heads: the mma.sync kernel
  mla_bf16_case(64, 128, 32, 2, 100, {100, 1}, true);   // other dims: likewise
  ds::cuda::set_mla_wgmma(was);
  CHECK(ds::cuda::mla_wgmma_launches() - before == 4);
}
