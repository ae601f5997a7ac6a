// Generation over the engine: greedy decoding is reproducible (same tokens twice, and the same
// tokens alone as in a batch of prompts of different lengths); MTP speculative greedy decoding
// produces exactly plain greedy's tokens (drafts accepted only when equal to the main model's
// argmax, rejected drafts rolled back); models without an MTP module and sampling with
// speculative mode give clear errors; the PyTorch reference (tests/infer/torch_generate.py,
// float64, full recomputation) generates the same greedy tokens from the same weights,
// compared up to the first step whose top-2 logit gap is below 1e-3 (skipped without torch).
#include <doctest/doctest.h>

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "ds/core/error.hpp"
#include "ds/infer/generator.hpp"
#include "ds/infer/stop.hpp"
#include "ds/tokenizer/bpe_trainer.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "ds/model/checkpoint_io.hpp"
#include "engine_test_util.hpp"

using namespace ds;
using namespace ds::infer;
using namespace ds::infer::test;
namespace fs = std::filesystem;

namespace {

GenerationConfig greedy_cfg(size_t max_new, bool spec = false) {
  GenerationConfig c;
  c.stop.max_new_tokens = max_new;   // no stop ids: random weights would hit EOS at random
  c.speculative = spec;
  c.prefill_chunk = 5;               // exercise chunked prefill
  return c;
}

std::vector<std::vector<int32_t>> prompts_for(const model::ModelArgs& a) {
  return {random_tokens(7, a.vocab_size, 1), random_tokens(12, a.vocab_size, 2),
          random_tokens(3, a.vocab_size, 3)};
}

}  // namespace

TEST_CASE("generate: greedy is reproducible and batch-independent") {
  auto m = make_tiny(true);
  Engine eng(m->args, m->store, cpu_ctx(), {4, 64});
  const auto prompts = prompts_for(m->args);
  const auto a = generate(eng, prompts, greedy_cfg(20), nullptr);
  const auto b = generate(eng, prompts, greedy_cfg(20), nullptr);
  REQUIRE(a.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(a[i].tokens.size() == 20);
    CHECK(a[i].tokens == b[i].tokens);
    CHECK(a[i].reason == FinishReason::kLength);
    const auto alone = generate(eng, {prompts[i]}, greedy_cfg(20), nullptr);
    CHECK(alone[0].tokens == a[i].tokens);
  }
  CHECK(a[0].tokens != a[1].tokens);
}

TEST_CASE("generate: MTP speculative greedy == plain greedy") {
  auto m = make_tiny(true);
  Engine eng(m->args, m->store, cpu_ctx(), {4, 80});
  const auto prompts = prompts_for(m->args);
  GenerationStats sp, pl;
  const auto plain = generate(eng, prompts, greedy_cfg(24), nullptr, &pl);
  const auto spec = generate(eng, prompts, greedy_cfg(24, true), nullptr, &sp);
  for (size_t i = 0; i < prompts.size(); ++i) CHECK(spec[i].tokens == plain[i].tokens);
  MESSAGE("speculative stats " << sp.json());
  CHECK(sp.drafted > 0);
  CHECK(sp.generated_tokens == pl.generated_tokens);
  CHECK(sp.main_forwards <= pl.main_forwards);
  // every token after the prefill's first one is a verified draft or a main-model token
  CHECK(sp.generated_tokens == int64_t(prompts.size()) + sp.drafted + sp.accepted);
}

TEST_CASE("generate: speculative decoding that always accepts (MTP = main model copy)") {
  // Random weights almost never draft correctly, so the accept path is checked with a zeroed
  // lm_head: every logit (main and MTP) is 0, argmax ties go to id 0, every draft is accepted.
  auto m = make_tiny(true);
  m->store.get("lm_head.weight").value.zero_();
  Engine eng(m->args, m->store, cpu_ctx(), {2, 64});
  GenerationStats st;
  const auto out = generate(eng, {random_tokens(6, m->args.vocab_size, 5)}, greedy_cfg(9, true),
                            nullptr, &st);
  CHECK(out[0].tokens == std::vector<int32_t>(9, 0));   // all logits 0: argmax ties -> id 0
  CHECK(st.accepted == st.drafted);
  CHECK(st.drafted == 4);        // 1 token from prefill + 4 verify rounds of 2 tokens
  CHECK(st.main_forwards == 4);
  // one new token: nothing drafted, the speculative fields are still there (rate null)
  GenerationStats one, plain;
  generate(eng, {random_tokens(6, m->args.vocab_size, 5)}, greedy_cfg(1, true), nullptr, &one);
  generate(eng, {random_tokens(6, m->args.vocab_size, 5)}, greedy_cfg(1), nullptr, &plain);
  const auto j = nlohmann::json::parse(one.json());
  CHECK(j.at("drafted") == 0);
  CHECK(j.at("accepted") == 0);
  CHECK(j.at("acceptance_rate").is_null());
  CHECK_FALSE(nlohmann::json::parse(plain.json()).contains("drafted"));
  CHECK(nlohmann::json::parse(st.json()).at("acceptance_rate") == 1.0);
}

