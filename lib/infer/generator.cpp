// Batched generation loops (see generator.hpp): plain sampling decode and MTP speculative
// greedy decode with cache rollback of rejected drafts. Only host bookkeeping here: the
// numerics live in Engine (ops) and Sampler.
// reference: DeepSeek-V3 generate.py (spec §2.4); spec §2.7 (draft / verify / rollback).
#include "ds/infer/generator.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <span>

#include "ds/core/error.hpp"

namespace ds::infer {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Seq {
  size_t index = 0;                 // prompt index (output order)
  uint64_t stream = 0;              // sampler sequence index: cfg.first_seq + index
  int slot = 0;
  StopChecker stop;
  int32_t last = 0;                 // newest token, not yet in the main cache
  uint64_t step = 0;                // tokens generated so far
  std::vector<int32_t> mtp_tok;     // pending MTP inputs: t_{p+1} for positions p ...
  std::vector<Tensor> mtp_hid;      // ... and the main hidden rows g_p, (n_i, C) each
  bool copied = false;              // the prompt's cache is copied from an earlier sequence's
  std::vector<Seq*> copies;         // later sequences with this same prompt (shared prefill)
  explicit Seq(const StopOptions& o) : stop(o) {}
};

struct Ctx {
  Engine& eng;
  const GenerationConfig& cfg;
  const TokenText* text;
  const StreamFn& on_text;
  Sampler sampler;
  GenerationStats st;
};

struct SpanLess {
  bool operator()(std::span<const int32_t> a, std::span<const int32_t> b) const {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
  }
};

std::span<const float> row(const Tensor& logits, int64_t r) {
  const int64_t V = logits.size(1);
  return {logits.f32() + r * V, size_t(V)};
}

// Feeds one generated token to the sequence's stop checker; streams its final text.
void emit(Ctx& c, Seq& s, int32_t tok) {
  s.stop.push(tok, c.text ? c.text->bytes(tok) : std::string());
  ++s.step;
  ++c.st.generated_tokens;
  if (c.on_text) {
    const std::string piece = s.stop.take_stream();
    if (!piece.empty()) c.on_text(s.index, piece);
  }
}

Tensor concat_rows(const std::vector<Tensor>& parts, int64_t C) {
  int64_t n = 0;
  for (const Tensor& p : parts) n += p.size(0);
  Tensor out = Tensor::empty({n, C}, DType::f32, parts.front().device());
  int64_t r = 0;
  for (const Tensor& p : parts) {
    out.slice0(r, r + p.size(0)).copy_from(p);
    r += p.size(0);
  }
  return out;
}

// The first generated token, sampled from the prompt's last logits row.
void first_token(Ctx& c, Seq& s, std::span<const float> logits) {
  s.last = c.sampler.sample(logits, s.stream, s.step);
  if (c.cfg.speculative) s.mtp_tok.push_back(s.last);
  emit(c, s, s.last);
}

// Speculative mode: runs the MTP block over each sequence's pending positions whose input
// token is known, in one call for the sequences of `who`; the last hidden row stays pending
// when its token is not (the prompt's last position takes the first generated token; the
// last position of a shared prefix takes each prompt's own next token).
void mtp_prefill(Ctx& c, std::vector<Seq>& seqs, const std::vector<size_t>& who) {
  const int64_t C = c.eng.args().dim;
  std::vector<MtpChunk> mchunks;
  std::vector<Tensor> hid;
  hid.reserve(who.size());
  for (size_t i : who) {
    Seq& s = seqs[i];
    const int64_t n = int64_t(s.mtp_tok.size());
    if (n == 0) continue;
    const Tensor all = concat_rows(s.mtp_hid, C);   // (n or n + 1, C)
    hid.push_back(all.slice0(0, n));
    mchunks.push_back({s.slot, s.mtp_tok, hid.back()});
    s.mtp_hid.clear();
    if (all.size(0) > n) s.mtp_hid.push_back(all.slice0(n, all.size(0)).clone());
  }
  if (mchunks.empty()) return;
  (void)c.eng.mtp_forward(mchunks);   // fills the MTP caches; these drafts are not used
  for (size_t i : who) seqs[i].mtp_tok.clear();
}

// Runs the prompt tokens [done[i], end[i]) of each sequence i in rounds of at most
// prefill_chunk tokens per sequence (in speculative mode the MTP block follows each round, so
// its rows are bounded alike). A sequence whose whole prompt is then in samples its first
// token, and so do the later sequences with the same prompt, given a copy of its caches (and
// pending MTP input) first: they compute nothing themselves.
void prefill_rounds(Ctx& c, std::vector<Seq>& seqs,
                    const std::vector<std::vector<int32_t>>& prompts, std::vector<size_t>& done,
                    const std::vector<size_t>& end) {
  const size_t chunk = size_t(std::max<int64_t>(1, c.cfg.prefill_chunk));
  for (;;) {
    std::vector<SeqChunk> chunks;
    std::vector<size_t> who;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (done[i] >= end[i]) continue;
      const size_t n = std::min(chunk, end[i] - done[i]);
      chunks.push_back(
          {seqs[i].slot, std::span<const int32_t>(prompts[seqs[i].index]).subspan(done[i], n),
           false});
      who.push_back(i);
    }
    if (chunks.empty()) return;
    const StepOutput out = c.eng.forward(chunks);
    for (size_t k = 0; k < who.size(); ++k) {
      Seq& s = seqs[who[k]];
      const std::vector<int32_t>& p = prompts[s.index];
      const size_t d = done[who[k]], n = chunks[k].tokens.size();
      if (c.cfg.speculative) {   // MTP position q takes t_{q+1}, here while q + 1 < end
        s.mtp_hid.push_back(out.hidden.slice0(out.hidden_row[k], out.hidden_row[k + 1]).clone());
        for (size_t q = d; q < d + n && q + 1 < end[who[k]]; ++q) s.mtp_tok.push_back(p[q + 1]);
      }
      done[who[k]] = d + n;
    }
    if (c.cfg.speculative) mtp_prefill(c, seqs, who);
    for (size_t k = 0; k < who.size(); ++k) {
      Seq& s = seqs[who[k]];
      if (done[who[k]] < prompts[s.index].size()) continue;
      for (Seq* d : s.copies) {
        c.eng.copy_slot(s.slot, d->slot);
        d->mtp_hid = s.mtp_hid;   // the prompt's last row: read-only, shared, not cloned
      }
      const std::span<const float> logits = row(out.logits, out.logit_row[k]);
      first_token(c, s, logits);
      for (Seq* d : s.copies) first_token(c, *d, logits);
    }
  }
}

