// The MoE router's kernels (kernels/moe_router.cuh: ops::moe_route and ops::moe_route_backward
// on the GPU) run on the CPU by the host emulator (cuda_emu.hpp: a fiber per CUDA
// thread) against the CPU reference. The selection must equal the reference's index for
// index, including its rules for NaN (a NaN candidate met first wins) and ties (the lower
// index), with groups (DeepSeek-V3's 8 of 256 experts, groups of one expert, groups not a
// warp multiple) and without, sigmoid and softmax scores, with and without bias; the scores
// and weights the same bits (NaN as NaN). The launcher's block size and dynamic shared memory
// (route_warp_bytes, route_warps_per_block) are used as moe_route.cu uses them, with fewer
// blocks than tokens need (the grid-stride loop), and every output lies between guard bytes.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "kernels/moe_router.cuh"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>

#include "ds/ops/ops.hpp"
#include "moe_pairs_util.hpp"

namespace {

using ds::DType;
using ds::Tensor;
using ds::test::ref_ctx;
using ds::test::cuda_emu::Guarded;
using ds::test::cuda_emu::launch;
using ds::test::cuda_emu::launch_dynamic;
namespace mr = ds::cuda::moeroute;

struct RouteCase {
  int E, K, G, TG;
};

// Elements of got that differ from want in their bits, NaN equal to NaN.
template <class T>
int64_t mismatches(const T* got, const T* want, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_floating_point_v<T>)
      if (std::isnan(got[i]) && std::isnan(want[i])) continue;
    bad += std::memcmp(got + i, want + i, sizeof(T)) != 0;
  }
  return bad;
}

// data: "random"; "ties" (logits and bias from a few values, one token with every logit
// equal); "nan" (a NaN logit in every other token); "inf" (+inf and -inf logits).
Tensor logits_for(const RouteCase& c, int64_t N, const std::string& data, std::mt19937_64& rng,
                  Tensor& bias) {
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  Tensor x = Tensor::empty({N, int64_t(c.E)});
  for (int64_t i = 0; i < x.numel(); ++i)
    x.f32()[i] = data == "ties" ? 0.5f * float(rng() % 4) - 0.5f : u(rng);
  if (bias.defined())
    for (int e = 0; e < c.E; ++e)
      bias.f32()[e] = data == "ties" ? 0.125f * float(rng() % 2) : 0.1f * u(rng) / 3.f;
  if (data == "ties" && N > 2)
    for (int e = 0; e < c.E; ++e) x.f32()[2 * c.E + e] = 0.25f;
  if (data == "nan")
    for (int64_t n = 0; n < N; n += 2) x.f32()[n * c.E + (n * 7) % c.E] = NAN;
  if (data == "inf")
    for (int64_t n = 0; n < N; ++n) {
      x.f32()[n * c.E + (n * 5) % c.E] = -INFINITY;
      if (n % 3 == 1) x.f32()[n * c.E + (n * 11 + 1) % c.E] = INFINITY;
    }
  return x;
}

ds::ops::RouteParams params(const RouteCase& c, bool sigmoid, bool norm, float route_scale) {
  ds::ops::RouteParams p;
  p.n_groups = c.G;
  p.topk_groups = c.TG;
  p.topk = c.K;
  p.sigmoid = sigmoid;
  p.norm_topk = norm;
  p.route_scale = route_scale;
  return p;
}

void check_route(const RouteCase& c, bool sigmoid, bool with_bias, bool norm, int64_t N,
                 const std::string& data, uint64_t seed) {
  const std::string label = "E=" + std::to_string(c.E) + " K=" + std::to_string(c.K) +
                            " groups " + std::to_string(c.G) + "/" + std::to_string(c.TG) +
                            (sigmoid ? " sigmoid" : " softmax") + (with_bias ? " bias" : "") +
                            (norm ? " norm" : "") + " N=" + std::to_string(N) + " " + data;
  INFO(label);
  std::mt19937_64 rng(seed);
  Tensor bias = with_bias ? Tensor::empty({int64_t(c.E)}) : Tensor();
  const Tensor x = logits_for(c, N, data, rng, bias);
  const ds::ops::RouteParams p = params(c, sigmoid, norm, norm ? 2.5f : 1.0f);
  Tensor s_ref = Tensor::empty({N, int64_t(c.E)}), i_ref = Tensor::empty({N, c.K}, DType::i32),
         w_ref = Tensor::empty({N, c.K});
  ds::ops::moe_route(ref_ctx(), x, bias, p, s_ref, i_ref, w_ref);

  // as moe_route.cu launches it, with at most 3 blocks
  mr::RouteK k{c.E, c.G, c.TG, c.K, sigmoid, norm, p.route_scale, 0};
  k.warp_bytes = mr::route_warp_bytes(c.E, c.K, c.G);
  const int wpb = mr::route_warps_per_block(k.warp_bytes);
  const int64_t blocks = std::min<int64_t>((N + wpb - 1) / wpb, 3);
  Guarded<float> s(size_t(N * c.E)), w(size_t(N * c.K));
  Guarded<int32_t> idx(size_t(N * c.K));
  launch_dynamic(mr::route_kernel, dim3(unsigned(blocks)), dim3(unsigned(wpb * 32)),
                 size_t(wpb) * size_t(k.warp_bytes), static_cast<const float*>(x.f32()),
                 with_bias ? static_cast<const float*>(bias.f32()) : nullptr, N, k, s.data(),
                 idx.data(), w.data());
  CHECK(s.guards_intact());
  CHECK(idx.guards_intact());
  CHECK(w.guards_intact());
  CHECK(mismatches(idx.data(), i_ref.i32(), N * c.K) == 0);
  CHECK(mismatches(s.data(), s_ref.f32(), N * c.E) == 0);
  CHECK(mismatches(w.data(), w_ref.f32(), N * c.K) == 0);
}

