// Every collective of the world communicator with known values, run under mpirun with 2 and 4
// ranks (and directly with 1): sums, maxima, reduce-scatter (also in place), gathers with
// uneven and zero counts, all-to-all of bf16 bit patterns, broadcasts, a large bidirectional
// isend/irecv ring, split, and Topology::create's rank arithmetic for pp/dp/ep layouts.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "ds/core/error.hpp"
#include "mpi_test.hpp"

using ds::DType;
using ds::dist::Comm;
using ds::test::world;

namespace {

// Distinct bf16 bit patterns (some are NaNs and subnormals: they must travel unchanged).
uint16_t pattern(int src, int dst, int64_t i) {
  return uint16_t(src * 7919 + dst * 104729 + i * 31);
}

}  // namespace

TEST_CASE("all_reduce sums and maxima") {
  Comm& w = world();
  const int P = w.size(), r = w.rank();
  CHECK((w.backend() == (P > 1 ? "mpi" : "single")));
  std::vector<float> f = {float(r), 1.0f, -2.0f * float(r)};
  w.all_reduce_sum(f.data(), 3, DType::f32);
  const float tri = float(P * (P - 1) / 2);
  CHECK(f[0] == tri);
  CHECK(f[1] == float(P));
  CHECK(f[2] == -2.0f * tri);

  std::vector<int32_t> i32 = {r + 1, -r};
  w.all_reduce_sum(i32.data(), 2, DType::i32);
  CHECK(i32[0] == P * (P + 1) / 2);
  CHECK(i32[1] == -P * (P - 1) / 2);

  std::vector<int64_t> i64 = {int64_t(r) << 40, 3};
  w.all_reduce_sum(i64);   // the vector convenience
  CHECK(i64[0] == (int64_t(P * (P - 1) / 2) << 40));
  CHECK(i64[1] == 3 * P);

  std::vector<double> d = {0.5 * r, 1e-300};
  w.all_reduce_sum(d);
  CHECK(d[0] == doctest::Approx(0.5 * P * (P - 1) / 2));
  CHECK(d[1] == doctest::Approx(P * 1e-300));

  std::vector<float> mx = {float(r), -float(r), 7.0f};
  w.all_reduce_max(mx.data(), 3, DType::f32);
  CHECK(mx[0] == float(P - 1));
  CHECK(mx[1] == 0.0f);
  CHECK(mx[2] == 7.0f);
  int64_t mi = 100 - r;
  w.all_reduce_max(&mi, 1, DType::i64);
  CHECK(mi == 100);

  ds::Tensor t = ds::Tensor::zeros({2, 3});
  for (int64_t i = 0; i < 6; ++i) t.f32()[i] = float(i * (r + 1));
  w.all_reduce_sum(t);
  for (int64_t i = 0; i < 6; ++i) CHECK(t.f32()[i] == float(i * P * (P + 1) / 2));

  uint16_t bf[2] = {0, 0};
  CHECK_THROWS_AS(w.all_reduce_sum(bf, 2, DType::bf16), ds::InternalError);
  CHECK_THROWS_AS(w.all_reduce_max(bf, 2, DType::bf16), ds::InternalError);
  w.all_reduce_sum(f.data(), 0, DType::f32);   // zero elements: a no-op on every rank
}

TEST_CASE("reduce_scatter_sum: separate buffers and in place, large") {
  Comm& w = world();
  const int P = w.size(), r = w.rank();
  for (int64_t n : {int64_t(0), int64_t(5), int64_t(1) << 20}) {
    CAPTURE(n);
    std::vector<float> send(size_t(P * n)), recv(size_t(n), -1.0f);
    for (int64_t j = 0; j < P * n; ++j) send[size_t(j)] = float(r * 3 + (j % 1000));
    w.reduce_scatter_sum(send.data(), recv.data(), n, DType::f32);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = r * n + i;
      bad += recv[size_t(i)] != float(3 * P * (P - 1) / 2 + P * (j % 1000));
    }
    CHECK(bad == 0);
    w.reduce_scatter_sum(send.data(), send.data(), n, DType::f32);   // in place
    bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += send[size_t(i)] != recv[size_t(i)];
    CHECK(bad == 0);
  }
  std::vector<int64_t> s(size_t(P) * 2, 1), out(2);
  w.reduce_scatter_sum(s.data(), out.data(), 2, DType::i64);
  CHECK(out[0] == P);
  CHECK(out[1] == P);
}

