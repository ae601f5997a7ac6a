// Rollouts split over data-parallel ranks (lib/rl/rl_step.cpp): a rank generates a contiguous
// slice of the step's batch with GenerationConfig::first_seq = the slice's first global index,
// and must then sample exactly the tokens the whole batch gives those rows on one process
// (each draw is a function of (seed, sequence index, step) and each row's logits do not depend
// on the other rows). Without the offset the slice replays the whole batch's first streams.
#include <doctest/doctest.h>

#include <vector>

#include "../infer/engine_test_util.hpp"
#include "ds/infer/generator.hpp"

using namespace ds;
using namespace ds::infer;
using namespace ds::infer::test;

TEST_CASE("rollouts: a slice of the batch with first_seq samples as inside the whole batch") {
  auto m = make_tiny(true, 0);
  std::vector<std::vector<int32_t>> batch;   // 3 prompts x a group of 2, as GRPO lays them out
  for (uint64_t p = 0; p < 3; ++p)
    for (int g = 0; g < 2; ++g)
      batch.push_back(random_tokens(4 + 3 * p, m->args.vocab_size, 10 + p));
  GenerationConfig cfg;
  cfg.sampling.temperature = 1.0f;
  cfg.sampling.seed = 11;
  cfg.stop.max_new_tokens = 12;
  Engine whole(m->args, m->store, cpu_ctx(), {6, 64});
  const auto all = generate(whole, batch, cfg, nullptr);
  REQUIRE(all.size() == 6);
  CHECK(all[0].tokens != all[1].tokens);   // one stream per sequence, not per prompt

  for (const auto& [first, count] : {std::pair<size_t, size_t>{0, 2}, {2, 4}, {4, 2}}) {
    CAPTURE(first);
    const std::vector<std::vector<int32_t>> part(batch.begin() + long(first),
                                                 batch.begin() + long(first + count));
    Engine eng(m->args, m->store, cpu_ctx(), {int(count), 64});
    GenerationConfig c = cfg;
    c.first_seq = first;
    const auto got = generate(eng, part, c, nullptr);
    REQUIRE(got.size() == count);
    for (size_t i = 0; i < count; ++i) CHECK(got[i].tokens == all[first + i].tokens);
    if (first > 0) {   // the default (0) draws the whole batch's first streams instead
      const auto plain = generate(eng, part, cfg, nullptr);
      bool same = true;
      for (size_t i = 0; i < count; ++i) same = same && plain[i].tokens == all[first + i].tokens;
      CHECK_FALSE(same);
    }
  }
}
