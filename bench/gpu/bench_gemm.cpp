// GEMM throughput on the GPU at DeepSeek-V3's projection shapes (M = 4096 tokens): BF16 cuBLAS
// (BF16 in, FP32 out, FP32 accumulate) against the FP8 GEMM of spec §3.4 (a 1x128, b 128x128
// scales) through the Hopper wgmma kernel (both main loops: waiting for each K block's wgmma,
// and overlapping its promotion with the next block's) and the portable mma.sync kernel.
// Medians over 20 timed repetitions after warm-up, CUDA events; random inputs. Outputs are
// F32, as training's GEMMs write them (DeepGEMM's published figures write BF16: at small K the
// output write is a large share of the time, e.g. about 40% for kv_b). Each FP8
// result is checked against the FP32 SGEMM of the dequantised operands (normalised error over
// the first rows).
// Then the grouped BF16 GEMMs of the MoE routed experts at the 1b preset's shapes (64 experts,
// 16384 tokens x 6 = 98304 pair rows split unevenly, counts around 1536): forward, input- and
// weight-gradient layouts of both projections, cuBLAS (one call per expert: the grouped entry
// point rejects BF16 -> F32) against our grouped kernel (kernels/gemm_grouped_bf16.cu) in
// the same run, medians, with the kernel's nmse against cuBLAS, and its warpgroup-MMA version
// (opt-in DS_GROUPED_GEMM=wgmma, kernels/gemm_grouped_sm90.cu; where the sm_90a build runs)
// with its nmse against cuBLAS; beside them the grouped FP8
// GEMMs on the same problem (fp8_gemm_nt_grouped for the row-split layouts, _kgrouped for the
// weight gradients; each expert's rows padded to a multiple of 128, TFLOP/s counted over the
// unpadded work like the BF16 figures), with the nmse of the op's kernel against the portable
// one. Prints tables, each row followed by its JSON line (a run cut short keeps the rows it
// made). Exits 77 without a GPU.
// --grouped-only: only the grouped expert GEMMs (gpu-check.sh's Nsight Compute run).
// Usage: bench_gemm [--without overlap|kernel|fp8-grouped|wgmma]... [--grouped-only]: --without
// leaves out the FP8 GEMM's overlapped main loop, our grouped BF16 kernel, the grouped FP8
// GEMMs, the wgmma grouped kernel (pieces whose tests failed: scripts/gpu-check.sh), their
// columns -1 in the JSON.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "ds/core/tensor.hpp"
#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"
#include "kernels/fp8_gemm.cuh"
#include "kernels/gemm.cuh"
#include "kernels/gemm_grouped.cuh"
#include "kernels/gemm_grouped_bf16.cuh"
#include "kernels/runtime.cuh"
#include "kernels/sm90_fp8_gemm.cuh"

namespace {

using ds::Tensor;
using ds::ops::Fp8Group;

bool g_overlap = true, g_kernel = true, g_fp8_grouped = true, g_wgmma = true;   // --without

struct Shape3 {
  const char* name;
  int64_t M, N, K;
};

// DeepSeek-V3 (hidden 7168): in -> out of each projection as (N, K) = (out, in).
const Shape3 kShapes[] = {
    {"q_a 7168->1536", 4096, 1536, 7168},  {"q_b 1536->24576", 4096, 24576, 1536},
    {"kv_a 7168->576", 4096, 576, 7168},   {"kv_b 512->32768", 4096, 32768, 512},
    {"o 16384->7168", 4096, 7168, 16384},  {"up+gate 7168->2x2048", 4096, 4096, 7168},
    {"down 2048->7168", 4096, 7168, 2048}, {"square 8192", 8192, 8192, 8192},
};

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// GPU tensor of n random floats in [-1, 1): a 4M-value pool filled once on the host, copied
// in with a varying offset (cheap, and no two tensors alike).
Tensor random_gpu(int64_t rows, int64_t cols) {
  static std::vector<float> pool = [] {
    std::vector<float> p(size_t(1) << 22);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (float& v : p) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      v = float(int64_t(s >> 40) - (int64_t(1) << 23)) / float(1 << 23);
    }
    return p;
  }();
  static size_t shift = 0;
  Tensor t = Tensor::empty({rows, cols}, ds::DType::f32, ds::Device::cuda);
  const size_t n = size_t(rows * cols), P = pool.size() / 2;
  shift = (shift + 977) % P;
  for (size_t off = 0; off < n; off += P)
    check(cudaMemcpy(t.data<float>() + off, pool.data() + shift, std::min(P, n - off) * 4,
                     cudaMemcpyHostToDevice),
          "upload");
  return t;
}