TEST_CASE("reduce_scatter_sum and all_gather beyond one call's count: split, same results") {
  // DS_MPI_MAX_ELEMS stands in for MPI's INT_MAX (a billions-of-parameters ZeRO-1 stage)
  Comm& w = world();
  const int P = w.size(), r = w.rank();
  for (const int64_t n : {int64_t(5), int64_t(1001)}) {
    CAPTURE(n);
    std::vector<float> send(size_t(P * n));
    for (int64_t j = 0; j < P * n; ++j) send[size_t(j)] = float((r + 1) * (j % 997));
    const size_t un = static_cast<size_t>(n), all_n = static_cast<size_t>(P * n);
    std::vector<float> whole(un), split(un, -1.0f), in_place = send;
    w.reduce_scatter_sum(send.data(), whole.data(), n, DType::f32);
    ::setenv("DS_MPI_MAX_ELEMS", "7", 1);
    w.reduce_scatter_sum(send.data(), split.data(), n, DType::f32);
    w.reduce_scatter_sum(in_place.data(), in_place.data(), n, DType::f32);
    in_place.resize(un);
    std::vector<uint16_t> mine(un), all(all_n), gathered(all_n);
    for (int64_t i = 0; i < n; ++i) mine[size_t(i)] = uint16_t(r * 1000 + i);
    w.all_gather(mine.data(), all.data(), n, DType::bf16);
    std::copy(mine.begin(), mine.end(), gathered.begin() + r * n);
    w.all_gather(gathered.data() + r * n, gathered.data(), n, DType::bf16);   // in place
    ::unsetenv("DS_MPI_MAX_ELEMS");
    CHECK(split == whole);
    CHECK(in_place == whole);
    int bad = 0;
    for (int q = 0; q < P; ++q)
      for (int64_t i = 0; i < n; ++i) {
        bad += all[size_t(q * n + i)] != uint16_t(q * 1000 + i);
        bad += gathered[size_t(q * n + i)] != uint16_t(q * 1000 + i);
      }
    CHECK(bad == 0);
  }
}

TEST_CASE("all_gather and all_gather_v with uneven and zero counts, any dtype") {
  Comm& w = world();
  const int P = w.size(), r = w.rank();
  std::vector<uint16_t> mine(3), all(size_t(P) * 3);
  for (int i = 0; i < 3; ++i) mine[size_t(i)] = pattern(r, 0, i);
  w.all_gather(mine.data(), all.data(), 3, DType::bf16);
  for (int q = 0; q < P; ++q)
    for (int i = 0; i < 3; ++i) CHECK(all[size_t(q * 3 + i)] == pattern(q, 0, i));

  // In place: this rank's chunk already sits at its offset of the output.
  std::vector<int32_t> inplace(size_t(P) * 2, -1);
  inplace[size_t(r * 2)] = r;
  inplace[size_t(r * 2 + 1)] = 10 * r;
  w.all_gather(inplace.data() + r * 2, inplace.data(), 2, DType::i32);
  for (int q = 0; q < P; ++q)
    CHECK((inplace[size_t(q * 2)] == q && inplace[size_t(q * 2 + 1)] == 10 * q));

  // counts[q] = q: rank 0 contributes nothing.
  std::vector<int64_t> counts(static_cast<size_t>(P));
  std::iota(counts.begin(), counts.end(), 0);
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t(0));
  std::vector<uint8_t> part(static_cast<size_t>(r)), got(size_t(total), 0xEE);
  for (int i = 0; i < r; ++i) part[size_t(i)] = uint8_t(r * 16 + i);
  w.all_gather_v(part.data(), got.data(), counts, DType::u8);
  int64_t off = 0;
  for (int q = 0; q < P; ++q)
    for (int i = 0; i < q; ++i) CHECK(got[size_t(off++)] == uint8_t(q * 16 + i));

  // Every count zero.
  std::vector<int64_t> zeros(size_t(P), 0);
  w.all_gather_v(part.data(), got.data(), zeros, DType::u8);
  CHECK_THROWS_AS(w.all_gather_v(part.data(), got.data(), std::vector<int64_t>(size_t(P) + 1, 0),
                                 DType::u8), ds::InternalError);
}