TEST_CASE("generate: a repeated prompt is prefilled once, its copies sample as if alone") {
  auto m = make_tiny(true);
  Engine eng(m->args, m->store, cpu_ctx(), {6, 64});
  const auto p = prompts_for(m->args);
  const std::vector<std::vector<int32_t>> batch = {p[0], p[1], p[0], p[0], p[1], p[2]};
  GenerationConfig c = greedy_cfg(12);
  c.sampling.temperature = 1.0f;
  c.sampling.seed = 11;
  GenerationStats shared, plain;
  const auto a = generate(eng, batch, c, nullptr, &shared);
  c.share_prefill = false;
  const auto b = generate(eng, batch, c, nullptr, &plain);
  CHECK(shared.shared_prefill_tokens == int64_t(2 * p[0].size() + p[1].size()));
  CHECK(plain.shared_prefill_tokens == 0);
  CHECK(shared.prompt_tokens == plain.prompt_tokens);
  CHECK(nlohmann::json::parse(shared.json()).at("shared_prefill_tokens") ==
        shared.shared_prefill_tokens);
  for (size_t i = 0; i < batch.size(); ++i) CHECK(a[i].tokens == b[i].tokens);
  // each copy draws from its own stream: the three samples of p[0] are not one sample thrice
  CHECK((a[0].tokens != a[2].tokens || a[0].tokens != a[3].tokens));
  // copies of a copied-from sequence in speculative (greedy) mode: the MTP inputs go along too
  const std::vector<std::vector<int32_t>> twice = {p[1], p[0], p[1]};
  GenerationStats sp;
  const auto g = generate(eng, twice, greedy_cfg(16), nullptr);
  const auto s = generate(eng, twice, greedy_cfg(16, true), nullptr, &sp);
  CHECK(sp.shared_prefill_tokens == int64_t(p[1].size()));
  CHECK(sp.drafted > 0);
  for (size_t i = 0; i < twice.size(); ++i) CHECK(s[i].tokens == g[i].tokens);
}

TEST_CASE("generate: a prefix common to all prompts is prefilled once") {
  auto m = make_tiny(true);
  Engine eng(m->args, m->store, cpu_ctx(), {5, 64}), other(m->args, m->store, cpu_ctx(), {5, 64});
  const int64_t V = m->args.vocab_size;
  const auto pre = random_tokens(12, V, 50);
  const auto with = [&](size_t n, uint64_t seed) {
    auto p = pre;
    for (int32_t t : random_tokens(n, V, seed)) p.push_back(t);
    return p;
  };
  // three distinct prompts after one 12-token prefix (one of them a single token longer), and
  // a repeat: 2 x 12 prefix tokens and the repeat's 15 are not computed
  const std::vector<std::vector<int32_t>> batch = {with(3, 51), with(5, 52), with(1, 53),
                                                   with(3, 51)};
  for (const bool spec : {false, true}) {
    INFO("speculative " << spec);
    GenerationConfig c = greedy_cfg(10, spec);
    c.sampling.temperature = spec ? 0.0f : 1.0f;
    c.sampling.seed = 3;
    c.min_shared_prefix = 24;
    GenerationStats shared, plain;
    const auto a = generate(eng, batch, c, nullptr, &shared);
    c.share_prefill = false;
    const auto b = generate(other, batch, c, nullptr, &plain);
    CHECK(shared.shared_prefill_tokens == 2 * 12 + 15);
    CHECK(plain.shared_prefill_tokens == 0);
    for (size_t i = 0; i < batch.size(); ++i) CHECK(a[i].tokens == b[i].tokens);
    if (spec) {   // the MTP caches hold the same: one more MTP step reads them alike
      CHECK(shared.drafted > 0);
      const std::vector<int32_t> probe = {7};
      const Tensor h = Tensor::zeros({1, m->args.dim});
      for (int slot = 0; slot < int(batch.size()); ++slot) {
        CHECK(eng.mtp_length(slot) == other.mtp_length(slot));
        const Tensor x = eng.mtp_forward({{slot, probe, h}});
        const Tensor y = other.mtp_forward({{slot, probe, h}});
        CHECK(rel_diff(x.f32(), y.f32(), V) < 1e-5);
      }
    }
    // below the threshold only the repeat is shared
    c.share_prefill = true;
    c.min_shared_prefix = 25;
    GenerationStats few;
    const auto f = generate(eng, batch, c, nullptr, &few);
    CHECK(few.shared_prefill_tokens == 15);
    for (size_t i = 0; i < batch.size(); ++i) CHECK(f[i].tokens == b[i].tokens);
  }
}