template <typename F>
double median_ms(F&& f, int reps = 20, int warm = 3) {
  for (int i = 0; i < warm; ++i) f();
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "event");
  check(cudaEventCreate(&e1), "event");
  std::vector<float> ms(size_t(reps), 0.0f);
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(e0, 0), "record");
    f();
    check(cudaEventRecord(e1, 0), "record");
    check(cudaEventSynchronize(e1), "sync");
    check(cudaEventElapsedTime(&ms[size_t(i)], e0, e1), "elapsed");
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// nmse of the first `rows` rows of got against want (both (M, N) on the GPU).
double nmse_rows(const Tensor& got, const Tensor& want, int64_t rows) {
  const int64_t N = got.size(1);
  std::vector<float> g(size_t(rows * N)), w(size_t(rows * N));
  check(cudaMemcpy(g.data(), got.data<float>(), g.size() * 4, cudaMemcpyDeviceToHost), "down");
  check(cudaMemcpy(w.data(), want.data<float>(), w.size() * 4, cudaMemcpyDeviceToHost), "down");
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    num += (double(g[i]) - w[i]) * (double(g[i]) - w[i]);
    den += double(w[i]) * w[i];
  }
  return den > 0 ? num / den : num;
}

// ---- grouped GEMMs of the routed experts -------------------------------------------------------

constexpr int kExperts = 64;
constexpr int64_t kPairRows = 16384 * 6;

// Rows per expert: 98304 split with weights exp(0.35 z), z standard normal (Box-Muller over a
// fixed xorshift stream): a realistic imbalance around 1536, every count > 0.
std::vector<int64_t> expert_rows() {
  uint64_t s = 0x243F6A8885A308D3ull;
  const auto uniform = [&] {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return (double(s >> 11) + 0.5) / double(uint64_t(1) << 53);
  };
  std::vector<double> w(kExperts);
  double sum = 0;
  for (double& v : w) {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double z = r * std::cos(6.283185307179586 * uniform());
    v = std::exp(0.35 * z);
    sum += v;
  }
  std::vector<int64_t> rows(kExperts);
  int64_t total = 0;
  for (int e = 0; e < kExperts; ++e) {
    rows[size_t(e)] = std::max<int64_t>(1, int64_t(double(kPairRows) * w[size_t(e)] / sum));
    total += rows[size_t(e)];
  }
  *std::max_element(rows.begin(), rows.end()) += kPairRows - total;
  return rows;
}

Tensor random_bf16(int64_t rows, int64_t cols, const ds::ops::Context& gpu) {
  const Tensor f = random_gpu(rows, cols);
  Tensor b = Tensor::empty({rows, cols}, ds::DType::bf16, ds::Device::cuda);
  ds::ops::bf16_round(gpu, f, b);
  return b;
}

// One projection of all experts as a grouped call. Row-split (wgrad false): group e is
// c[rows_e] (count_e, N) = x[rows_e] (count_e, K) @ op(w_e), w_e (N, K) when tb else (K, N).
// Weight gradient: dw_e (M, N) += dy[rows_e]^T (count_e, M)^T @ x[rows_e] (count_e, N).
struct GroupedShape {
  const char* name;
  bool wgrad, tb;
  int64_t M, N, K;   // the per-expert row count replaces M (row-split) or K (wgrad)
};
const GroupedShape kGroupedShapes[] = {
    {"fwd gate/up 1024->384", false, true, 0, 384, 1024},
    {"fwd down 384->1024", false, true, 0, 1024, 384},
    {"dgrad gate/up 384->1024", false, false, 0, 1024, 384},
    {"dgrad down 1024->384", false, false, 0, 384, 1024},
    {"wgrad gate/up 384x1024", true, false, 384, 1024, 0},
    {"wgrad down 1024x384", true, false, 1024, 384, 0},
};

