// Grouped GEMMs on the GPU against the CPU: forward (trans_w) and input-gradient layouts, beta
// accumulation, weight gradients, F32 exact and BF16 operands, with empty groups and odd
// sizes, through ops::grouped_matmul(_wgrad) against the CPU loop of matmuls; every case under
// both BF16 implementations (GroupedGemmImpl: cuBLAS, and our kernel of
// kernels/gemm_grouped_bf16.cu); the opt-in wgmma kernel (kernels/gemm_grouped_sm90.cu) in
// cases of its own ("gpu wgmma grouped*", gpu-check group ops-grouped-wgmma). Cases aimed at
// the kernel: K not a multiple of 32 (weight
// gradients over 1, 7, 33, 130 tokens), M and N not multiples of 128, groups of several
// tiles, 64 groups at the 1b preset's expert shapes; direct grouped_gemm_rm calls for all
// four transpose layouts with alpha/beta (CPU reference in double, sentinel gaps between the
// groups' c blocks checked bit-exact), and unaligned shapes/pointers that must take the cuBLAS
// fallback. Guard bytes checked.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <utility>
#include <vector>

#include "gpu_harness.hpp"
#include "kernels/gemm_grouped.cuh"

namespace {

using namespace ds;
using namespace ds::gpu_test;
using ds::cuda::GroupedGemmImpl;

constexpr GroupedGemmImpl kImpls[] = {GroupedGemmImpl::cublas, GroupedGemmImpl::kernel};

const char* impl_name(GroupedGemmImpl i) {
  return i == GroupedGemmImpl::kernel ? "kernel" : i == GroupedGemmImpl::wgmma ? "wgmma" : "cublas";
}

// Selects a grouped-GEMM implementation for a scope, then restores the previous one (our kernel
// unless DS_GROUPED_GEMM says otherwise).
class ImplScope {
 public:
  explicit ImplScope(GroupedGemmImpl i) : prev_(ds::cuda::grouped_gemm_impl()) {
    ds::cuda::set_grouped_gemm_impl(i);
  }
  ~ImplScope() { ds::cuda::set_grouped_gemm_impl(prev_); }
  ImplScope(const ImplScope&) = delete;
  ImplScope& operator=(const ImplScope&) = delete;