TEST_CASE("generate: speculative prefill runs the MTP block with the prompt, shared with copies") {
  // the MTP cache holds every prompt position but the last once the prefill is done (the last
  // takes the first generated token): computed round by round with the main prefill, and
  // copied with a repeated prompt or a common prefix rather than computed again
  auto m = make_tiny(true);
  const int64_t V = m->args.vocab_size;
  Engine eng(m->args, m->store, cpu_ctx(), {5, 64}), other(m->args, m->store, cpu_ctx(), {5, 64});
  const auto pre = random_tokens(13, V, 80);
  std::vector<std::vector<int32_t>> batch;
  for (const size_t n : {4, 1, 7, 4}) {
    batch.push_back(pre);
    for (int32_t t : random_tokens(n, V, 81 + (n == 4 ? 0 : n))) batch.back().push_back(t);
  }
  batch.push_back(random_tokens(1, V, 90));   // one token: nothing before the first draft
  GenerationConfig c = greedy_cfg(1, true);
  c.min_shared_prefix = 1;
  GenerationStats st;
  generate(eng, {batch.begin(), batch.end() - 1}, c, nullptr, &st);
  CHECK(st.shared_prefill_tokens == 2 * 13 + 17);
  for (int slot = 0; slot < 4; ++slot) {
    CHECK(eng.length(slot) == int64_t(batch[size_t(slot)].size()));
    CHECK(eng.mtp_length(slot) == int64_t(batch[size_t(slot)].size()) - 1);
  }
  generate(eng, {batch.back()}, c, nullptr);
  CHECK(eng.mtp_length(0) == 0);
  // the same MTP caches as each prompt alone, prefilled one token per round
  c.prefill_chunk = 1;
  c.share_prefill = false;
  const std::vector<int32_t> probe = {7};
  const Tensor h = Tensor::zeros({1, m->args.dim});
  generate(eng, {batch.begin(), batch.end() - 1}, greedy_cfg(1, true), nullptr);
  for (int slot = 0; slot < 4; ++slot) {
    generate(other, {batch[size_t(slot)]}, c, nullptr);
    CHECK(other.mtp_length(0) == eng.mtp_length(slot));
    const Tensor x = eng.mtp_forward({{slot, probe, h}});
    const Tensor y = other.mtp_forward({{0, probe, h}});
    CHECK(rel_diff(x.f32(), y.f32(), V) < 1e-5);
  }
}

