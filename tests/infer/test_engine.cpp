// Engine correctness: logits from the absorbed-MLA latent cache -- prefill of a prefix then
// token-by-token decode, and chunked prefill -- equal Transformer::forward_logits of the full
// sequence at every position (rel 1e-4 of max|logit|; measured ~1e-6) for the tiny preset with
// random weights, q_lora on and off, YaRN on; batched sequences of different lengths equal each
// sequence run alone (rel 1e-5); the MTP block's cached incremental logits equal the training
// MTPModule::forward over the whole sequence (rel 1e-4), also after a cache rollback; with
// weights rounded to BF16 the engine holds its linear weights as BF16 and still matches; a
// BF16 latent cache halves the bytes and stays within BF16 rounding of the F32 logits.
#include <doctest/doctest.h>

#include <fmt/format.h>

#include "ds/core/dtype.hpp"
#include "ds/core/error.hpp"
#include "ds/model/rope_yarn.hpp"
#include "engine_test_util.hpp"

using namespace ds;
using namespace ds::infer;
using namespace ds::infer::test;

namespace {

constexpr double kTol = 1e-4;

// Reference logits (T, V) of one sequence through the training forward.
Tensor full_logits(TinyModel& m, const std::vector<int32_t>& toks) {
  const int64_t T = int64_t(toks.size());
  Tensor ids = Tensor::empty({1, T}, DType::i32);
  std::copy(toks.begin(), toks.end(), ids.i32());
  Tensor logits;
  m.tf->forward_logits(cpu_ctx(), ids, logits);
  return logits.view({T, m.args.vocab_size});
}

// Feeds toks in the given chunk sizes (all_logits) and returns the (T, V) logits.
Tensor incremental_logits(Engine& eng, int slot, const std::vector<int32_t>& toks,
                          const std::vector<size_t>& chunks) {
  const int64_t V = eng.args().vocab_size, T = int64_t(toks.size());
  Tensor out = Tensor::empty({T, V});
  size_t at = 0;
  for (size_t n : chunks) {
    StepOutput o = eng.forward({{slot, std::span<const int32_t>(toks).subspan(at, n), true}});
    out.slice0(int64_t(at), int64_t(at + n)).copy_from(o.logits);
    at += n;
  }
  REQUIRE(at == toks.size());
  return out;
}

void check_incremental(bool q_lora, bool yarn) {
  auto m = make_tiny(q_lora, 1, 11, yarn);
  const auto toks = random_tokens(29, m->args.vocab_size, 3);
  const Tensor ref = full_logits(*m, toks);
  Engine eng(m->args, m->store, cpu_ctx(), {2, 64});
  std::vector<size_t> decode(19, 1);
  decode.insert(decode.begin(), 10);   // prefill 10, then 19 single-token decode steps
  for (const auto& plan : {decode, std::vector<size_t>{7, 5, 1, 16}, std::vector<size_t>{29}}) {
    eng.reset(1);
    const Tensor got = incremental_logits(eng, 1, toks, plan);
    const double d = rel_diff(got.f32(), ref.f32(), ref.numel());
    MESSAGE(
        fmt::format("q_lora={} yarn={} chunks={} rel diff {:.3g}", q_lora, yarn, plan.size(), d));
    CHECK(d < kTol);
    CHECK(eng.length(1) == 29);
  }
}

}  // namespace

TEST_CASE("engine: incremental absorbed decoding == full forward (q_lora on)") {
  check_incremental(true, false);
}
TEST_CASE("engine: incremental absorbed decoding == full forward (q_lora off)") {
  check_incremental(false, false);
}
TEST_CASE("engine: incremental absorbed decoding == full forward (YaRN)") {
  check_incremental(true, true);
}

