// Expert parallelism of the MoE layer, run under mpirun with 2 and 4 ranks: every rank builds
// the single-rank MoE (all experts, the reference) and the expert-parallel MoE (E/ep experts),
// the reference sees every rank's tokens and each rank feeds its own slice to the EP MoE. The
// outputs, du, balance loss, routing counts, all-to-all bytes and parameter gradients must
// agree: local experts' grads directly, gate and shared-expert grads after a sum over ranks.
// Also: routing forced onto two experts (ranks with no rows at all), an ep group of one rank
// (the single-rank path through the same constructor), and an inference pass.
// reference: lib/model/moe_ep.cpp; spec §1.9-1.10, §4.5.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "ds/core/rng.hpp"
#include "ds/model/moe.hpp"
#include "mpi_test.hpp"

using namespace ds;
using namespace ds::model;

namespace {

constexpr double kRtol = 1e-5;   // max |a - b| relative to the tensor's largest |b|
const std::string kPrefix = "model.layers.1.mlp.";

// C 32, E 8 in 4 groups (2 kept), K 2, one shared expert, expert width 16.
ModelArgs ep_args() {
  ModelArgs a;
  a.dim = 32; a.moe_inter_dim = 16;
  a.n_routed_experts = 8; a.n_activated_experts = 2; a.n_shared_experts = 1;
  a.n_expert_groups = 4; a.n_limited_groups = 2; a.route_scale = 2.5;
  a.init_std = 0.2;
  return a;
}

Tensor random_rows(int64_t N, int64_t C, uint64_t seed) {
  Tensor t = Tensor::empty({N, C});
  Rng rng(seed, 3);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(rng.normal());
  return t;
}

// One MoE with its own parameters: same names -> same init on every rank and in both models.
struct Layer {
  ParamStore store;
  std::unique_ptr<MoE> moe;
  Layer(const ModelArgs& a, const ExpertParallel& ep, const std::function<void(float*)>& bias) {
    moe = std::make_unique<MoE>(store, a, kPrefix, 1, ep);
    store.init(42);
    store.alloc_grads();
    store.zero_grads();
    if (bias) bias(moe->gate.bias().f32());
  }
};

// max |a - b| / max |b|, printed in the style of the other model tests.
double rel_diff(const Tensor& a, const Tensor& b, const std::string& what) {
  REQUIRE(a.numel() == b.numel());
  double diff = 0, ref = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, double(std::fabs(a.f32()[i] - b.f32()[i])));
    ref = std::max(ref, double(std::fabs(b.f32()[i])));
  }
  const double r = ref > 0 ? diff / ref : diff;
  if (r > kRtol)
    std::printf("TENSOR MISMATCH %s: maxdiff %.3g (max |ref| %.3g)\n", what.c_str(), diff, ref);
  return r;
}

struct Case {
  ModelArgs args = ep_args();
  int64_t n_seq = 2, T = 5;            // per rank
  bool train = true;
  std::function<void(float*)> bias;    // sets the E correction biases (selection only)
};