TEST_CASE("all_to_all_v moves bf16 bit patterns with uneven and zero counts") {
  Comm& w = world();
  const int P = w.size(), r = w.rank();
  // Rank r sends (r + q) % 3 elements to rank q (zero for some pairs, itself included).
  std::vector<int64_t> sc(static_cast<size_t>(P)), rc(static_cast<size_t>(P));
  for (int q = 0; q < P; ++q) sc[size_t(q)] = (r + q) % 3 + (q == P - 1 ? 1000 : 0);
  const std::vector<int64_t> exchanged = w.all_to_all_counts(sc);
  for (int q = 0; q < P; ++q) rc[size_t(q)] = (q + r) % 3 + (r == P - 1 ? 1000 : 0);
  CHECK(exchanged == rc);
  std::vector<uint16_t> send, recv(size_t(std::accumulate(rc.begin(), rc.end(), int64_t(0))));
  for (int q = 0; q < P; ++q)
    for (int64_t i = 0; i < sc[size_t(q)]; ++i) send.push_back(pattern(r, q, i));
  w.all_to_all_v(send.data(), sc, recv.data(), rc, DType::bf16);
  size_t off = 0;
  int bad = 0;
  for (int q = 0; q < P; ++q)
    for (int64_t i = 0; i < rc[size_t(q)]; ++i) bad += recv[off++] != pattern(q, r, i);
  CHECK(bad == 0);

  // Beyond one call's int counts (DS_MPI_MAX_ELEMS stands in for INT_MAX): counted in units of
  // the counts' common divisor, each rank its own: rank 0's parts are multiples of 6, the
  // others' of 3 (24 to 66 elements a rank in all, 5 to 17 units, against a limit of 20)
  auto count = [](int64_t a, int64_t b) {   // what rank a sends to rank b
    return a == 0 || b == 0 ? 6 * ((a + b) % 3 + 2) : 3 * (2 * ((a + b) % 3) + 1);
  };
  for (int q = 0; q < P; ++q) {
    sc[size_t(q)] = count(r, q);
    rc[size_t(q)] = count(q, r);
  }
  send.clear();
  for (int q = 0; q < P; ++q)
    for (int64_t i = 0; i < sc[size_t(q)]; ++i) send.push_back(pattern(r, q, i));
  recv.assign(size_t(std::accumulate(rc.begin(), rc.end(), int64_t(0))), 0);
  ::setenv("DS_MPI_MAX_ELEMS", "20", 1);
  w.all_to_all_v(send.data(), sc, recv.data(), rc, DType::bf16);
  std::vector<int64_t> gc(size_t(P), 12);   // all_gather_v of 12 per rank: units of 12
  std::vector<uint16_t> mine(12), all(size_t(12 * P));
  for (int i = 0; i < 12; ++i) mine[size_t(i)] = pattern(r, 0, i);
  w.all_gather_v(mine.data(), all.data(), gc, DType::bf16);
  ::unsetenv("DS_MPI_MAX_ELEMS");
  off = 0;
  bad = 0;
  for (int q = 0; q < P; ++q)
    for (int64_t i = 0; i < rc[size_t(q)]; ++i) bad += recv[off++] != pattern(q, r, i);
  for (int q = 0; q < P; ++q)
    for (int i = 0; i < 12; ++i) bad += all[size_t(q * 12 + i)] != pattern(q, 0, i);
  CHECK(bad == 0);
  // counts with no common divisor past the limit: refused by name, not truncated
  if (P > 1) {
    std::vector<int64_t> odd(size_t(P), 0);
    odd[size_t((r + 1) % P)] = 20;   // to the next rank; from the previous one, 20 too
    std::vector<int64_t> odd_in(size_t(P), 0);
    odd_in[size_t((r + P - 1) % P)] = 20;
    odd[size_t(r)] = 1, odd_in[size_t(r)] = 1;   // and 1 to itself: gcd 1, 21 elements
    std::vector<uint16_t> big(21), big_in(21);
    ::setenv("DS_MPI_MAX_ELEMS", "20", 1);
    CHECK_THROWS_WITH_AS(w.all_to_all_v(big.data(), odd, big_in.data(), odd_in, DType::bf16),
                         doctest::Contains("all_to_all_v: element count 21 exceeds"),
                         ds::InternalError);
    ::unsetenv("DS_MPI_MAX_ELEMS");
  }

  // all_to_all_counts: out[q] = what rank q passed for this rank.
  std::vector<int64_t> in(static_cast<size_t>(P));
  for (int q = 0; q < P; ++q) in[size_t(q)] = 100 * r + q;
  const auto out = w.all_to_all_counts(in);
  for (int q = 0; q < P; ++q) CHECK(out[size_t(q)] == 100 * q + r);
}