 private:
  GroupedGemmImpl prev_;
};

// Rows per group, some empty.
std::vector<int64_t> offsets_of(const std::vector<int64_t>& rows) {
  std::vector<int64_t> o{0};
  for (int64_t r : rows) o.push_back(o.back() + r);
  return o;
}

Tensor rounded(const Tensor& x) {   // BF16 values of a CPU F32 tensor
  Tensor r = Tensor::empty(x.shape());
  ops::bf16_round(cpu_ref(), x, r);
  return r;
}

// GPU copy of a CPU F32 tensor, as BF16 codes when bf16 (the values are BF16 already).
Tensor to_gpu(Arena& ar, const Tensor& x, bool bf16) {
  Tensor g = ar.upload(x);
  if (!bf16) return g;
  Tensor b = ar.empty(x.shape(), DType::bf16);
  ops::bf16_round(gpu(), g, b);
  return b;
}

// grouped_matmul and grouped_matmul_wgrad on the GPU under each implementation against the
// CPU reference (computed once). F32 operands take cuBLAS under both.
void run_case(const std::vector<int64_t>& rows, int64_t K, int64_t N, bool trans_w, bool bf16,
              float beta,
              const std::vector<GroupedGemmImpl>& impls = {std::begin(kImpls), std::end(kImpls)}) {
  CAPTURE(K);
  CAPTURE(N);
  CAPTURE(trans_w);
  CAPTURE(bf16);
  CAPTURE(beta);
  const std::vector<int64_t> off = offsets_of(rows);
  const int64_t M = off.back();
  Tensor x = rand_f32({M, K});
  if (bf16) x = rounded(x);
  std::vector<Tensor> w_cpu;
  for (size_t g = 0; g < rows.size(); ++g) {
    Tensor w = rand_f32(trans_w ? Shape{N, K} : Shape{K, N});
    w_cpu.push_back(bf16 ? rounded(w) : w);
  }
  const Tensor y0 = rand_f32({M, N});
  Tensor y_cpu = y0.clone();
  ops::grouped_matmul(cpu_ref(), x, w_cpu, trans_w, off, y_cpu, beta);
  // weight gradients: dw[g] += dy[rows_g]^T x[rows_g], dw (N, K) from nonzero values
  Tensor dy = rand_f32({M, N});
  if (bf16) dy = rounded(dy);
  std::vector<Tensor> dw0, dw_cpu;
  for (size_t g = 0; g < rows.size(); ++g) {
    dw0.push_back(rand_f32({N, K}));
    dw_cpu.push_back(dw0.back().clone());
  }
  ops::grouped_matmul_wgrad(cpu_ref(), dy, x, off, dw_cpu);

  for (GroupedGemmImpl impl : impls) {
    CAPTURE(impl_name(impl));
    const ImplScope scope(impl);
    Arena ar;
    const Tensor xg = to_gpu(ar, x, bf16);
    std::vector<Tensor> w_gpu;
    for (const Tensor& w : w_cpu) w_gpu.push_back(to_gpu(ar, w, bf16));
    Tensor y_gpu = beta != 0 ? ar.upload(y0) : ar.empty({M, N});
    ops::grouped_matmul(gpu(), xg, w_gpu, trans_w, off, y_gpu, beta);
    expect_close(y_gpu, y_cpu, bf16 ? 1e-9 : 1e-10, "grouped_matmul y");
    std::vector<Tensor> dw_gpu;
    for (const Tensor& d0 : dw0) dw_gpu.push_back(ar.upload(d0));
    const Tensor dyg = to_gpu(ar, dy, bf16);
    ops::grouped_matmul_wgrad(gpu(), dyg, xg, off, dw_gpu);
    for (size_t g = 0; g < rows.size(); ++g)
      expect_close(dw_gpu[g], dw_cpu[g], 1e-9, "grouped dw");
    CHECK(ar.check());
  }
}

// ---- direct grouped_gemm_rm calls -------------------------------------------------------------

struct Prod {
  int64_t M, N, K;
};

constexpr int64_t kGap = 8;              // sentinel floats before, between and after c blocks
constexpr float kSentinel = 777.0f;

int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }

// One grouped_gemm_rm call over the products ps with layout (ta, tb): the groups' a, b and c
// blocks packed back to back in one buffer each (a and b blocks at multiples of 8 elements
// plus `shift`, so shift 1 misaligns every operand pointer), c blocks separated by sentinel
// gaps. Reference in double from the same BF16 values: c = alpha * op(a) op(b) + beta * c0,
// c0 NaN when beta is 0 (must not be read). Runs under impl.
void run_direct(const std::vector<Prod>& ps, bool ta, bool tb, float alpha, float beta,
                int64_t shift, GroupedGemmImpl impl) {
  CAPTURE(ta);
  CAPTURE(tb);
  CAPTURE(alpha);
  CAPTURE(beta);
  CAPTURE(shift);
  CAPTURE(impl_name(impl));
  const size_t G = ps.size();
  std::vector<int64_t> oa(G), ob(G), oc(G);
  int64_t na = shift, nb = shift, nc = kGap;
  for (size_t g = 0; g < G; ++g) {
    oa[g] = na;
    ob[g] = nb;
    oc[g] = nc;
    na += round8(ps[g].M * ps[g].K);
    nb += round8(ps[g].K * ps[g].N);
    nc += round8(ps[g].M * ps[g].N) + kGap;
  }
  // Operands: random BF16 codes and their values.
  Tensor a = Tensor::empty({na + 1}, DType::bf16), b = Tensor::empty({nb + 1}, DType::bf16);
  std::vector<float> av(size_t(na + 1)), bv(size_t(nb + 1));
  const Tensor ra = rand_f32({na + 1}), rb = rand_f32({nb + 1});
  for (int64_t i = 0; i <= na; ++i) {
    a.data<uint16_t>()[i] = f32_to_bf16(ra.f32()[i]);
    av[size_t(i)] = bf16_to_f32(a.data<uint16_t>()[i]);
  }
  for (int64_t i = 0; i <= nb; ++i) {
    b.data<uint16_t>()[i] = f32_to_bf16(rb.f32()[i]);
    bv[size_t(i)] = bf16_to_f32(b.data<uint16_t>()[i]);
  }
  // c0: sentinel everywhere, then each block random (beta != 0) or NaN (beta == 0).
  Tensor c0 = Tensor::empty({nc});
  for (int64_t i = 0; i < nc; ++i) c0.f32()[i] = kSentinel;
  const Tensor cr = rand_f32({nc});
  std::vector<char> in_block(size_t(nc), 0);
  for (size_t g = 0; g < G; ++g)
    for (int64_t i = 0; i < ps[g].M * ps[g].N; ++i) {
      const int64_t p = oc[g] + i;
      c0.f32()[p] = beta != 0 ? cr.f32()[p] : NAN;
      in_block[size_t(p)] = 1;
    }
  // Reference per group, A(i, k) and B(k, j) read through the stored layouts.
  std::vector<Tensor> want(G);
  for (size_t g = 0; g < G; ++g) {
    const Prod& q = ps[g];
    want[g] = Tensor::empty({q.M, q.N});
    const float* A = av.data() + oa[g];
    const float* B = bv.data() + ob[g];
    for (int64_t i = 0; i < q.M; ++i)
      for (int64_t j = 0; j < q.N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < q.K; ++k)
          s += double(ta ? A[k * q.M + i] : A[i * q.K + k]) *
               double(tb ? B[j * q.K + k] : B[k * q.N + j]);
        double v = double(alpha) * s;
        if (beta != 0) v += double(beta) * double(c0.f32()[oc[g] + i * q.N + j]);
        want[g].f32()[i * q.N + j] = float(v);
      }
  }

  const ImplScope scope(impl);
  Arena ar;
  Tensor ag = ar.upload(a), bg = ar.upload(b), cg = ar.upload(c0);
  std::vector<ds::cuda::GemmDesc> d(G);
  for (size_t g = 0; g < G; ++g) {
    d[g].a = ag.data<uint16_t>() + oa[g];
    d[g].b = bg.data<uint16_t>() + ob[g];
    d[g].c = cg.data<float>() + oc[g];
    d[g].M = ps[g].M;
    d[g].N = ps[g].N;
    d[g].K = ps[g].K;
  }
  ds::cuda::grouped_gemm_rm(d.data(), int(G), ta, tb, true, alpha, beta);
  const Tensor got = download(cg);
  for (size_t g = 0; g < G; ++g) {
    CAPTURE(g);
    CAPTURE(ps[g].M);
    CAPTURE(ps[g].N);
    CAPTURE(ps[g].K);
    Tensor gg = Tensor::empty({ps[g].M, ps[g].N});
    if (gg.numel() > 0)
      std::memcpy(gg.f32(), got.f32() + oc[g], size_t(gg.numel()) * sizeof(float));
    expect_close(gg, want[g], 1e-9, "grouped_gemm_rm c");
  }
  int64_t gaps_changed = 0;   // bit-exact: no write outside the c blocks
  for (int64_t i = 0; i < nc; ++i)
    if (!in_block[size_t(i)] && std::memcmp(got.f32() + i, &kSentinel, sizeof(float)) != 0)
      ++gaps_changed;
  CHECK(gaps_changed == 0);
  CHECK(ar.check());
}