// Runs one case on `comm` (the ep group) and checks everything against the reference.
// Returns the rows this rank's experts received (all sources, itself included).
int64_t check_case(dist::Comm& comm, const Case& c) {
  const int R = comm.size(), me = comm.rank();
  const ModelArgs& a = c.args;
  const int64_t C = a.dim, E = a.n_routed_experts, K = a.n_activated_experts;
  const int64_t Nl = c.n_seq * c.T, N = Nl * R;
  const float alpha = 0.1f;            // large, so the balance-loss gradient is visible

  Layer ref(a, ExpertParallel{}, c.bias);
  Layer epl(a, ExpertParallel{&comm}, c.bias);
  const auto [e0, e1] = ExpertParallel{&comm}.local_range(E);
  REQUIRE(epl.moe->e0 == e0);
  REQUIRE(int64_t(epl.moe->experts.size()) == e1 - e0);
  CHECK(epl.store.find(kPrefix + "experts." + std::to_string(e0) + ".up_proj.weight"));
  if (R > 1)   // the next rank's first expert is not registered here
    CHECK_FALSE(epl.store.find(kPrefix + "experts." + std::to_string(e1 % E) + ".up_proj.weight"));

  const Tensor u = random_rows(N, C, 7), dy = random_rows(N, C, 8);   // same on every rank
  const Tensor u_l = u.slice0(me * Nl, (me + 1) * Nl).clone();
  const Tensor dy_l = dy.slice0(me * Nl, (me + 1) * Nl).clone();
  const ops::Context ctx;

  MoEOptions o_ref{c.train, alpha, 1.0f};
  // The reference's balance loss averages over R * n_seq sequences, each rank's over n_seq.
  MoEOptions o_ep{c.train, alpha, 1.0f / float(R)};
  Tensor y_ref, y_ep;
  MoESaved s_ref, s_ep;
  ref.moe->forward(ctx, u, c.n_seq * R, c.T, o_ref, y_ref, s_ref);
  epl.moe->forward(ctx, u_l, c.n_seq, c.T, o_ep, y_ep, s_ep);

  CHECK(rel_diff(y_ep, y_ref.slice0(me * Nl, (me + 1) * Nl), "y") <= kRtol);
  double bal = s_ep.balance;
  comm.all_reduce_sum_f64(&bal, 1);
  CHECK(bal / R == doctest::Approx(s_ref.balance).epsilon(1e-6));
  // Routing of this rank's tokens is the reference's, counts summed over ranks are its counts.
  const std::vector<int32_t> idx_ref(s_ref.gate.idx.i32(), s_ref.gate.idx.i32() + N * K);
  CHECK(std::equal(idx_ref.begin() + me * Nl * K, idx_ref.begin() + (me + 1) * Nl * K,
                   s_ep.gate.idx.i32()));
  std::vector<int64_t> counts(s_ep.counts.begin(), s_ep.counts.end());
  comm.all_reduce_sum(counts);
  CHECK(std::equal(counts.begin(), counts.end(), s_ref.counts.begin()));

  // All-to-all bytes: rows this rank sent away plus rows it returned, C floats each.
  const int64_t per = E / R;
  int64_t out_remote = 0, in_remote = 0;
  for (int64_t p = 0; p < N * K; ++p) {
    const int owner = int(idx_ref[size_t(p)] / per), origin = int(p / K / Nl);
    if (origin == me && owner != me) ++out_remote;
    if (origin != me && owner == me) ++in_remote;
  }
  const int64_t fwd_bytes = (out_remote + in_remote) * C * int64_t(sizeof(float));
  CHECK(s_ep.a2a_bytes_sent == fwd_bytes);
  CHECK(epl.moe->a2a_bytes_total == fwd_bytes);
  if (!c.train) {
    CHECK(s_ep.experts.empty());
    CHECK_FALSE(s_ep.ep.y_pairs.defined());
    return -1;
  }
  int64_t received = 0;
  if (R > 1) {
    const std::vector<int64_t>& sent = s_ep.ep.send_rows;
    const std::vector<int64_t>& got = s_ep.ep.recv_rows;
    for (int64_t r : got) received += r;
    CHECK(received - got[size_t(me)] == in_remote);
    CHECK(std::accumulate(sent.begin(), sent.end(), int64_t(0)) - sent[size_t(me)] == out_remote);
  }

  Tensor du_ref, du_ep;
  ref.moe->backward(ctx, s_ref, dy, du_ref);
  epl.moe->backward(ctx, s_ep, dy_l, du_ep);
  CHECK(rel_diff(du_ep, du_ref.slice0(me * Nl, (me + 1) * Nl), "du") <= kRtol);
  CHECK(s_ep.a2a_bytes_sent == 2 * fwd_bytes);
  // Summed over the group: dispatch + combine, forward + backward, 4 copies of every remote pair.
  std::vector<int64_t> totals = {s_ep.a2a_bytes_sent, out_remote};
  comm.all_reduce_sum(totals);
  CHECK(totals[0] == 4 * totals[1] * C * int64_t(sizeof(float)));

  int local = 0, replicated = 0;
  for (Param& p : epl.store.params()) {
    const Param& q = ref.store.get(p.info.name);
    if (p.info.expert >= 0) {          // local expert: already the sum over every rank's rows
      CHECK_MESSAGE(rel_diff(p.grad, q.grad, p.info.name) <= kRtol, p.info.name);
      ++local;
    } else {                           // gate / shared experts: this rank's share
      Tensor g = p.grad.clone();
      comm.all_reduce_sum(g);
      CHECK_MESSAGE(rel_diff(g, q.grad, p.info.name) <= kRtol, p.info.name);
      ++replicated;
    }
  }
  CHECK(local == 3 * (e1 - e0));
  CHECK(replicated == (a.n_shared_experts > 0 ? 4 : 1));
  return received;
}

}  // namespace