void check_backward(const RouteCase& c, bool sigmoid, bool norm, bool extra, int64_t N,
                    uint64_t seed) {
  const std::string label = "backward E=" + std::to_string(c.E) + " K=" + std::to_string(c.K) +
                            (sigmoid ? " sigmoid" : " softmax") + (norm ? " norm" : "") +
                            (extra ? " +extra" : "") + " N=" + std::to_string(N);
  INFO(label);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  Tensor none;
  const Tensor x = logits_for(c, N, "random", rng, none);
  const ds::ops::RouteParams p = params(c, sigmoid, norm, 1.7f);
  Tensor s = Tensor::empty({N, int64_t(c.E)}), idx = Tensor::empty({N, c.K}, DType::i32),
         w = Tensor::empty({N, c.K});
  ds::ops::moe_route(ref_ctx(), x, Tensor(), p, s, idx, w);
  Tensor dw = Tensor::empty({N, c.K}), dx = extra ? Tensor::empty({N, int64_t(c.E)}) : Tensor();
  for (int64_t i = 0; i < dw.numel(); ++i) dw.f32()[i] = u(rng);
  if (extra)
    for (int64_t i = 0; i < dx.numel(); ++i) dx.f32()[i] = 0.5f * u(rng);
  Tensor want = Tensor::empty({N, int64_t(c.E)});
  ds::ops::moe_route_backward(ref_ctx(), s, idx, dw, dx, p, want);

  // as moe_route.cu launches it (8 warps a block), with at most 2 blocks
  Guarded<float> got(size_t(N * c.E));
  const int64_t blocks = std::min<int64_t>((N + 7) / 8, 2);
  launch(mr::route_backward_kernel, dim3(unsigned(blocks)), dim3(256),
         static_cast<const float*>(s.f32()), static_cast<const int32_t*>(idx.i32()),
         static_cast<const float*>(dw.f32()),
         extra ? static_cast<const float*>(dx.f32()) : nullptr, N, c.E, c.K, sigmoid, norm,
         p.route_scale, got.data());
  CHECK(got.guards_intact());
  if (sigmoid) {   // the same operations in the same order: the same bits
    CHECK(mismatches(got.data(), want.f32(), N * c.E) == 0);
  } else {   // the softmax's dot product is a warp's butterfly sum, the reference's a loop
    int64_t bad = 0;
    for (int64_t i = 0; i < N * c.E; ++i) {
      const double g = got.data()[i], r = want.f32()[i];
      bad += !(std::fabs(g - r) <= 1e-6 * std::fabs(r) + 1e-12);
    }
    CHECK(bad == 0);
  }
}

const RouteCase kCases[] = {
    {256, 8, 8, 4},   // DeepSeek-V3
    {16, 2, 1, 1},    // no groups
    {40, 4, 4, 2},    // groups of 10: not a warp multiple
    {8, 3, 8, 5},     // one-expert groups: a group's score is its top 1
    {100, 5, 1, 1},   // E not a multiple of 32
};

}  // namespace

TEST_CASE("emulated route_kernel selects, scores and weighs as the CPU reference") {
  uint64_t seed = 1;
  for (const RouteCase& c : kCases)
    for (bool sigmoid : {true, false}) {
      check_route(c, sigmoid, true, true, 13, "random", seed++);
      check_route(c, sigmoid, false, false, 5, "random", seed++);
      check_route(c, sigmoid, true, false, 5, "ties", seed++);
      check_route(c, sigmoid, true, true, 4, "nan", seed++);
      check_route(c, sigmoid, false, true, 4, "inf", seed++);
    }
}

TEST_CASE("emulated route_kernel with more picks than a warp's lanes") {
  const RouteCase c{64, 40, 1, 1};   // the weights' store loop runs twice for some lanes
  check_route(c, true, true, true, 5, "random", 97);
  check_route(c, false, false, false, 5, "ties", 98);
}

TEST_CASE("emulated route_kernel in a launch of fewer warps (large per-warp tables)") {
  // 2,048 experts: 18.1 KiB of tables a warp, so 2 warps a block fit 48 KiB
  const RouteCase c{2048, 8, 8, 2};
  CHECK(mr::route_warps_per_block(mr::route_warp_bytes(c.E, c.K, c.G)) == 2);
  check_route(c, true, true, true, 5, "random", 99);
}

TEST_CASE("emulated route_backward_kernel equals the CPU reference") {
  uint64_t seed = 100;
  for (const RouteCase& c : kCases)
    for (bool sigmoid : {true, false})
      for (bool norm : {true, false})
        for (bool extra : {false, true}) check_backward(c, sigmoid, norm, extra, 11, seed++);
  check_backward({64, 40, 1, 1}, true, true, true, 11, seed++);
  check_backward({64, 40, 1, 1}, false, true, false, 11, seed++);
}