// Products that fit the kernel in every layout (M, N multiples of 8; K a multiple of 8 unless
// it is the strided dimension of both operands: ta && !tb, where odd token counts are used),
// plus empty and K = 0 products when beta is nonzero (those give beta * c0).
std::vector<Prod> kernel_products(bool ta, bool tb, bool with_k0) {
  const bool any_k = ta && !tb;
  std::vector<Prod> p = {{136, 264, 72},                 // 2 x 3 tiles, K = 2 slices + 8
                         {8, 8, any_k ? 7 : 8},          // tiny
                         {256, 128, any_k ? 33 : 40},    // exact tile multiples in M and N
                         {0, 16, 16},                    // skipped
                         {200, 40, any_k ? 130 : 96},
                         {136, 72, any_k ? 521 : 520},   // 17 slices: the pipeline wraps
                         {16, 0, 8},                     // skipped
                         {64, 136, any_k ? 1 : 8}};
  if (with_k0) p.push_back({64, 136, 0});   // beta * c0
  return p;
}

}  // namespace

// Runs fn and checks that it launched our kernel at least once (calls it must take).
template <class F>
void expect_kernel(F&& fn) {
  const int64_t before = ds::cuda::grouped_gemm_kernel_launches();
  fn();
  CHECK(ds::cuda::grouped_gemm_kernel_launches() > before);
}

// Calls the kernel cannot take must go to cuBLAS (and be right) even when it is selected.
TEST_CASE("gpu grouped GEMM: shapes and pointers the kernel does not take use cuBLAS") {
  const int64_t launches_before = ds::cuda::grouped_gemm_kernel_launches();
  // K not a multiple of 8 where K is contiguous; N odd; misaligned operand pointers.
  run_direct({{40, 10, 12}, {17, 10, 20}}, false, true, 1.0f, 0.0f, 0, GroupedGemmImpl::kernel);
  run_direct({{40, 9, 16}, {24, 9, 16}}, false, false, 1.0f, 1.0f, 0, GroupedGemmImpl::kernel);
  run_direct({{40, 16, 16}, {24, 8, 32}}, false, true, 0.5f, -1.25f, 1, GroupedGemmImpl::kernel);
  run_direct({{12, 16, 33}, {4, 16, 7}}, true, false, 1.0f, 1.0f, 0, GroupedGemmImpl::kernel);
  run_case({5, 3, 2}, 17, 9, true, true, 0.0f);   // the grouped_matmul path
  CHECK(ds::cuda::grouped_gemm_kernel_launches() == launches_before);
}

TEST_CASE("gpu grouped_matmul / grouped_matmul_wgrad against the CPU loop") {
  const std::vector<int64_t> rows = {5, 0, 130, 1, 0, 64, 33};
  for (bool bf16 : {false, true})
    for (bool trans_w : {true, false}) {
      if (bf16) expect_kernel([&] { run_case(rows, 48, 40, trans_w, bf16, 0.0f); });  // fits
      else run_case(rows, 48, 40, trans_w, bf16, 0.0f);
      run_case(rows, 17, 9, trans_w, bf16, 1.0f);
    }
  expect_kernel([] { run_case({300, 257, 0, 128}, 256, 384, true, true, 0.0f); });  // MoE-like
  run_case({0, 0, 0}, 8, 8, true, false, 0.0f);               // no rows at all
  std::printf("grouped GEMM: cuBLAS grouped entry point %s\n",
              ds::cuda::grouped_gemm_native() ? "used" : "rejected (per-product fallback)");
}