// The grouped FP8 GEMM of shape s over `rows` (per expert, padded here to multiples of 128):
// median ms through the op (DS_FP8_GEMM picks the kernel) and the nmse of its result against
// the portable kernel's. Operands random, quantised as in training: activations 1x128,
// weights 128x128 (row-split); both 1x128 along the tokens (weight gradient).
struct Fp8Timing {
  double ms, nmse;
};
Fp8Timing time_grouped_fp8(const ds::ops::Context& gpu, const GroupedShape& s,
                           const std::vector<int64_t>& rows) {
  using ds::ops::ScaleFormat;
  std::vector<int64_t> off(1, 0);   // (E + 1)
  for (int64_t n : rows) off.push_back(off.back() + (n + 127) / 128 * 128);
  const int64_t P = off.back();     // padded rows
  const auto quant = [&](int64_t r, int64_t k, Fp8Group g, Tensor& q, Tensor& sc) {
    ds::ops::fp8_quantize(gpu, random_gpu(r, k), g, ScaleFormat::fp32, g == Fp8Group::row_1x128,
                          q, sc);
  };
  const auto operand = [](const Tensor& q, const Tensor& sc, int rps) {
    return ds::cuda::Fp8Operand{q.data<uint8_t>(), sc.data<float>(), rps};
  };
  Tensor qa, sa;
  Fp8Timing r{};
  if (!s.wgrad) {   // c (P, N) = a (P, K) . w_e (N, K)^T per expert
    quant(P, s.K, Fp8Group::row_1x128, qa, sa);
    std::vector<Tensor> qw(kExperts), sw(kExperts);
    std::vector<ds::cuda::Fp8Operand> ow;
    for (int e = 0; e < kExperts; ++e) {
      quant(s.N, s.K, Fp8Group::block_128x128, qw[size_t(e)], sw[size_t(e)]);
      ow.push_back(operand(qw[size_t(e)], sw[size_t(e)], 128));
    }
    Tensor c = Tensor::empty({P, s.N}, ds::DType::f32, ds::Device::cuda);
    Tensor c2 = Tensor::empty({P, s.N}, ds::DType::f32, ds::Device::cuda);
    const auto run = [&] { ds::ops::fp8_gemm_nt_grouped(gpu, qa, sa, qw, sw, off, c); };
    run();
    ds::cuda::fp8_gemm_nt_grouped_fallback(operand(qa, sa, 1), ow.data(), off.data(), kExperts,
                                           c2.data<float>(), s.N, s.K);
    r.nmse = nmse_rows(c, c2, std::min<int64_t>(P, 8192));
    r.ms = median_ms(run);
  } else {          // c_e (M, N) += a (M, P)[:, expert e] . b (N, P)[:, expert e]^T
    Tensor qb, sb;
    quant(s.M, P, Fp8Group::row_1x128, qa, sa);
    quant(s.N, P, Fp8Group::row_1x128, qb, sb);
    std::vector<Tensor> c, c2;
    std::vector<float*> p2;
    for (int e = 0; e < kExperts; ++e) {
      c.push_back(Tensor::zeros({s.M, s.N}, ds::DType::f32, ds::Device::cuda));
      c2.push_back(Tensor::zeros({s.M, s.N}, ds::DType::f32, ds::Device::cuda));
      p2.push_back(c2.back().data<float>());
    }
    const auto run = [&] { ds::ops::fp8_gemm_nt_kgrouped(gpu, qa, sa, qb, sb, off, c); };
    run();
    ds::cuda::fp8_gemm_nt_kgrouped_fallback(operand(qa, sa, 1), operand(qb, sb, 1), off.data(),
                                            kExperts, p2.data(), s.M, s.N);
    r.nmse = nmse_rows(c[0], c2[0], s.M);
    r.ms = median_ms(run);   // accumulates into c: the timing only
  }
  check(cudaDeviceSynchronize(), "grouped fp8");
  return r;
}