TEST_CASE("generate: reuse_cache computes only what follows the cached tokens (a chat)") {
  auto m = make_tiny(true);
  const int64_t V = m->args.vocab_size;
  Engine eng(m->args, m->store, cpu_ctx(), {1, 96});
  for (const float temperature : {0.0f, 1.0f}) {
    INFO("temperature " << temperature);
    GenerationConfig c = greedy_cfg(8);
    c.sampling.temperature = temperature;
    c.reuse_cache = true;
    const auto fresh = [&](const std::vector<int32_t>& p) {   // a new engine, nothing kept
      Engine e(m->args, m->store, cpu_ctx(), {1, 96});
      GenerationConfig f = c;
      f.reuse_cache = false;
      return generate(e, {p}, f, nullptr)[0].tokens;
    };
    eng.reset(0);
    const auto p1 = random_tokens(10, V, 60);
    GenerationStats s1, s2, s3;
    const auto t1 = generate(eng, {p1}, c, nullptr, &s1)[0].tokens;
    CHECK(s1.cached_prompt_tokens == 0);
    // the cache holds the prompt and every generated token but the last (never fed back)
    std::vector<int32_t> held = p1;
    held.insert(held.end(), t1.begin(), t1.end() - 1);
    CHECK(std::vector<int32_t>(eng.tokens(0).begin(), eng.tokens(0).end()) == held);
    // the next turn: the conversation so far, then a new message
    std::vector<int32_t> p2 = p1;
    p2.insert(p2.end(), t1.begin(), t1.end());
    for (int32_t t : random_tokens(5, V, 61)) p2.push_back(t);
    const auto t2 = generate(eng, {p2}, c, nullptr, &s2)[0].tokens;
    CHECK(s2.cached_prompt_tokens == int64_t(held.size()));
    CHECK(t2 == fresh(p2));
    // an edited conversation keeps only the common start
    std::vector<int32_t> p3(p2.begin(), p2.begin() + 6);
    for (int32_t t : random_tokens(4, V, 62)) p3.push_back(t);
    const auto t3 = generate(eng, {p3}, c, nullptr, &s3)[0].tokens;
    CHECK(s3.cached_prompt_tokens == 6);
    CHECK(t3 == fresh(p3));
    CHECK(nlohmann::json::parse(s3.json()).at("cached_prompt_tokens") == 6);
  }
  // speculative decoding keeps nothing (no pending MTP inputs for kept positions)
  GenerationConfig sp = greedy_cfg(8, true);
  sp.reuse_cache = true;
  const auto p = random_tokens(10, V, 63);
  generate(eng, {p}, sp, nullptr);
  GenerationStats again;
  const auto a = generate(eng, {p}, sp, nullptr, &again);
  CHECK(again.cached_prompt_tokens == 0);
  CHECK(a[0].tokens == generate(eng, {p}, greedy_cfg(8), nullptr)[0].tokens);
}

TEST_CASE("generate: errors") {
  auto m0 = make_tiny(true, 0);
  Engine e0(m0->args, m0->store, cpu_ctx(), {1, 32});
  const std::vector<std::vector<int32_t>> p = {{1, 2, 3}};
  CHECK_THROWS_WITH_AS(generate(e0, p, greedy_cfg(4, true), nullptr),
                       "speculative decoding needs an MTP module (num_nextn_predict_layers = 0)",
                       UsageError);
  auto m = make_tiny(true);
  Engine e1(m->args, m->store, cpu_ctx(), {1, 32});
  GenerationConfig c = greedy_cfg(4, true);
  c.sampling.temperature = 0.7f;
  CHECK_THROWS_AS(generate(e1, p, c, nullptr), UsageError);
  CHECK_THROWS_AS(generate(e1, {{}}, greedy_cfg(4), nullptr), UsageError);
  CHECK_THROWS_AS(generate(e1, {{1}, {2}}, greedy_cfg(4), nullptr), UsageError);   // 2 > slots
  // prompt + max_new_tokens against the capacity, before anything runs: plain decoding never
  // feeds its last token back, speculative decoding's verify pair needs one more position
  Engine e2(m->args, m->store, cpu_ctx(), {2, 16});
  const std::vector<int32_t> ten = random_tokens(10, m->args.vocab_size, 70);
  CHECK(generate(e2, {ten}, greedy_cfg(7), nullptr)[0].tokens.size() == 7);
  CHECK(generate(e2, {ten}, greedy_cfg(6, true), nullptr)[0].tokens.size() == 6);
  CHECK_THROWS_WITH_AS(generate(e2, {ten}, greedy_cfg(8), nullptr),
                       "generate: prompt 0 (10 tokens) + max_new_tokens 8 needs more than the "
                       "engine's 16 cache positions", UsageError);
  CHECK_THROWS_AS(generate(e2, {ten}, greedy_cfg(7, true), nullptr), UsageError);
  CHECK_THROWS_AS(generate(e2, {ten}, greedy_cfg(size_t(-1)), nullptr), UsageError);
  // a failing batch leaves the cache as it was (reuse_cache truncates only once all is checked)
  GenerationConfig keep = greedy_cfg(3);
  keep.reuse_cache = true;
  generate(e2, {ten}, keep, nullptr);
  const std::vector<int32_t> held(e2.tokens(0).begin(), e2.tokens(0).end());
  const std::vector<int32_t> head(ten.begin(), ten.begin() + 4);
  CHECK_THROWS_AS(generate(e2, {head, {}}, keep, nullptr), UsageError);
  CHECK(std::vector<int32_t>(e2.tokens(0).begin(), e2.tokens(0).end()) == held);
  c.sampling.temperature = 0.7f;
  c.speculative = false;
  const auto s1 = generate(e1, p, c, nullptr), s2 = generate(e1, p, c, nullptr);
  CHECK(s1[0].tokens == s2[0].tokens);   // seeded sampling is reproducible too
}