TEST_CASE("gpu grouped BF16 GEMM kernel shapes: odd K, partial tiles, 64 experts") {
  // Weight gradients over 1, 7, 33, 130 and 0 tokens (K of the wgrad products), N 136.
  for (bool trans_w : {true, false}) {
    expect_kernel([&] { run_case({1, 7, 33, 130, 0}, 64, 136, trans_w, true, 0.0f); });
    expect_kernel([&] { run_case({1, 7, 33, 130, 0}, 64, 136, trans_w, true, 1.0f); });
  }
  // M and N not multiples of 128, several tiles per group, K 136 (4 slices + 8).
  expect_kernel([] { run_case({300, 257, 0, 128, 5}, 136, 264, true, true, 1.0f); });
  expect_kernel([] { run_case({300, 257, 0, 128, 5}, 264, 136, false, true, 0.0f); });
  // 64 groups as in the 1b preset (dim 1024, expert width 384), fewer rows: forward
  // (K 1024, N 384) with the (384, 1024) weight gradients, and the input-gradient layout
  // (K 384, N 1024) accumulating, with the (1024, 384) weight gradients.
  std::vector<int64_t> rows64(64);
  std::uniform_int_distribution<int64_t> count(0, 80);
  for (int64_t& r : rows64) r = count(rng());
  rows64[3] = 0;
  rows64[40] = 0;
  rows64[63] = 1;
  expect_kernel([&] { run_case(rows64, 1024, 384, true, true, 0.0f); });
  expect_kernel([&] { run_case(rows64, 384, 1024, false, true, 1.0f); });
}

TEST_CASE("gpu grouped_gemm_rm BF16: all four layouts, alpha and beta, both implementations") {
  const std::pair<float, float> coefs[] = {{1.0f, 0.0f}, {0.5f, -1.25f}, {2.0f, 1.0f}};
  for (int tr = 0; tr < 4; ++tr)
    for (auto [alpha, beta] : coefs)
      for (GroupedGemmImpl impl : kImpls) {
        const bool ta = tr & 1, tb = tr & 2;
        if (impl == GroupedGemmImpl::kernel)
          expect_kernel([&] {
            run_direct(kernel_products(ta, tb, beta != 0), ta, tb, alpha, beta, 0, impl);
          });
        else
          run_direct(kernel_products(ta, tb, beta != 0), ta, tb, alpha, beta, 0, impl);
      }
}

// The cuBLAS path's per-product calls spread over side streams: the same bits as one stream
// (each product is the same call on an identically set up handle and owns its c), at the 1b
// preset's expert shapes in the forward, input-gradient and weight-gradient layouts, and
// against the CPU through run_case.
TEST_CASE("gpu grouped GEMM cuBLAS per product: side streams == one stream, bit for bit") {
  const ImplScope scope(GroupedGemmImpl::cublas);
  const int prev = ds::cuda::grouped_gemm_streams();
  std::vector<int64_t> rows(64);
  std::uniform_int_distribution<int64_t> count(0, 96);
  for (int64_t& r : rows) r = count(rng());
  rows[5] = 0;
  const std::vector<int64_t> off = offsets_of(rows);
  const int64_t M = off.back(), C = 1024, I = 384;
  const Tensor x = rounded(rand_f32({M, C})), dy = rounded(rand_f32({M, I}));
  std::vector<Tensor> w;
  for (size_t g = 0; g < rows.size(); ++g) w.push_back(rounded(rand_f32({I, C})));
  const Tensor y0 = rand_f32({M, C});
  std::vector<Tensor> got[3];   // per stream count: y (forward), dx (accumulating), dw...
  const int counts[3] = {1, 4, 3};
  const int64_t side_before = ds::cuda::grouped_gemm_side_products();
  for (int r = 0; r < 3; ++r) {
    CAPTURE(counts[r]);
    ds::cuda::set_grouped_gemm_streams(counts[r]);
    Arena ar;
    const Tensor xg = to_gpu(ar, x, true), dyg = to_gpu(ar, dy, true);
    std::vector<Tensor> wg;
    for (const Tensor& t : w) wg.push_back(to_gpu(ar, t, true));
    Tensor y = ar.empty({M, I});
    ops::grouped_matmul(gpu(), xg, wg, true, off, y, 0.0f);
    Tensor dx = ar.upload(y0);
    ops::grouped_matmul(gpu(), dyg, wg, false, off, dx, 1.0f);
    std::vector<Tensor> dw;
    for (size_t g = 0; g < rows.size(); ++g) dw.push_back(ar.upload(Tensor::zeros({I, C})));
    ops::grouped_matmul_wgrad(gpu(), dyg, xg, off, dw);
    got[r].push_back(download(y));
    got[r].push_back(download(dx));
    for (const Tensor& t : dw) got[r].push_back(download(t));
    CHECK(ar.check());
  }
  ds::cuda::set_grouped_gemm_streams(prev);
  for (int r = 1; r < 3; ++r)
    for (size_t i = 0; i < got[0].size(); ++i) {
      CAPTURE(counts[r]);
      CAPTURE(i);
      CHECK(std::memcmp(got[r][i].raw(), got[0][i].raw(), got[0][i].nbytes()) == 0);
    }
  // (BF16 operands: the F32 cases before may have used the grouped entry point)
  if (ds::cuda::grouped_gemm_native(true))
    MESSAGE("cuBLAS's grouped entry point took these calls: no per-product side streams");
  else
    CHECK(ds::cuda::grouped_gemm_side_products() > side_before);
  run_case(rows, C, I, true, true, 0.0f);   // and right, under the default stream count
}