void bench_grouped(const ds::ops::Context& gpu) {
  using ds::cuda::GroupedGemmImpl;
  const std::vector<int64_t> rows = expert_rows();
  const auto [mn, mx] = std::minmax_element(rows.begin(), rows.end());
  std::printf("\ngrouped BF16 GEMMs: %d experts, %lld rows (per expert %lld..%lld)\n", kExperts,
              (long long)kPairRows, (long long)*mn, (long long)*mx);
  std::printf("%-24s %5s %5s %5s | %11s %11s %7s | %9s | %10s %9s | %8s %9s | %11s\n",
              "shape", "M", "N", "K", "cublas TF/s", "kernel TF/s", "speedup", "nmse",
              "wgmma TF/s", "wg nmse", "fp8 TF/s", "fp8 nmse", "bf16-out TF/s");
  const GroupedGemmImpl before = ds::cuda::grouped_gemm_impl();
  for (const GroupedShape& s : kGroupedShapes) {
    const bool ta = s.wgrad, tb = s.tb;
    const float beta = s.wgrad ? 1.0f : 0.0f;
    Tensor a, b, c, cref;
    std::vector<Tensor> w;
    std::vector<ds::cuda::GemmDesc> d(static_cast<size_t>(kExperts));
    if (!s.wgrad) {
      a = random_bf16(kPairRows, s.K, gpu);
      for (int e = 0; e < kExperts; ++e)
        w.push_back(random_bf16(tb ? s.N : s.K, tb ? s.K : s.N, gpu));
      c = Tensor::empty({kPairRows, s.N}, ds::DType::f32, ds::Device::cuda);
      cref = Tensor::empty({kPairRows, s.N}, ds::DType::f32, ds::Device::cuda);
    } else {
      a = random_bf16(kPairRows, s.M, gpu);   // dy
      b = random_bf16(kPairRows, s.N, gpu);   // x
      c = Tensor::empty({kExperts * s.M, s.N}, ds::DType::f32, ds::Device::cuda);
      cref = Tensor::empty({kExperts * s.M, s.N}, ds::DType::f32, ds::Device::cuda);
    }
    const auto descs = [&](Tensor& out) {
      int64_t r0 = 0;
      for (int e = 0; e < kExperts; ++e) {
        ds::cuda::GemmDesc& x = d[size_t(e)];
        const int64_t n = rows[size_t(e)];
        if (!s.wgrad) {
          x.a = a.data<uint16_t>() + r0 * s.K;
          x.b = w[size_t(e)].data<uint16_t>();
          x.c = out.data<float>() + r0 * s.N;
          x.M = n, x.N = s.N, x.K = s.K;
        } else {
          x.a = a.data<uint16_t>() + r0 * s.M;
          x.b = b.data<uint16_t>() + r0 * s.N;
          x.c = out.data<float>() + int64_t(e) * s.M * s.N;
          x.M = s.M, x.N = s.N, x.K = n;
        }
        r0 += n;
      }
    };
    const auto run = [&](GroupedGemmImpl impl, Tensor& out) {
      ds::cuda::set_grouped_gemm_impl(impl);
      descs(out);
      ds::cuda::grouped_gemm_rm(d.data(), kExperts, ta, tb, true, 1.0f, beta);
    };
    descs(c);
    const bool fits = g_kernel && ds::cuda::grouped_bf16_kernel_fits(d.data(), kExperts, ta, tb);
    // Results from a zero c (beta 1 for the weight gradients), then the timings.
    check(cudaMemset(cref.data<float>(), 0, size_t(cref.numel()) * 4), "memset");
    check(cudaMemset(c.data<float>(), 0, size_t(c.numel()) * 4), "memset");
    run(GroupedGemmImpl::cublas, cref);
    double e_k = NAN, t_k = NAN;
    if (fits) {
      run(GroupedGemmImpl::kernel, c);
      check(cudaDeviceSynchronize(), "grouped kernel");
      e_k = nmse_rows(c, cref, std::min<int64_t>(c.size(0), 8192));
    }
    // the wgmma kernel (its own launch count says it ran: not where sm_90a is not loaded)
    double e_w = NAN, t_w = NAN;
    const bool wg = g_wgmma && ds::cuda::grouped_gemm_wgmma_available() &&
                    ds::cuda::grouped_bf16_kernel_fits(d.data(), kExperts, ta, tb);
    if (wg) {
      check(cudaMemset(c.data<float>(), 0, size_t(c.numel()) * 4), "memset");
      const int64_t n0 = ds::cuda::grouped_gemm_wgmma_launches();
      run(GroupedGemmImpl::wgmma, c);
      check(cudaDeviceSynchronize(), "grouped wgmma kernel");
      e_w = ds::cuda::grouped_gemm_wgmma_launches() > n0
                ? nmse_rows(c, cref, std::min<int64_t>(c.size(0), 8192)) : NAN;
    }
    const double t_cb = median_ms([&] { run(GroupedGemmImpl::cublas, cref); });
    if (fits) t_k = median_ms([&] { run(GroupedGemmImpl::kernel, c); });
    if (wg && !std::isnan(e_w)) t_w = median_ms([&] { run(GroupedGemmImpl::wgmma, c); });
    // BF16 outputs (the experts' BF16 outputs, Context::expert_outputs_bf16): the forward and
    // input-gradient shapes, through cuBLAS (its grouped entry point takes BF16 in and out)
    double t_b16 = NAN;
    if (!s.wgrad) {
      Tensor c16 = Tensor::empty({kPairRows, s.N}, ds::DType::bf16, ds::Device::cuda);
      descs(cref);
      for (int e = 0, r0 = 0; e < kExperts; r0 += int(rows[size_t(e)]), ++e)
        d[size_t(e)].c = c16.data<uint16_t>() + int64_t(r0) * s.N;
      ds::cuda::set_grouped_gemm_impl(GroupedGemmImpl::cublas);
      t_b16 = median_ms([&] {
        ds::cuda::grouped_gemm_rm(d.data(), kExperts, ta, tb, true, 1.0f, 0.0f, true);
      });
    }
    check(cudaDeviceSynchronize(), "sync");

    const int64_t M = s.wgrad ? s.M : kPairRows, K = s.wgrad ? kPairRows : s.K;
    const double flop = 2.0 * double(M) * double(s.N) * double(K);
    const auto tf = [&](double ms) { return std::isnan(ms) ? -1.0 : flop / (ms * 1e-3) / 1e12; };
    const double speedup = std::isnan(t_k) ? -1.0 : t_cb / t_k;
    const Fp8Timing f8 = g_fp8_grouped ? time_grouped_fp8(gpu, s, rows) : Fp8Timing{NAN, NAN};
    std::printf("%-24s %5lld %5lld %5lld | %11.1f %11.1f %7.2f | %9.2e | %10.1f %9.2e | %8.1f "
                "%9.2e | %11.1f%s\n",
                s.name, (long long)M, (long long)s.N, (long long)K, tf(t_cb), tf(t_k), speedup,
                e_k, tf(t_w), e_w, tf(f8.ms), f8.nmse, tf(t_b16),
                fits ? "" : "  (kernel does not take this shape)");
    std::fflush(stdout);
    char buf[768];
    std::snprintf(buf, sizeof buf,
                  "{\"bench\":\"grouped_gemm\",\"shape\":\"%s\",\"groups\":%d,\"M\":%lld,"
                  "\"N\":%lld,\"K\":%lld,\"ta\":%d,\"tb\":%d,\"cublas_tflops\":%.2f,"
                  "\"kernel_tflops\":%.2f,\"speedup\":%.3f,\"cublas_ms\":%.4f,"
                  "\"kernel_ms\":%.4f,\"kernel_nmse\":%.3e,\"wgmma_tflops\":%.2f,"
                  "\"wgmma_ms\":%.4f,\"wgmma_nmse\":%.3e,\"fp8_tflops\":%.2f,"
                  "\"fp8_ms\":%.4f,\"fp8_vs_portable_nmse\":%.3e,\"bf16_out_tflops\":%.2f,"
                  "\"bf16_out_native\":%d}",
                  s.name, kExperts, (long long)M, (long long)s.N, (long long)K, int(ta), int(tb),
                  tf(t_cb), tf(t_k), speedup, t_cb, std::isnan(t_k) ? -1.0 : t_k,
                  std::isnan(e_k) ? -1.0 : e_k, tf(t_w), std::isnan(t_w) ? -1.0 : t_w,
                  std::isnan(e_w) ? -1.0 : e_w, tf(f8.ms), std::isnan(f8.ms) ? -1.0 : f8.ms,
                  std::isnan(f8.nmse) ? -1.0 : f8.nmse, tf(t_b16),
                  int(ds::cuda::grouped_gemm_native(true, true)));
    std::printf("%s\n", buf);
    std::fflush(stdout);
  }
  ds::cuda::set_grouped_gemm_impl(before);
}

}  // namespace