TEST_CASE("generate: greedy tokens == PyTorch reference") {
  const char* py = "/usr/bin/python3";
  if (!fs::exists(py) ||
      std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
    MESSAGE("skipped: /usr/bin/python3 with torch not available");
    return;
  }
  for (bool q_lora : {true, false}) {
    auto m = make_tiny(q_lora, 1, 21);
    const fs::path dir =
        fs::temp_directory_path() / fmt::format("ds_engine_torch_{}_{}", ::getpid(), q_lora);
    fs::remove_all(dir);
    fs::create_directories(dir);
    model::save_model(m->store, m->args, dir, false);
    const std::vector<std::vector<int32_t>> prompts = {random_tokens(6, m->args.vocab_size, 31),
                                                       random_tokens(11, m->args.vocab_size, 32)};
    const size_t max_new = 10;
    const std::string cmd =
        fmt::format("{} {}/tests/infer/torch_generate.py --model {} --prompts '{}' --max-new {}",
                    py, DS_SOURCE_DIR, dir.string(), nlohmann::json(prompts).dump(), max_new);
    std::string text;
    FILE* f = popen(cmd.c_str(), "r");
    REQUIRE(f);
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, f)) text.append(buf, n);
    REQUIRE(pclose(f) == 0);
    Engine eng(m->args, m->store, cpu_ctx(), {2, 64});
    const auto ours = generate(eng, prompts, greedy_cfg(max_new), nullptr);
    std::istringstream lines(text);
    std::string line;
    for (size_t i = 0; i < prompts.size(); ++i) {
      REQUIRE(std::getline(lines, line));
      const auto j = nlohmann::json::parse(line);
      const auto ref = j["tokens"].get<std::vector<int32_t>>();
      const auto margins = j["margins"].get<std::vector<double>>();
      size_t n = 0;   // steps compared: up to and including the first near-tie
      while (n < ref.size() && (n == 0 || margins[n - 1] >= 1e-3)) ++n;
      MESSAGE(fmt::format("q_lora={} prompt {}: torch {} ours {} (compared {})", q_lora, i,
                          nlohmann::json(ref).dump(), nlohmann::json(ours[i].tokens).dump(), n));
      CHECK(n >= 5);
      CHECK(std::vector<int32_t>(ours[i].tokens.begin(), ours[i].tokens.begin() + long(n)) ==
            std::vector<int32_t>(ref.begin(), ref.begin() + long(n)));
    }
    fs::remove_all(dir);
  }
}

TEST_CASE("generate: sampling never picks head rows beyond the tokenizer's vocabulary") {
  // A model whose head is wider than its tokenizer (vocab padded to a multiple of 128, or a
  // smaller tokenizer): with TokenText given, only ids the tokenizer knows may be sampled.
  tok::BpeTrainerOptions to;
  to.vocab_size = 300;
  to.min_frequency = 1;
  to.threads = 1;
  tok::BpeTrainer trainer(to);
  trainer.add_text("the quick brown fox jumps over the lazy dog, again and again and again");
  const tok::Tokenizer tk = tok::Tokenizer::from_json(trainer.train(), "test tokenizer");
  auto m = make_tiny(true, 0);
  REQUIRE(int64_t(tk.vocab_size()) < m->args.vocab_size);
  const TokenText text(tk);
  Engine eng(m->args, m->store, cpu_ctx(), {2, 128});
  GenerationConfig c;
  c.sampling.temperature = 3.0f;   // flat distribution: padded ids would be hit often
  c.stop.max_new_tokens = 100;
  const auto out = generate(eng, {{1, 2, 3}, {4, 5}}, c, &text);
  for (const Completion& comp : out)
    for (int32_t id : comp.tokens) CHECK(id < int32_t(tk.vocab_size()));
}