// The opt-in warpgroup-MMA kernel (GroupedGemmImpl::wgmma, kernels/gemm_grouped_sm90.cu; not
// yet run on a GPU): the same direct calls in all four layouts and the same grouped_matmul /
// wgrad cases, each against the reference, checking that the kernel launched (where the
// sm_90a build runs; elsewhere wgmma runs the mma.sync kernel), and the calls it does not take
// still on cuBLAS.
template <class F>
void expect_wgmma(F&& fn) {
  const int64_t before = ds::cuda::grouped_gemm_wgmma_launches();
  fn();
  if (ds::cuda::grouped_gemm_wgmma_available())
    CHECK(ds::cuda::grouped_gemm_wgmma_launches() > before);
}

TEST_CASE("gpu wgmma grouped GEMM (opt-in): four layouts, odd shapes, 64 experts") {
  if (!ds::cuda::grouped_gemm_wgmma_available())
    MESSAGE("no sm_90a build loaded: GroupedGemmImpl::wgmma runs the mma.sync kernel here");
  constexpr GroupedGemmImpl W = GroupedGemmImpl::wgmma;
  const std::pair<float, float> coefs[] = {{1.0f, 0.0f}, {0.5f, -1.25f}, {2.0f, 1.0f}};
  for (int tr = 0; tr < 4; ++tr)
    for (auto [alpha, beta] : coefs) {
      const bool ta = tr & 1, tb = tr & 2;
      expect_wgmma([&] {
        run_direct(kernel_products(ta, tb, beta != 0), ta, tb, alpha, beta, 0, W);
      });
    }
  const int64_t before = ds::cuda::grouped_gemm_wgmma_launches();
  run_direct({{40, 16, 16}, {24, 8, 32}}, false, true, 0.5f, -1.25f, 1, W);   // misaligned
  run_direct({{40, 9, 16}, {24, 9, 16}}, false, false, 1.0f, 1.0f, 0, W);     // N odd
  CHECK(ds::cuda::grouped_gemm_wgmma_launches() == before);
  const std::vector<GroupedGemmImpl> w = {W};
  for (bool trans_w : {true, false})
    for (float beta : {0.0f, 1.0f})
      expect_wgmma([&] { run_case({1, 7, 33, 130, 0}, 64, 136, trans_w, true, beta, w); });
  expect_wgmma([&] { run_case({300, 257, 0, 128, 5}, 136, 264, true, true, 1.0f, w); });
  expect_wgmma([&] { run_case({300, 257, 0, 128, 5}, 264, 136, false, true, 0.0f, w); });
  std::vector<int64_t> rows64(64);   // the 1b preset's experts, as the mma.sync case above
  std::uniform_int_distribution<int64_t> count(0, 80);
  for (int64_t& r : rows64) r = count(rng());
  rows64[3] = 0;
  rows64[63] = 1;
  expect_wgmma([&] { run_case(rows64, 1024, 384, true, true, 0.0f, w); });
  expect_wgmma([&] { run_case(rows64, 384, 1024, false, true, 1.0f, w); });
}