int main(int argc, char** argv) {
  bool grouped_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i], v = i + 1 < argc ? argv[i + 1] : "";
    if (f == "--grouped-only") {
      grouped_only = true;
      continue;
    }
    if (f != "--without" ||
        (v != "overlap" && v != "kernel" && v != "fp8-grouped" && v != "wgmma")) {
      std::fprintf(stderr, "bench_gemm: unknown argument %s %s (--without overlap|kernel|"
                   "fp8-grouped|wgmma, --grouped-only)\n", f.c_str(), v.c_str());
      return 2;
    }
    (v == "overlap" ? g_overlap : v == "kernel" ? g_kernel : v == "wgmma" ? g_wgmma
                                                                       : g_fp8_grouped) = false;
    ++i;
  }
  if (ds::cuda::device_count() == 0) {
    std::fprintf(stderr, "ds_bench_gemm: no CUDA device, nothing to measure\n");
    return 77;
  }
  ds::ops::init_device(ds::Device::cuda);
  // the overlapped main loop is the default: without it, every FP8 GEMM here (the grouped
  // ones too) runs the plain one
  if (!g_overlap) ds::cuda::set_fp8_gemm_overlap(false);
  std::printf("GPU: %s\n", ds::ops::device_description(ds::Device::cuda).c_str());
  ds::ops::Context gpu;
  gpu.device = ds::Device::cuda;
  std::printf("%-22s %6s %6s %6s | %9s %11s %11s %11s | %10s %10s %10s\n", "shape", "M", "N",
              "K", "bf16 TF/s", "fp8 wgmma", "fp8 overlap", "fp8 portab", "nmse wgmma",
              "nmse ovlp", "nmse port");
  for (const Shape3& s : kShapes) {
    if (grouped_only) break;
    const int64_t M = s.M, N = s.N, K = s.K;
    const double flop = 2.0 * double(M) * double(N) * double(K);
    const Tensor x = random_gpu(M, K), w = random_gpu(N, K);
    // BF16 operands.
    Tensor xb = Tensor::empty({M, K}, ds::DType::bf16, ds::Device::cuda);
    Tensor wb = Tensor::empty({N, K}, ds::DType::bf16, ds::Device::cuda);
    ds::ops::bf16_round(gpu, x, xb);
    ds::ops::bf16_round(gpu, w, wb);
    // FP8 operands: activations 1x128, weights 128x128.
    Tensor qa, sa, qb, sb;
    ds::ops::fp8_quantize(gpu, x, Fp8Group::row_1x128, ds::ops::ScaleFormat::fp32, true, qa, sa);
    ds::ops::fp8_quantize(gpu, w, Fp8Group::block_128x128, ds::ops::ScaleFormat::fp32, false, qb,
                          sb);
    ds::cuda::Fp8Operand oa{qa.data<uint8_t>(), sa.data<float>(), 1};
    ds::cuda::Fp8Operand ob{qb.data<uint8_t>(), sb.data<float>(), 128};
    Tensor c = Tensor::empty({M, N}, ds::DType::f32, ds::Device::cuda);
    Tensor c8 = Tensor::empty({M, N}, ds::DType::f32, ds::Device::cuda);
    Tensor cref = Tensor::empty({M, N}, ds::DType::f32, ds::Device::cuda);

    const double t_bf16 = median_ms([&] {
      ds::cuda::bf16_gemm_rm(xb.data<uint16_t>(), wb.data<uint16_t>(), c.data<float>(), M, N, K,
                             false, true, 1.0f, 0.0f);
    });
    // Reference for the FP8 kernels: FP32 SGEMM of the dequantised operands.
    {
      Tensor xd, wd;
      ds::ops::fp8_dequantize(gpu, qa, sa, Fp8Group::row_1x128, xd);
      ds::ops::fp8_dequantize(gpu, qb, sb, Fp8Group::block_128x128, wd);
      ds::cuda::sgemm_rm(xd.data<float>(), wd.data<float>(), cref.data<float>(), M, N, K, false,
                         true, 1.0f, 0.0f);
    }
    const int64_t check_rows = std::min<int64_t>(M, 256);
    double t_wg = NAN, e_wg = NAN, t_ov = NAN, e_ov = NAN;
    if (ds::cuda::fp8_gemm_nt_sm90_supported(oa, ob, M, N, K)) {
      const bool was = ds::cuda::fp8_gemm_overlap();
      for (const bool overlap : {false, true}) {   // the two main loops, side by side
        if (overlap && !g_overlap) continue;
        ds::cuda::set_fp8_gemm_overlap(overlap);
        double& t = overlap ? t_ov : t_wg;
        t = median_ms([&] { ds::cuda::fp8_gemm_nt_sm90(oa, ob, c8.data<float>(), M, N, K); });
        (overlap ? e_ov : e_wg) = nmse_rows(c8, cref, check_rows);
      }
      ds::cuda::set_fp8_gemm_overlap(was);
    }
    const double t_fb =
        median_ms([&] { ds::cuda::fp8_gemm_nt_fallback(oa, ob, c8.data<float>(), M, N, K); });
    const double e_fb = nmse_rows(c8, cref, check_rows);
    check(cudaDeviceSynchronize(), "sync");

    const auto tf = [&](double ms) { return flop / (ms * 1e-3) / 1e12; };
    std::printf("%-22s %6lld %6lld %6lld | %9.1f %11.1f %11.1f %11.1f | %10.2e %10.2e %10.2e\n",
                s.name, (long long)M, (long long)N, (long long)K, tf(t_bf16), tf(t_wg), tf(t_ov),
                tf(t_fb), e_wg, e_ov, e_fb);
    std::fflush(stdout);
    char buf[768];
    std::snprintf(buf, sizeof buf,
                  "{\"bench\":\"gemm\",\"shape\":\"%s\",\"M\":%lld,\"N\":%lld,\"K\":%lld,"
                  "\"bf16_tflops\":%.2f,\"fp8_wgmma_tflops\":%.2f,\"fp8_overlap_tflops\":%.2f,"
                  "\"fp8_fallback_tflops\":%.2f,\"bf16_ms\":%.4f,\"fp8_wgmma_ms\":%.4f,"
                  "\"fp8_overlap_ms\":%.4f,\"fp8_fallback_ms\":%.4f,\"fp8_wgmma_nmse\":%.3e,"
                  "\"fp8_overlap_nmse\":%.3e,\"fp8_fallback_nmse\":%.3e}",
                  s.name, (long long)M, (long long)N, (long long)K, tf(t_bf16),
                  std::isnan(t_wg) ? -1.0 : tf(t_wg), std::isnan(t_ov) ? -1.0 : tf(t_ov),
                  tf(t_fb), t_bf16, std::isnan(t_wg) ? -1.0 : t_wg, std::isnan(t_ov) ? -1.0 : t_ov,
                  t_fb, std::isnan(e_wg) ? -1.0 : e_wg, std::isnan(e_ov) ? -1.0 : e_ov, e_fb);
    std::printf("%s\n", buf);
    std::fflush(stdout);
  }
  bench_grouped(gpu);
  return 0;
}