TEST_CASE("engine: a batch of different lengths == each sequence alone") {
  auto m = make_tiny(true);
  const int64_t V = m->args.vocab_size;
  const std::vector<size_t> lens = {5, 13, 9};
  std::vector<std::vector<int32_t>> seqs;
  for (size_t i = 0; i < lens.size(); ++i) seqs.push_back(random_tokens(lens[i] + 4, V, 100 + i));
  // alone: prefill then 4 decode steps, logits of every step
  std::vector<Tensor> alone;
  Engine e1(m->args, m->store, cpu_ctx(), {1, 64});
  for (size_t i = 0; i < seqs.size(); ++i) {
    e1.reset(0);
    std::vector<size_t> plan(4, 1);
    plan.insert(plan.begin(), lens[i]);
    alone.push_back(incremental_logits(e1, 0, seqs[i], plan));
  }
  // batched: one prefill call with all three, then 4 batched decode calls (slots permuted)
  Engine eb(m->args, m->store, cpu_ctx(3), {4, 64});
  const int slot_of[3] = {2, 0, 3};
  std::vector<SeqChunk> pre;
  for (size_t i = 0; i < seqs.size(); ++i)
    pre.push_back({slot_of[i], std::span<const int32_t>(seqs[i]).first(lens[i]), true});
  StepOutput o = eb.forward(pre);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int64_t r0 = o.logit_row[i], n = int64_t(lens[i]);
    CHECK(o.logit_row[i + 1] - r0 == n);
    CHECK(rel_diff(o.logits.f32() + r0 * V, alone[i].f32(), n * V) < 1e-5);
  }
  for (size_t step = 0; step < 4; ++step) {
    std::vector<SeqChunk> dec;
    for (size_t i = 0; i < seqs.size(); ++i)
      dec.push_back(
          {slot_of[i], std::span<const int32_t>(seqs[i]).subspan(lens[i] + step, 1), false});
    StepOutput od = eb.forward(dec);
    REQUIRE(od.logits.size(0) == 3);
    for (size_t i = 0; i < seqs.size(); ++i)
      CHECK(rel_diff(od.logits.f32() + int64_t(i) * V,
                     alone[i].f32() + int64_t(lens[i] + step) * V, V) < 1e-5);
  }
  CHECK(eb.length(2) == 9);
  CHECK(eb.length(1) == 0);
}

TEST_CASE("engine: copy_slot gives another slot the same cached sequence") {
  auto m = make_tiny(true);
  const int64_t V = m->args.vocab_size;
  const auto seq = random_tokens(11, V, 41);
  const std::span<const int32_t> prompt = std::span<const int32_t>(seq).first(9);
  Engine e(m->args, m->store, cpu_ctx(), {3, 32});
  e.forward({{0, prompt, false}});
  e.forward({{2, random_tokens(4, V, 42), false}});   // stale contents the copy must replace
  e.copy_slot(0, 2);
  CHECK(e.length(2) == 9);
  CHECK(e.length(1) == 0);
  CHECK(std::equal(e.tokens(2).begin(), e.tokens(2).end(), prompt.begin(), prompt.end()));
  Engine alone(m->args, m->store, cpu_ctx(), {1, 32});
  alone.forward({{0, prompt, false}});
  for (size_t t = 9; t < seq.size(); ++t) {   // decode the same tokens on slots 0 and 2
    const std::span<const int32_t> next = std::span<const int32_t>(seq).subspan(t, 1);
    const StepOutput o = e.forward({{0, next, false}, {2, next, false}});
    const StepOutput r = alone.forward({{0, next, false}});
    CHECK(rel_diff(o.logits.f32() + V, r.logits.f32(), V) < 1e-5);
    CHECK(rel_diff(o.logits.f32(), r.logits.f32(), V) < 1e-5);
  }
  CHECK(e.length(2) == 11);
  CHECK(std::equal(e.tokens(2).begin(), e.tokens(2).end(), seq.begin(), seq.end()));
  e.truncate(2, 10);
  CHECK(std::equal(e.tokens(2).begin(), e.tokens(2).end(), seq.begin(), seq.end() - 1));
  e.copy_slot(1, 2);   // an empty slot empties the target
  CHECK(e.length(2) == 0);
  CHECK(e.tokens(2).empty());
  CHECK_THROWS(e.copy_slot(0, 3));
}