// Tokens every computed prompt starts with (a shared system prompt or few-shot preamble),
// at most the shortest one's length - 1, so that each still computes its own last row.
size_t common_prefix(const std::vector<Seq>& seqs,
                     const std::vector<std::vector<int32_t>>& prompts) {
  const std::vector<int32_t>* lead = nullptr;
  size_t n = 0;
  for (const Seq& s : seqs) {
    if (s.copied) continue;
    const std::vector<int32_t>& p = prompts[s.index];
    if (!lead) {
      lead = &p;
      n = p.size() - 1;
      continue;
    }
    n = std::min(n, p.size() - 1);
    size_t k = 0;
    while (k < n && p[k] == (*lead)[k]) ++k;
    n = k;
  }
  return n;
}

// Prefill of every prompt, each first token sampled. With share_prefill, a prefix common to
// all distinct prompts runs once, in the first one's slot, and is copied to the others before
// they run the rest, when it saves at least min_shared_prefix tokens.
// done[i]: the positions of sequence i already in its cache (reuse_cache).
void prefill(Ctx& c, std::vector<Seq>& seqs, const std::vector<std::vector<int32_t>>& prompts,
             std::vector<size_t> done) {
  const auto t0 = Clock::now();
  std::vector<size_t> end(seqs.size(), 0);
  std::vector<size_t> computed;   // the sequences that run their prompt
  bool fresh = true;              // nothing kept: a common prefix may be shared
  for (size_t i = 0; i < seqs.size(); ++i)
    if (!seqs[i].copied) {
      computed.push_back(i);
      fresh = fresh && done[i] == 0;
    }
  const size_t P = c.cfg.share_prefill && fresh ? common_prefix(seqs, prompts) : 0;
  if (P > 0 && (computed.size() - 1) * P >= size_t(std::max<int64_t>(1, c.cfg.min_shared_prefix))) {
    Seq& lead = seqs[computed[0]];
    end[computed[0]] = P;
    prefill_rounds(c, seqs, prompts, done, end);
    for (size_t k = 1; k < computed.size(); ++k) {
      Seq& s = seqs[computed[k]];
      c.eng.copy_slot(lead.slot, s.slot);
      done[computed[k]] = P;
      if (c.cfg.speculative) {   // positions < P - 1 are in the copied MTP cache; P - 1 takes
        s.mtp_hid = lead.mtp_hid;  // its own next token
        s.mtp_tok = {prompts[s.index][P]};
      }
    }
    if (c.cfg.speculative) lead.mtp_tok = {prompts[lead.index][P]};
    c.st.shared_prefill_tokens += int64_t((computed.size() - 1) * P);
  }
  for (size_t i : computed) end[i] = prompts[seqs[i].index].size();
  prefill_rounds(c, seqs, prompts, done, end);
  c.st.prefill_s += seconds_since(t0);
}

