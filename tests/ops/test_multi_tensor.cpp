// The many-tensor ops (lib/ops/multi_tensor.cpp) on the CPU: each entry gets exactly what the
// one-tensor op gives it (AdamW bit for bit with per-entry weight decay, sums, zeroing, BF16
// rounding), the profiler records one call, and malformed tables are refused. Also the index
// arithmetic the CUDA launchers share (kernels/multi_tensor_index.hpp): every element of
// every entry is visited by exactly one chunk.
#include <cmath>
#include <cstring>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/ops/fp8.hpp"
#include "kernels/multi_tensor_index.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {
const int64_t kSizes[] = {5, 0, 1, 300, 4097};
}  // namespace

TEST_CASE("adamw_step_multi == adamw_step per tensor (bit-exact), one profiled call") {
  for (bool bf16 : {false, true}) {
    CAPTURE(bf16);
    const DType mt = bf16 ? DType::bf16 : DType::f32;
    std::vector<Tensor> p, g, m, v, p2, m2, v2;
    for (int64_t n : kSizes) {
      p.push_back(rand_f32({n}));
      g.push_back(rand_f32({n}, -0.1, 0.1));
      m.push_back(Tensor::zeros({n}, mt));
      v.push_back(Tensor::zeros({n}, mt));
      p2.push_back(p.back().clone());
      m2.push_back(m.back().clone());
      v2.push_back(v.back().clone());
    }
    AdamWParams hp;
    hp.lr = 1e-2f;
    hp.grad_scale = 0.5f;
    Profiler prof;
    Context c = opt_ctx();
    c.prof = &prof;
    for (int s = 1; s <= 3; ++s) {
      hp.step = s;
      std::vector<AdamWTensors> ts;
      for (size_t i = 0; i < p.size(); ++i) {
        const float wd = i % 2 ? 0.1f : 0.0f;
        AdamWParams q = hp;
        q.weight_decay = wd;
        adamw_step(opt_ctx(), p2[i], g[i], m2[i], v2[i], q);
        ts.push_back({&p[i], &g[i], &m[i], &v[i], wd});
      }
      adamw_step_multi(c, ts, hp);
    }
    for (size_t i = 0; i < p.size(); ++i) {
      CHECK(same_bytes(p[i], p2[i]));
      CHECK(same_bytes(m[i], m2[i]));
      CHECK(same_bytes(v[i], v2[i]));
    }
    REQUIRE(prof.entries().size() == 1);
    CHECK(std::string(prof.entries()[0].op) == "adamw_step_multi");
    CHECK(prof.entries()[0].calls == 3);
    CHECK(prof.entries()[0].family == "optimizer");
  }
}

TEST_CASE("sum_squares_multi, zero_multi, bf16_round_multi == the one-tensor ops") {
  std::vector<Tensor> x;
  std::vector<const Tensor*> px;
  for (int64_t n : kSizes) x.push_back(rand_f32({n}, -3, 3));
  for (const Tensor& t : x) px.push_back(&t);
  for (const Context& c : {ref_ctx(), opt_ctx()}) {
    const std::vector<double> s = sum_squares_multi(c, px);
    REQUIRE(s.size() == x.size());
    for (size_t i = 0; i < x.size(); ++i) CHECK(s[i] == sum_squares(c, x[i]));
  }
  for (DType dt : {DType::f32, DType::bf16}) {
    std::vector<Tensor> out;
    std::vector<Tensor*> pout;
    for (const Tensor& t : x) out.push_back(Tensor::empty(t.shape(), dt));
    for (Tensor& t : out) pout.push_back(&t);
    bf16_round_multi(opt_ctx(), px, pout);
    for (size_t i = 0; i < x.size(); ++i) {
      Tensor w = Tensor::empty(x[i].shape(), dt);
      bf16_round(ref_ctx(), x[i], w);
      CHECK(same_bytes(out[i], w));
    }
  }
  std::vector<Tensor> z = {rand_f32({7}), Tensor::empty({3}, DType::bf16), Tensor()};
  std::memset(z[1].raw(), 0x5a, z[1].nbytes());
  std::vector<Tensor*> pz = {&z[0], &z[1], &z[2]};
  zero_multi(opt_ctx(), pz);
  CHECK(same_bytes(z[0], Tensor::zeros({7})));
  CHECK(same_bytes(z[1], Tensor::zeros({3}, DType::bf16)));
}