TEST_CASE("engine: MTP block with its latent cache == training MTPModule::forward") {
  auto m = make_tiny(true);
  const int64_t V = m->args.vocab_size;
  const auto toks = random_tokens(21, V, 9);
  const int64_t T = int64_t(toks.size());
  Engine eng(m->args, m->store, cpu_ctx(), {1, 64});
  StepOutput o = eng.forward({{0, toks, false}});
  const Tensor g = o.hidden;                                 // (T, C) post-norm hidden
  // reference: the training MTP module over positions 0..T-2 (ids x[1..T-1])
  model::ParamStore sb;
  sb.set_allocate(false);
  model::Embedding emb(sb, m->args);
  model::MTPModule mtp(sb, m->args, 1);
  for (model::Param& p : sb.params()) p.value = m->store.find(p.info.name)->value;
  for (auto& [name, buf] : sb.buffers())
    for (auto& [n2, b2] : m->store.buffers())
      if (n2 == name) buf.copy_from(b2);
  const ops::Context ctx = cpu_ctx();
  std::vector<int32_t> pos, sel;
  for (int64_t i = 0; i < T - 1; ++i) {
    pos.push_back(int32_t(i));
    sel.push_back(int32_t(i));
  }
  auto up = [](const std::vector<int32_t>& v) {
    Tensor t = Tensor::empty({int64_t(v.size())}, DType::i32);
    std::copy(v.begin(), v.end(), t.i32());
    return t;
  };
  model::SeqInfo seq{1, T - 1, up(pos), Tensor(), model::rope_freqs_tensor(ctx, m->args), {}};
  model::MTPSaved s;
  s.ids = up(std::vector<int32_t>(toks.begin() + 1, toks.end()));
  s.sel = up(sel);
  mtp.forward(ctx, emb, g, seq, model::MoEOptions{}, s);
  Tensor ref = Tensor::empty({T - 1, V});
  ops::linear_forward(ctx, s.g, m->store.find("lm_head.weight")->value, ref);
  // engine: MTP prefill of 6 positions, then one at a time; with a rollback in the middle
  auto feed = [&](int64_t p0, int64_t n) {
    Tensor hid = g.slice0(p0, p0 + n).clone();
    std::span<const int32_t> ids(toks.data() + p0 + 1, size_t(n));
    return eng.mtp_forward({{0, ids, hid}});
  };
  double worst = 0;
  Tensor l = feed(0, 6);
  worst = std::max(worst, rel_diff(l.f32(), ref.f32() + 5 * V, V));
  for (int64_t p = 6; p < T - 1; ++p) {
    l = feed(p, 1);
    worst = std::max(worst, rel_diff(l.f32(), ref.f32() + p * V, V));
    if (p == 12) {   // roll back three positions and recompute them
      eng.truncate(0, eng.length(0));   // no-op for the MTP cache (shorter than main)
      CHECK(eng.mtp_length(0) == 13);
      eng.truncate(0, 10);
      CHECK(eng.length(0) == 10);
      CHECK(eng.mtp_length(0) == 10);
      l = feed(10, 3);
      worst = std::max(worst, rel_diff(l.f32(), ref.f32() + 12 * V, V));
    }
  }
  MESSAGE(fmt::format("MTP incremental vs training forward rel diff {:.3g}", worst));
  CHECK(worst < kTol);
  CHECK(eng.mtp_length(0) == T - 1);
}

TEST_CASE("engine: cache footprint and bad inputs") {
  auto m = make_tiny(true);
  Engine eng(m->args, m->store, cpu_ctx(), {2, 16});
  const auto& a = m->args;
  CHECK(eng.cache_bytes_per_token() == 4 * (a.kv_lora_rank + a.qk_rope_head_dim) * 4);
  CHECK(eng.naive_cache_bytes_per_token() ==
        4 * a.n_heads * (a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim) * 4);
  const std::vector<int32_t> big(17, 1), bad = {int32_t(a.vocab_size)};
  CHECK_THROWS_AS(eng.forward({{0, big, false}}), UsageError);
  CHECK_THROWS_AS(eng.forward({{0, bad, false}}), UsageError);
  CHECK_THROWS_AS(eng.forward({{2, big, false}}), UsageError);
  const std::vector<int32_t> one = {3};
  CHECK_THROWS_AS(eng.forward({{0, one, false}, {0, one, false}}), UsageError);
  auto m0 = make_tiny(true, 0);
  Engine e0(m0->args, m0->store, cpu_ctx(), {1, 16});
  CHECK_FALSE(e0.has_mtp());
  CHECK_THROWS_WITH_AS(e0.mtp_forward({{0, one, Tensor::zeros({1, a.dim})}}),
                       "speculative decoding needs an MTP module (num_nextn_predict_layers = 0)",
                       UsageError);
}

