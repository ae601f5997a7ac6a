// ops::OperandCache::refresh_plan: which entries an optimizer step can rewrite in place. An
// entry survives when each of its bound parts lies exactly over whole parameters of the step
// (one part over a stacked pair of parameters is split per parameter), each parameter bound
// once; unbound entries (FP8 codes), parts over memory that is no parameter of the step, and a
// second binding of a parameter are dropped. The plan's views are the entry's own storage.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "ds/ops/ops.hpp"

using namespace ds;
using ops::OperandCache;

TEST_CASE("operand cache: refresh_plan keeps exactly the entries the step can rewrite") {
  // three F32 "parameters": a and b adjacent (a stacked pair), c apart
  Tensor ab = Tensor::zeros({6, 4}), c = Tensor::zeros({3, 4}), other = Tensor::zeros({2, 4});
  const Tensor a = ab.slice0(0, 2), b = ab.slice0(2, 6);
  const std::vector<std::pair<const void*, int64_t>> params{
      {a.raw(), a.numel()}, {b.raw(), b.numel()}, {c.raw(), c.numel()}};
  OperandCache cache;
  auto make = [](const Shape& s) {
    return [s] { return std::vector<Tensor>{Tensor::zeros(s, DType::bf16)}; };
  };
  auto bind_to = [](const Tensor& w) {
    return [w](const std::vector<Tensor>& e) {
      return std::vector<OperandCache::Binding>{{w.raw(), w.numel(), e[0]}};
    };
  };
  const Tensor stacked = cache.get(ab, 0, make({6, 4}), bind_to(ab))[0];   // over a and b
  const Tensor cop = cache.get(c, 0, make({3, 4}), bind_to(c))[0];
  cache.get(c, 1, make({3, 4}));                                 // unbound: FP8 codes
  cache.get(other, 0, make({2, 4}), bind_to(other));             // not a parameter
  cache.get(c, 2, make({3, 4}), bind_to(c));   // c bound a second time (after kind 0: dropped)
  CHECK(cache.entries() == 5);
  CHECK(cache.made() == 5);
  const auto plan = cache.refresh_plan(params);
  CHECK(cache.entries() == 2);   // the stacked entry and c's
  REQUIRE(plan.size() == 3);
  // a's and b's views are the stacked entry's rows, c's the whole of its entry
  CHECK(plan.at(a.raw()).numel() == a.numel());
  CHECK(plan.at(a.raw()).raw() == stacked.raw());
  CHECK(plan.at(b.raw()).numel() == b.numel());
  CHECK(plan.at(b.raw()).raw() ==
        static_cast<const uint16_t*>(stacked.raw()) + a.numel());
  CHECK(plan.at(c.raw()).raw() == cop.raw());
  // the kept entries are found again, not made again
  cache.get(ab, 0, make({6, 4}), bind_to(ab));
  cache.get(c, 0, make({3, 4}), bind_to(c));
  CHECK(cache.made() == 5);
  // a part that covers only part of a parameter, or runs past the last one: dropped
  OperandCache partial;
  const Tensor half = ab.slice0(0, 1);
  partial.get(half, 0, make({1, 4}), bind_to(half));
  const Tensor past = Tensor::zeros({2, 4});
  partial.get(past, 0, make({2, 4}), bind_to(past));
  CHECK(partial.refresh_plan(params).empty());
  CHECK(partial.entries() == 0);
}