void decode_plain(Ctx& c, std::vector<Seq*> live) {
  while (!live.empty()) {
    std::vector<SeqChunk> chunks;
    for (Seq* s : live) chunks.push_back({s->slot, std::span<const int32_t>(&s->last, 1), false});
    const StepOutput out = c.eng.forward(chunks);
    ++c.st.main_forwards;
    for (size_t k = 0; k < live.size(); ++k) {
      Seq& s = *live[k];
      s.last = c.sampler.sample(row(out.logits, out.logit_row[k]), s.stream, s.step);
      emit(c, s, s.last);
    }
    std::erase_if(live, [](Seq* s) { return s->stop.done(); });
  }
}

// Verifies [last, draft] for one sequence given the main logits/hidden rows of both.
void verify_one(Ctx& c, Seq& s, int32_t draft, const StepOutput& out, size_t k) {
  const int64_t h0 = out.hidden_row[k];
  const int32_t y1 = c.sampler.sample(row(out.logits, out.logit_row[k]), s.stream, s.step);
  ++c.st.drafted;
  s.mtp_tok.clear();
  s.mtp_hid.clear();
  if (y1 != draft) {   // reject: drop the draft's cache entry, keep the main model's token
    c.eng.truncate(s.slot, c.eng.length(s.slot) - 1);
    s.mtp_tok = {y1};
    s.mtp_hid = {out.hidden.slice0(h0, h0 + 1).clone()};
    s.last = y1;
    emit(c, s, y1);
    return;
  }
  ++c.st.accepted;
  emit(c, s, y1);
  if (s.stop.done()) return;
  const int32_t y2 = c.sampler.sample(row(out.logits, out.logit_row[k] + 1), s.stream, s.step);
  s.mtp_tok = {y1, y2};
  s.mtp_hid = {out.hidden.slice0(h0, h0 + 2).clone()};
  s.last = y2;
  emit(c, s, y2);
}

void decode_speculative(Ctx& c, std::vector<Seq*> live) {
  const int64_t C = c.eng.args().dim;
  while (!live.empty()) {
    std::vector<Tensor> hid(live.size());
    std::vector<MtpChunk> mchunks;
    for (size_t k = 0; k < live.size(); ++k) {
      hid[k] = concat_rows(live[k]->mtp_hid, C);
      mchunks.push_back({live[k]->slot, live[k]->mtp_tok, hid[k]});
    }
    const Tensor dl = c.eng.mtp_forward(mchunks);            // (live, V) draft logits
    std::vector<int32_t> pair(2 * live.size());
    std::vector<SeqChunk> chunks;
    for (size_t k = 0; k < live.size(); ++k) {
      pair[2 * k] = live[k]->last;
      pair[2 * k + 1] = int32_t(argmax(row(dl, int64_t(k)), size_t(dl.size(1))));   // draft
      chunks.push_back({live[k]->slot, std::span<const int32_t>(pair).subspan(2 * k, 2), true});
    }
    const StepOutput out = c.eng.forward(chunks);
    ++c.st.main_forwards;
    for (size_t k = 0; k < live.size(); ++k) verify_one(c, *live[k], pair[2 * k + 1], out, k);
    std::erase_if(live, [](Seq* s) { return s->stop.done(); });
  }
}

}  // namespace

void GenerationStats::add(const GenerationStats& o) {
  prompt_tokens += o.prompt_tokens;
  shared_prefill_tokens += o.shared_prefill_tokens;
  cached_prompt_tokens += o.cached_prompt_tokens;
  generated_tokens += o.generated_tokens;
  decode_tokens += o.decode_tokens;
  prefill_s += o.prefill_s;
  decode_s += o.decode_s;
  main_forwards += o.main_forwards;
  speculative = speculative || o.speculative;
  drafted += o.drafted;
  accepted += o.accepted;
}

std::string GenerationStats::json() const {
  // prefill speed over the prompt tokens the model computed (not those copied or kept)
  const int64_t computed = prompt_tokens - shared_prefill_tokens - cached_prompt_tokens;
  const double pf = prefill_s > 0 ? double(computed) / prefill_s : 0.0;
  const double dec = decode_s > 0 ? double(decode_tokens) / decode_s : 0.0;
  std::string s = fmt::format(
      "{{\"prompt_tokens\":{},\"shared_prefill_tokens\":{},\"cached_prompt_tokens\":{},"
      "\"generated_tokens\":{},\"prefill_s\":{:.6f},\"decode_s\":{:.6f},"
      "\"prefill_tokens_per_s\":{:.2f},\"decode_tokens_per_s\":{:.2f},\"main_forwards\":{}",
      prompt_tokens, shared_prefill_tokens, cached_prompt_tokens, generated_tokens, prefill_s,
      decode_s, pf, dec, main_forwards);
  if (speculative)   // no draft yet (every sequence ended on its first token): rate null
    s += fmt::format(",\"drafted\":{},\"accepted\":{},\"acceptance_rate\":{}", drafted,
                     accepted,
                     drafted > 0 ? fmt::format("{:.4f}", double(accepted) / double(drafted))
                                 : std::string("null"));
  return s + "}";
}