TEST_CASE("engine: BF16-exact weights are held as BF16 and the logits still match") {
  auto m = make_tiny(true);
  {   // random F32 weights are not BF16-exact: nothing is converted
    Engine e(m->args, m->store, cpu_ctx(), {1, 32});
    CHECK(e.bf16_weight_count() == 0);
  }
  int64_t expect = 0;   // every matrix except the embedding and kv_b_proj (absorbed, F32)
  for (model::Param& p : m->store.params()) {
    float* v = p.value.f32();
    for (int64_t i = 0; i < p.value.numel(); ++i) v[i] = bf16_to_f32(f32_to_bf16(v[i]));
    const std::string& n = p.info.name;
    expect += p.value.ndim() == 2 && n.find("embed_tokens") == std::string::npos &&
              n.find("kv_b_proj") == std::string::npos;
  }
  REQUIRE(expect > 0);
  const auto toks = random_tokens(23, m->args.vocab_size, 5);
  const Tensor ref = full_logits(*m, toks);
  ops::Profiler prof;   // counts the SwiGLU ops the MLPs run
  ops::Context pc = cpu_ctx();
  pc.prof = &prof;
  Engine eng(m->args, m->store, pc, {1, 64});
  CHECK(eng.bf16_weight_count() == expect);
  for (const model::Param& p : m->store.params()) CHECK(p.value.dtype() == DType::f32);
  EngineOptions keep{1, 64};
  keep.bf16_weights = false;
  Engine e32(m->args, m->store, cpu_ctx(), keep);
  CHECK(e32.bf16_weight_count() == 0);
  std::vector<size_t> plan(15, 1);
  plan.insert(plan.begin(), 8);   // prefill 8, then 15 single-token decode steps
  const Tensor got = incremental_logits(eng, 0, toks, plan);
  const double d = rel_diff(got.f32(), ref.f32(), ref.numel());
  MESSAGE(fmt::format("bf16 weights ({} converted): rel diff {:.3g}", expect, d));
  // gate_proj and up_proj were copied as one stacked pair: the MLPs still run one GEMM each
  int64_t packed = 0, apart = 0;
  for (const auto& e : prof.entries()) {
    if (std::string(e.op) == "swiglu_packed_forward") packed += e.calls;
    if (std::string(e.op) == "swiglu_forward") apart += e.calls;
  }
  CHECK(packed > 0);
  CHECK(apart == 0);
  CHECK(d < kTol);
  const Tensor got32 = incremental_logits(e32, 0, toks, plan);
  CHECK(rel_diff(got.f32(), got32.f32(), got.numel()) < kTol);
  // MTP block (eh_proj and its layer converted too) vs the F32 engine on the same weights
  REQUIRE(eng.has_mtp());
  const std::vector<int32_t> next(toks.begin() + 1, toks.end());
  eng.reset(0);
  e32.reset(0);
  StepOutput o = eng.forward({{0, std::span<const int32_t>(toks).first(next.size()), false}});
  StepOutput o32 = e32.forward({{0, std::span<const int32_t>(toks).first(next.size()), false}});
  const Tensor lm = eng.mtp_forward({{0, next, o.hidden}});
  const Tensor lm32 = e32.mtp_forward({{0, next, o32.hidden}});
  const double dm = rel_diff(lm.f32(), lm32.f32(), lm32.numel());
  MESSAGE(fmt::format("bf16 MTP logits vs F32 engine: rel diff {:.3g}", dm));
  CHECK(dm < kTol);
}

TEST_CASE("engine: BF16 latent cache: half the bytes, logits within BF16 rounding, plans agree") {
  auto m = make_tiny(true);
  const auto& a = m->args;
  EngineOptions o{2, 64};
  o.kv_cache = DType::bf16;
  Engine eng(a, m->store, cpu_ctx(), o);
  const int64_t layers = a.n_layers + a.n_mtp_layers;
  CHECK(eng.cache_bytes_per_token() == 2 * (a.kv_lora_rank + a.qk_rope_head_dim) * layers);
  CHECK(eng.cache_bytes_allocated() == eng.cache_bytes_per_token() * 2 * 64);
  const auto toks = random_tokens(29, a.vocab_size, 7);
  const Tensor ref = full_logits(*m, toks);
  std::vector<size_t> decode(19, 1);
  decode.insert(decode.begin(), 10);
  Tensor first;
  for (const auto& plan : {decode, std::vector<size_t>{7, 5, 1, 16}, std::vector<size_t>{29}}) {
    eng.reset(1);
    const Tensor got = incremental_logits(eng, 1, toks, plan);
    const double d = rel_diff(got.f32(), ref.f32(), ref.numel());
    MESSAGE(fmt::format("bf16 cache chunks={} rel diff vs F32 forward {:.3g}", plan.size(), d));
    CHECK(d > 0);      // the cache really is rounded
    CHECK(d < 1e-2);   // BF16 keeps 8 bits: ~2^-9 per latent value
    if (!first.defined()) first = got.clone();
    // the cached values are rounded the same way whatever the chunking
    CHECK(rel_diff(got.f32(), first.f32(), got.numel()) < kTol);
  }
  EngineOptions bad{1, 16};
  bad.kv_cache = DType::i32;
  CHECK_THROWS_WITH_AS(Engine(a, m->store, cpu_ctx(), bad),
                       "engine: the KV cache must be F32 or BF16 (got I32)", UsageError);
}