TEST_CASE("broadcast from every root, bytes and tensors") {
  Comm& w = world();
  const int P = w.size(), r = w.rank();
  for (int root = 0; root < P; ++root) {
    std::vector<uint8_t> b(1001, uint8_t(r == root ? 0 : 0xFF));
    if (r == root)
      for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(i * 13 + root);
    w.broadcast(b.data(), int64_t(b.size()), DType::u8, root);
    int bad = 0;
    for (size_t i = 0; i < b.size(); ++i) bad += b[i] != uint8_t(i * 13 + root);
    CHECK(bad == 0);
  }
  ds::Tensor t = ds::Tensor::zeros({4}, DType::i32);
  if (r == P - 1)
    for (int i = 0; i < 4; ++i) t.i32()[i] = 40 + i;
  w.broadcast(t, P - 1);
  for (int i = 0; i < 4; ++i) CHECK(t.i32()[i] == 40 + i);
  CHECK_THROWS_AS(w.broadcast(t, P), ds::InternalError);
}

TEST_CASE("isend/irecv: 4 MB both ways around the ring at once") {
  Comm& w = world();
  const int P = w.size(), r = w.rank();
  if (P < 2) {
    CHECK_THROWS_AS(w.isend(nullptr, 0, DType::u8, 0, 0), ds::InternalError);
    return;
  }
  const int right = (r + 1) % P, left = (r + P - 1) % P;
  const int64_t n = int64_t(1) << 20;   // 4 MB of f32: beyond any eager limit
  std::vector<float> to_right(static_cast<size_t>(n)), to_left(static_cast<size_t>(n)),
      from_left(static_cast<size_t>(n)), from_right(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    to_right[size_t(i)] = float(r * 1000000 + i % 999983);
    to_left[size_t(i)] = -float(r * 1000000 + i % 999983);
  }
  {
    // Sends posted first on every rank: only non-blocking semantics avoid a deadlock here.
    ds::dist::Request s1 = w.isend(to_right.data(), n, DType::f32, right, 1);
    ds::dist::Request s2 = w.isend(to_left.data(), n, DType::f32, left, 2);
    ds::dist::Request r1 = w.irecv(from_left.data(), n, DType::f32, left, 1);
    ds::dist::Request r2 = w.irecv(from_right.data(), n, DType::f32, right, 2);
    CHECK(r1.pending());
    r2.wait();
    CHECK(!r2.pending());
    r2.wait();   // a second wait is a no-op
    CHECK(r2.test());   // so is a test of a completed request
    s1.wait();
    // s2 and r1 are waited by their destructors.
  }
  {
    // test(): false while the 4 MB send waits for its receive (rendezvous), true once received
    // (the request is then empty), never blocking
    std::vector<int> flag(1, 0);
    if (r == 0) {
      ds::dist::Request s = w.isend(to_right.data(), n, DType::f32, right, 3);
      const bool before = s.test();
      w.send(flag.data(), 1, DType::i32, right, 4);   // now rank 1 posts the receive
      w.recv(flag.data(), 1, DType::i32, right, 5);   // after it completed
      bool done = false;
      for (int i = 0; i < 100000 && !done; ++i) done = s.test();
      CHECK_FALSE(before);
      CHECK(done);
      CHECK_FALSE(s.pending());
    } else if (r == 1) {
      w.recv(flag.data(), 1, DType::i32, left, 4);
      w.recv(from_left.data(), n, DType::f32, left, 3);
      w.send(flag.data(), 1, DType::i32, left, 5);
    }
    w.barrier();
  }
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    bad += from_left[size_t(i)] != float(left * 1000000 + i % 999983);
    bad += from_right[size_t(i)] != -float(right * 1000000 + i % 999983);
  }
  CHECK(bad == 0);

  // Blocking pair in rank order (even ranks send first) and a bf16 message.
  std::vector<uint16_t> msg(77), in(77);
  for (int i = 0; i < 77; ++i) msg[size_t(i)] = pattern(r, right, i);
  if (r % 2 == 0) {
    w.send(msg.data(), 77, DType::bf16, right, 5);
    w.recv(in.data(), 77, DType::bf16, left, 5);
  } else {
    w.recv(in.data(), 77, DType::bf16, left, 5);
    w.send(msg.data(), 77, DType::bf16, right, 5);
  }
  for (int i = 0; i < 77; ++i) CHECK(in[size_t(i)] == pattern(left, r, i));
  CHECK_THROWS_AS(w.isend(msg.data(), 1, DType::bf16, P, 0), ds::InternalError);
  w.barrier();
}