std::vector<Completion> generate(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                 const GenerationConfig& cfg, const TokenText* text,
                                 GenerationStats* stats, const StreamFn& on_text) {
  DS_CHECK_AS(UsageError, int64_t(prompts.size()) <= engine.slots(),
              "generate: {} prompts for {} cache slots", prompts.size(), engine.slots());
  size_t valid_vocab = size_t(engine.args().vocab_size);   // padded head rows are never sampled
  if (text) valid_vocab = std::min(valid_vocab, text->vocab_size());
  Ctx c{engine, cfg, text, on_text,
        Sampler(cfg.sampling, valid_vocab, text ? text->missing_ids() : std::vector<uint32_t>{}),
        {}};
  c.st.speculative = cfg.speculative;
  if (cfg.speculative) {
    DS_CHECK_AS(UsageError, engine.has_mtp(),
                "speculative decoding needs an MTP module (num_nextn_predict_layers = 0)");
    DS_CHECK_AS(UsageError, c.sampler.greedy(),
                "--speculative mtp supports greedy decoding only (use --temperature 0)");
  }
  // Checked before anything is computed or a slot truncated: a batch that cannot finish
  // fails here rather than after its prefill. The last token is never fed back; a speculative
  // verify pair takes one more position.
  DS_CHECK_AS(UsageError, cfg.stop.max_new_tokens >= 1, "generate: max_new_tokens must be >= 1");
  for (size_t i = 0; i < prompts.size(); ++i) {
    DS_CHECK_AS(UsageError, !prompts[i].empty(), "generate: prompt {} is empty", i);
    const uint64_t cap = uint64_t(engine.capacity()), n = cfg.stop.max_new_tokens;
    DS_CHECK_AS(UsageError, n <= cap && prompts[i].size() <= cap - n + (cfg.speculative ? 0 : 1),
                "generate: prompt {} ({} tokens) + max_new_tokens {} needs more than the "
                "engine's {} cache positions{}", i, prompts[i].size(), n, cap,
                cfg.speculative ? " (speculative: one more for the verify pair)" : "");
  }
  std::vector<Seq> seqs;
  seqs.reserve(prompts.size());   // no reallocation: Seq::copies points into it
  std::vector<size_t> kept(prompts.size(), 0);   // cached positions that the prompt repeats
  std::map<std::span<const int32_t>, size_t, SpanLess> first;   // prompt -> its first sequence
  for (size_t i = 0; i < prompts.size(); ++i) {
    seqs.emplace_back(cfg.stop);
    seqs.back().index = i;
    seqs.back().stream = cfg.first_seq + i;
    seqs.back().slot = int(i);
    if (cfg.reuse_cache && !cfg.speculative) {   // all but the last prompt token (its logits)
      const std::span<const int32_t> held = engine.tokens(int(i));
      const size_t n = std::min(held.size(), prompts[i].size() - 1);
      while (kept[i] < n && held[kept[i]] == prompts[i][kept[i]]) ++kept[i];
    }
    engine.truncate(int(i), int64_t(kept[i]));
    c.st.prompt_tokens += int64_t(prompts[i].size());
    if (!cfg.share_prefill) continue;
    const auto [it, fresh] = first.try_emplace(std::span<const int32_t>(prompts[i]), i);
    if (fresh) continue;
    seqs.back().copied = true;
    seqs[it->second].copies.push_back(&seqs.back());
    c.st.shared_prefill_tokens += int64_t(prompts[i].size());
    kept[i] = 0;   // the copy replaces what the slot held
  }
  for (size_t i = 0; i < seqs.size(); ++i) c.st.cached_prompt_tokens += int64_t(kept[i]);
  prefill(c, seqs, prompts, kept);
  const auto t0 = Clock::now();
  const int64_t before = c.st.generated_tokens;
  std::vector<Seq*> live;
  for (Seq& s : seqs)
    if (!s.stop.done()) live.push_back(&s);
  if (cfg.speculative) decode_speculative(c, live);
  else decode_plain(c, live);
  c.st.decode_s += seconds_since(t0);
  c.st.decode_tokens += c.st.generated_tokens - before;
  std::vector<Completion> out(seqs.size());
  for (Seq& s : seqs) {
    Completion& o = out[s.index];
    o.tokens.assign(s.stop.tokens().begin(), s.stop.tokens().end());
    o.text = s.stop.text();
    o.reason = s.stop.finish_reason();
    const std::string tail = s.stop.take_stream();
    if (on_text && !tail.empty()) on_text(s.index, tail);
  }
  if (stats) stats->add(c.st);
  return out;
}

}  // namespace ds::infer
