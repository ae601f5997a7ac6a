// score_shared_prefix (the engine, a group's common prefix computed once and its cache copied)
// gives the scores of score_requests (full forwards of each sequence): groups with a common
// context and choices of several lengths, one choice of a single token (nothing of its own
// to run), no common first token, a common prefix shorter than a score_begin, a single
// request; chunked forwards; waves smaller than the request list; and its usage errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "../model/model_test_util.hpp"
#include "ds/core/error.hpp"
#include "ds/core/rng.hpp"
#include "ds/eval/lm_scorer.hpp"

using namespace ds;

namespace {

std::vector<tok::TokenId> random_ids(size_t n, int64_t V, uint64_t seed) {
  Rng rng(seed, 3);
  std::vector<tok::TokenId> t(n);
  for (auto& x : t) x = tok::TokenId(rng.below(uint64_t(V)));
  return t;
}

std::vector<tok::TokenId> concat(std::vector<tok::TokenId> a, const std::vector<tok::TokenId>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("score_shared_prefix == score_requests; its groups, chunks and waves") {
  model::ModelArgs a = model::testing::micro_args();
  a.vocab_size = 64;
  model::ParamStore store;
  model::Transformer tf(a, store);
  store.init(5);
  ops::Context ctx;
  ctx.threads = 1;
  const int64_t V = a.vocab_size;

  const auto context = random_ids(20, V, 1);
  std::vector<std::vector<tok::TokenId>> seqs;
  std::vector<std::pair<size_t, size_t>> ranges;   // (score_begin, score_end)
  std::vector<size_t> groups;
  // an item: one context, choices of 1, 3 and 6 tokens
  for (size_t len : {1u, 3u, 6u}) {
    seqs.push_back(concat(context, random_ids(len, V, 10 + len)));
    ranges.emplace_back(20, 20 + len);
  }
  groups.push_back(3);
  // no common first token
  seqs.push_back(random_ids(9, V, 20));
  seqs.push_back(random_ids(11, V, 21));
  seqs.back()[0] = (seqs[3][0] + 1) % tok::TokenId(V);
  ranges.emplace_back(4, 9);
  ranges.emplace_back(1, 11);
  groups.push_back(2);
  // one request alone
  seqs.push_back(random_ids(14, V, 30));
  ranges.emplace_back(6, 14);
  groups.push_back(1);
  // 12 common tokens, but one target range starts at 3: the shared prefix is 3 tokens
  const auto head = random_ids(12, V, 40);
  for (size_t k = 0; k < 4; ++k) {
    seqs.push_back(concat(head, random_ids(2 + k, V, 41 + k)));
    ranges.emplace_back(k == 2 ? 3 : 12, 14 + k);
  }
  groups.push_back(4);
  std::vector<eval::ScoreRequest> reqs;
  for (size_t i = 0; i < seqs.size(); ++i)
    reqs.push_back({seqs[i], ranges[i].first, ranges[i].second});

  const auto ref = eval::score_requests(tf, ctx, reqs, 3);
  const std::vector<std::pair<int, int64_t>> plans = {{4, 512}, {8, 4}, {5, 1}};   // slots, chunk
  for (const auto& [slots, chunk] : plans) {
    INFO("slots " << slots << ", chunk " << chunk);
    infer::Engine eng(a, store, ctx, infer::EngineOptions{slots, 32});
    std::vector<size_t> done;
    const auto got = eval::score_shared_prefix(eng, reqs, groups, chunk,
                                               [&](size_t k) { done.push_back(k); });
    REQUIRE(got.size() == ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      INFO("request " << i);
      CHECK(got[i].n == ref[i].n);
      CHECK(got[i].n == ranges[i].second - ranges[i].first);
      CHECK(std::fabs(got[i].logprob - ref[i].logprob) <= 1e-4 * std::fabs(ref[i].logprob));
      CHECK(got[i].greedy == ref[i].greedy);
    }
    CHECK(done.back() == reqs.size());
    CHECK(done.size() > 1);   // 10 requests never fit one wave of at most 8 slots
  }

  // usage errors: a group larger than the slots, groups not covering the requests, a sequence
  // past the capacity
  infer::Engine small(a, store, ctx, infer::EngineOptions{3, 32});
  infer::Engine short_cache(a, store, ctx, infer::EngineOptions{8, 16});
  const std::span<const eval::ScoreRequest> first6(reqs.data(), 6);
  CHECK_THROWS_WITH_AS(eval::score_shared_prefix(short_cache, reqs, groups),
                       doctest::Contains("20 input tokens exceed the engine's capacity 16"),
                       UsageError);
  CHECK_THROWS_WITH_AS(eval::score_shared_prefix(small, first6, std::vector<size_t>{3, 2}),
                       doctest::Contains("groups of 5 requests"), UsageError);
  CHECK_THROWS_WITH_AS(eval::score_shared_prefix(small, first6, std::vector<size_t>{2, 4}),
                       doctest::Contains("a group of 4 requests for 3 engine slots"),
                       UsageError);
}