TEST_CASE("split into groups; collectives inside them") {
  Comm& w = world();
  const int P = w.size(), r = w.rank();
  // Odd and even ranks, ordered by descending world rank.
  std::unique_ptr<Comm> g = w.split(r % 2, -r);
  const int n_same = (P + 1 - r % 2) / 2;
  CHECK(g->size() == n_same);
  int higher = 0;   // ranks of the same parity above this one come first
  for (int q = r + 2; q < P; q += 2) ++higher;
  CHECK(g->rank() == higher);
  int64_t sum = r;
  g->all_reduce_sum(&sum, 1, DType::i64);
  int64_t expect = 0;
  for (int q = r % 2; q < P; q += 2) expect += q;
  CHECK(sum == expect);
  // A split of a split, and a barrier in it.
  std::unique_ptr<Comm> h = g->split(0, g->rank());
  CHECK(h->size() == g->size());
  CHECK(h->rank() == g->rank());
  h->barrier();
}

TEST_CASE("Topology::create: rank arithmetic and groups for pp/dp/ep layouts") {
  Comm& w = world();
  const int P = w.size(), r = w.rank();
  std::vector<ds::dist::Layout> layouts = {{1, 1, 1}, {P, 1, 1}, {1, 1, P}};
  if (P % 2 == 0) layouts.push_back({2, 1, 1}), layouts.push_back({1, 1, 2});
  if (P % 4 == 0) layouts.push_back({2, 1, 2});
  for (const auto& l : layouts) {
    CAPTURE(l.pp);
    CAPTURE(l.ep);
    auto t = ds::test::topology(l);
    const int dp = P / l.pp;
    CHECK(t->layout().dp == dp);
    CHECK(t->world_size() == P);
    CHECK(t->rank() == r);
    CHECK(t->pp_rank() == r / dp);
    CHECK(t->dp_rank() == r % dp);
    CHECK(t->ep_rank() == (r % dp) % l.ep);
    CHECK(t->edp_rank() == (r % dp) / l.ep);
    CHECK(t->world_rank(t->pp_rank(), t->dp_rank()) == r);
    CHECK(t->is_first_stage() == (t->pp_rank() == 0));
    CHECK(t->is_last_stage() == (t->pp_rank() == l.pp - 1));
    CHECK(t->is_main() == (r == 0));
    CHECK(t->dp().size() == dp);
    CHECK(t->dp().rank() == t->dp_rank());
    CHECK(t->ep().size() == l.ep);
    CHECK(t->ep().rank() == t->ep_rank());
    CHECK(t->edp().size() == dp / l.ep);
    CHECK(t->edp().rank() == t->edp_rank());
    CHECK(t->pp().size() == l.pp);
    CHECK(t->pp().rank() == t->pp_rank());
    // Group membership: the sum of world ranks in each group, computed from the layout.
    auto group_sum = [&](Comm& c) {
      int64_t s = r;
      c.all_reduce_sum(&s, 1, DType::i64);
      return s;
    };
    int64_t dp_sum = 0, ep_sum = 0, edp_sum = 0, pp_sum = 0;
    for (int q = 0; q < P; ++q) {
      const int qp = q / dp, qd = q % dp;
      if (qp == t->pp_rank()) dp_sum += q;
      if (qp == t->pp_rank() && qd / l.ep == t->edp_rank()) ep_sum += q;
      if (qp == t->pp_rank() && qd % l.ep == t->ep_rank()) edp_sum += q;
      if (qd == t->dp_rank()) pp_sum += q;
    }
    CHECK(group_sum(t->dp()) == dp_sum);
    CHECK(group_sum(t->ep()) == ep_sum);
    CHECK(group_sum(t->edp()) == edp_sum);
    CHECK(group_sum(t->pp()) == pp_sum);
  }
  // Layouts that do not divide: UsageError naming the flag, on every rank alike.
  auto bad = [&](ds::dist::Layout l, const char* flag) {
    try {
      ds::test::topology(l);
      FAIL("no error for pp ", l.pp, " ep ", l.ep);
    } catch (const ds::UsageError& e) {
      CHECK(std::string(e.what()).find(flag) != std::string::npos);
    }
  };
  bad({P + 1, 1, 1}, "--pp");
  bad({1, 1, P + 1}, "--ep");
  if (P == 4) bad({2, 1, 4}, "--ep");
}