TEST_CASE("many-tensor ops refuse malformed tables") {
  Tensor a = rand_f32({4}), b = rand_f32({5}), i32 = Tensor::zeros({4}, DType::i32);
  CHECK_THROWS_WITH_AS(sum_squares_multi(opt_ctx(), {&a, &i32}),
                       doctest::Contains("tensor 1 is I32, expected F32"), Error);
  Tensor o1 = Tensor::empty({4}), o2 = Tensor::empty({5}, DType::bf16), o3 = Tensor::empty({4});
  CHECK_THROWS_WITH_AS(bf16_round_multi(opt_ctx(), {&a, &b}, {&o1}),
                       doctest::Contains("2 inputs but 1 outputs"), Error);
  CHECK_THROWS_WITH_AS(bf16_round_multi(opt_ctx(), {&a, &b}, {&o1, &o2}),
                       doctest::Contains("outputs mix F32 and BF16"), Error);
  CHECK_THROWS_WITH_AS(bf16_round_multi(opt_ctx(), {&a, &b}, {&o1, &o3}),
                       doctest::Contains("differs from x"), Error);
  Tensor g = rand_f32({4}), m = Tensor::zeros({4}), v = Tensor::zeros({4});
  Tensor g5 = rand_f32({5}), m5 = Tensor::zeros({5}, DType::bf16), v5 = Tensor::zeros({5});
  AdamWParams hp;
  CHECK_THROWS_WITH_AS(
      adamw_step_multi(opt_ctx(), {{&a, &g, &m, &v, 0}, {&b, &g5, &m5, &v5, 0}}, hp),
      doctest::Contains("moments' dtypes differ"), Error);
  CHECK_THROWS_AS(adamw_step_multi(opt_ctx(), {{&a, &g5, &m, &v, 0}}, hp), Error);
  CHECK_THROWS_WITH_AS(adamw_step_multi(opt_ctx(), {{&a, nullptr, &m, &v, 0}}, hp),
                       doctest::Contains("lacks a tensor"), Error);
  Tensor before = a.clone();
  CHECK_THROWS(adamw_step_multi(opt_ctx(), {{&a, &g, &m, &v, 0}, {&b, &g5, &m5, &v5, 0}}, hp));
  CHECK(same_bytes(a, before));   // checked before anything is written
}

TEST_CASE("multi_tensor_index: chunks cover every element of every entry exactly once") {
  struct E {
    int64_t first;
  };
  const std::vector<std::vector<int64_t>> tables = {
      {7, 0, 65536, 1, 65537, 200003, 3, 0, 131072, 33}, {0}, {0, 0, 5}, {5, 0, 0}, {1}, {64, 64}};
  for (int64_t chunk : {int64_t(1), int64_t(4), int64_t(64), int64_t(65536)})
    for (const auto& ns : tables) {
      const int count = int(ns.size());
      std::vector<int64_t> first(ns.size() + 1);
      const int64_t total = ds::cuda::chunk_prefix(ns.data(), count, chunk, first.data());
      std::vector<E> tab;
      for (int i = 0; i < count; ++i) tab.push_back({first[size_t(i)]});
      std::vector<std::vector<int>> seen;
      for (int64_t n : ns) seen.emplace_back(size_t(n), 0);
      for (int64_t c = 0; c < total; ++c) {
        const int i = ds::cuda::entry_of(tab.data(), count, c);
        REQUIRE(ns[size_t(i)] > 0);   // an empty entry never owns a chunk
        const ds::cuda::ChunkRange r =
            ds::cuda::chunk_range(c, tab[size_t(i)].first, ns[size_t(i)], chunk);
        REQUIRE(r.len > 0);
        REQUIRE(r.lo + r.len <= ns[size_t(i)]);
        for (int64_t k = r.lo; k < r.lo + r.len; ++k) ++seen[size_t(i)][size_t(k)];
      }
      for (const auto& s : seen)
        for (int v : s) CHECK(v == 1);
    }
}