TEST_CASE("expert-parallel MoE equals the single-rank MoE") {
  dist::Comm& world = ds::test::world();
  SUBCASE("grouped routing, shared expert, small random biases") {
    Case c;
    c.bias = [](float* b) {
      Rng rng(5, 1);
      for (int e = 0; e < 8; ++e) b[e] = float(0.05 * rng.normal());
    };
    check_case(world, c);
  }
  SUBCASE("K 3, no groups, no shared expert, longer sequences") {
    Case c;
    c.args.n_activated_experts = 3; c.args.n_expert_groups = 1; c.args.n_limited_groups = 1;
    c.args.n_shared_experts = 0;
    c.n_seq = 3; c.T = 7;
    check_case(world, c);
  }
  SUBCASE("inference pass (no train): same output, activations freed") {
    Case c;
    c.train = false;
    check_case(world, c);
  }
}

TEST_CASE("expert-parallel MoE: experts and ranks that receive no rows") {
  dist::Comm& world = ds::test::world();
  // Every token picks experts 0 and 1 (rank 0's): the other ranks receive nothing, send all.
  Case c;
  c.bias = [](float* b) { b[0] = 10.0f; b[1] = 10.0f; };
  const int64_t received = check_case(world, c);
  if (world.size() > 1 && world.rank() > 0) CHECK(received == 0);
  if (world.size() > 1 && world.rank() == 0)
    CHECK(received == 2 * c.n_seq * c.T * world.size());
  // Only expert 7 forced: rank R-1 gets every token once, the other choice spreads.
  Case d;
  d.bias = [](float* b) { b[7] = 10.0f; };
  check_case(world, d);
}

TEST_CASE("an ep group of one rank takes the single-rank path, bit for bit") {
  dist::Comm& world = ds::test::world();
  std::unique_ptr<dist::Comm> self = world.split(world.rank(), 0);   // one rank per group
  REQUIRE(self->size() == 1);
  const ModelArgs a = ep_args();
  Layer plain(a, ExpertParallel{}, nullptr);
  Layer one(a, ExpertParallel{self.get()}, nullptr);
  REQUIRE(one.moe->experts.size() == size_t(a.n_routed_experts));
  const Tensor u = random_rows(10, a.dim, 11 + uint64_t(world.rank()));
  const Tensor dy = random_rows(10, a.dim, 12);
  const ops::Context ctx;
  const MoEOptions o{true, 0.1f, 1.0f};
  Tensor y0, y1, du0, du1;
  MoESaved s0, s1;
  plain.moe->forward(ctx, u, 2, 5, o, y0, s0);
  one.moe->forward(ctx, u, 2, 5, o, y1, s1);
  CHECK(std::equal(y0.f32(), y0.f32() + y0.numel(), y1.f32()));
  CHECK(s1.a2a_bytes_sent == 0);
  plain.moe->backward(ctx, s0, dy, du0);
  one.moe->backward(ctx, s1, dy, du1);
  CHECK(std::equal(du0.f32(), du0.f32() + du0.numel(), du1.f32()));
  for (Param& p : one.store.params()) {
    const Param& q = plain.store.get(p.info.name);
    CHECK_MESSAGE(std::equal(p.grad.f32(), p.grad.f32() + p.grad.numel(), q.grad.f32()),
                  p.info.name);
  }
  CHECK(one.moe->a2a_bytes_total == 0);
}
