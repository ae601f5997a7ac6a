// Batched log-likelihood scoring over Transformer::forward_logits, and over the inference
// engine with shared prefixes (see lm_scorer.hpp).
// reference: spec §6.1.
#include "ds/eval/lm_scorer.hpp"

#include <algorithm>
#include <numeric>

#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/eval/metrics.hpp"

namespace ds::eval {

namespace {

void check_request(const ScoreRequest& r, size_t index, const model::ModelArgs& a) {
  DS_CHECK_AS(UsageError,
              r.score_begin >= 1 && r.score_begin < r.score_end && r.score_end <= r.tokens.size(),
              "score request {}: bad target range [{}, {}) of {} tokens", index, r.score_begin,
              r.score_end, r.tokens.size());
  DS_CHECK_AS(UsageError, int64_t(r.score_end - 1) <= a.max_seq_len,
              "score request {}: {} input tokens exceed the model's max_seq_len {}", index,
              r.score_end - 1, a.max_seq_len);
  for (size_t i = 0; i < r.score_end; ++i)
    DS_CHECK_AS(FormatError, int64_t(r.tokens[i]) < a.vocab_size,
                "score request {}: token id {} >= vocab_size {}", index, r.tokens[i], a.vocab_size);
}

// Adds the target of the row predicting position `pos` (logits of position pos - 1).
void score_row(ScoreResult& s, const ScoreRequest& r, size_t pos, std::span<const float> row) {
  if (pos < r.score_begin || pos >= r.score_end) return;
  const uint32_t target = r.tokens[pos];
  s.logprob -= token_nll(row, target);
  const auto best = std::max_element(row.begin(), row.end());   // first maximum
  s.greedy = s.greedy && size_t(best - row.begin()) == size_t(target);
  ++s.n;
}

// One sequence's tokens for the engine: its slot, the tokens from position pos0 on, and the
// requests that score its rows (the group's, for a shared prefix; its own, for the rest).
struct Part {
  int slot = 0;
  std::vector<int32_t> tokens;
  size_t pos0 = 0;
  bool all_rows = false;       // logits of every position (else only of the last)
  std::vector<size_t> scorers;
};

// Runs the parts, at most `chunk` tokens of each per forward, and scores each returned row.
void run_parts(infer::Engine& eng, const std::vector<Part>& parts, size_t chunk,
               std::span<const ScoreRequest> requests, std::vector<ScoreResult>& out) {
  const size_t V = size_t(eng.args().vocab_size);
  for (size_t done = 0;; done += chunk) {
    std::vector<infer::SeqChunk> chunks;
    std::vector<const Part*> who;
    for (const Part& p : parts) {
      if (done >= p.tokens.size()) continue;
      const size_t n = std::min(chunk, p.tokens.size() - done);
      chunks.push_back({p.slot, std::span<const int32_t>(p.tokens).subspan(done, n), p.all_rows});
      who.push_back(&p);
    }
    if (chunks.empty()) return;
    const infer::StepOutput o = eng.forward(chunks);
    for (size_t k = 0; k < chunks.size(); ++k) {
      const int64_t rows = o.logit_row[k + 1] - o.logit_row[k];
      const size_t last = who[k]->pos0 + done + chunks[k].tokens.size() - 1;
      for (int64_t j = 0; j < rows; ++j) {   // row j: position last - (rows - 1 - j)
        const std::span<const float> row(o.logits.f32() + (o.logit_row[k] + j) * int64_t(V), V);
        const size_t pos = last - size_t(rows - 1 - j) + 1;   // the position it predicts
        for (size_t r : who[k]->scorers) score_row(out[r], requests[r], pos, row);
      }
    }
  }
}

// Tokens [0, n) common to every request of [b, e), n at most each one's score_begin.
size_t shared_prefix(std::span<const ScoreRequest> requests, size_t b, size_t e) {
  size_t n = requests[b].score_begin;
  for (size_t r = b + 1; r < e; ++r) {
    n = std::min(n, requests[r].score_begin);
    size_t k = 0;
    while (k < n && requests[r].tokens[k] == requests[b].tokens[k]) ++k;
    n = k;
  }
  return n;
}

ScoreResult score_rows(const float* logits, int64_t V, const ScoreRequest& r) {
  ScoreResult s;
  for (size_t t = r.score_begin; t < r.score_end; ++t)
    score_row(s, r, t, std::span<const float>(logits + int64_t(t - 1) * V, size_t(V)));
  return s;
}

}  // namespace

std::vector<ScoreResult> score_requests(model::Transformer& model, const ops::Context& ctx,
                                        std::span<const ScoreRequest> requests, size_t batch_size,
                                        const std::function<void(size_t)>& progress) {
  const model::ModelArgs& a = model.args();
  for (size_t i = 0; i < requests.size(); ++i) check_request(requests[i], i, a);
  batch_size = std::max<size_t>(batch_size, 1);
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    return requests[x].score_end > requests[y].score_end;
  });
  std::vector<ScoreResult> out(requests.size());
  Tensor logits;
  for (size_t b0 = 0; b0 < order.size(); b0 += batch_size) {
    check_interrupt();   // ds-eval: a no-op outside its InterruptScope
    const size_t B = std::min(batch_size, order.size() - b0);
    const int64_t T = int64_t(requests[order[b0]].score_end - 1);   // longest first
    Tensor tokens = Tensor::zeros({int64_t(B), T}, DType::i32);
    for (size_t b = 0; b < B; ++b) {
      const ScoreRequest& r = requests[order[b0 + b]];
      for (size_t t = 0; t + 1 < r.score_end; ++t)
        tokens.i32()[int64_t(b) * T + int64_t(t)] = int32_t(r.tokens[t]);
    }
    if (!logits.defined() || logits.shape() != Shape{int64_t(B), T, a.vocab_size})
      logits = Tensor();
    model.forward_logits(ctx, tokens, logits);
    Tensor host = logits;   // scored on the host
    if (logits.device() != Device::cpu) {
      host = Tensor::empty(logits.shape());
      host.copy_from(logits);
    }
    for (size_t b = 0; b < B; ++b)
      out[order[b0 + b]] = score_rows(host.f32() + int64_t(b) * T * a.vocab_size, a.vocab_size,
                                      requests[order[b0 + b]]);
    if (progress) progress(b0 + B);
  }
  return out;
}

std::vector<ScoreResult> score_shared_prefix(infer::Engine& engine,
                                             std::span<const ScoreRequest> requests,
                                             std::span<const size_t> group_sizes, int64_t chunk,
                                             const std::function<void(size_t)>& progress) {
  const model::ModelArgs& a = engine.args();
  for (size_t i = 0; i < requests.size(); ++i) {
    check_request(requests[i], i, a);
    DS_CHECK_AS(UsageError, int64_t(requests[i].score_end - 1) <= engine.capacity(),
                "score request {}: {} input tokens exceed the engine's capacity {}", i,
                requests[i].score_end - 1, engine.capacity());
  }
  DS_CHECK_AS(UsageError, chunk >= 1, "score_shared_prefix: chunk must be >= 1");
  std::vector<size_t> begin{0};   // group g: requests [begin[g], begin[g + 1])
  for (size_t n : group_sizes) {
    DS_CHECK_AS(UsageError, n >= 1 && int64_t(n) <= engine.slots(),
                "score_shared_prefix: a group of {} requests for {} engine slots", n,
                engine.slots());
    begin.push_back(begin.back() + n);
  }
  DS_CHECK_AS(UsageError, begin.back() == requests.size(),
              "score_shared_prefix: groups of {} requests in all, {} requests", begin.back(),
              requests.size());
  std::vector<ScoreResult> out(requests.size());
  for (size_t g0 = 0; g0 < group_sizes.size();) {
    check_interrupt();   // ds-eval: a no-op outside its InterruptScope
    size_t g1 = g0;      // the wave: groups [g0, g1), their requests in slots 0...
    while (g1 < group_sizes.size() && int64_t(begin[g1 + 1] - begin[g0]) <= engine.slots()) ++g1;
    std::vector<Part> prefixes, rests;
    std::vector<std::pair<int, int>> copies;   // (from, to) slots
    for (size_t g = g0; g < g1; ++g) {
      const size_t b = begin[g], e = begin[g + 1];
      const size_t P = shared_prefix(requests, b, e);
      const int first = int(b - begin[g0]);
      if (P > 0) {
        Part p{first, {}, 0, false, {}};
        p.tokens.assign(requests[b].tokens.begin(), requests[b].tokens.begin() + ptrdiff_t(P));
        for (size_t r = b; r < e; ++r) p.scorers.push_back(r);
        prefixes.push_back(std::move(p));
      }
      for (size_t r = b; r < e; ++r) {
        const int slot = int(r - begin[g0]);
        engine.reset(slot);
        if (P > 0 && r > b) copies.emplace_back(first, slot);
        const ScoreRequest& q = requests[r];
        if (q.score_end - 1 == P) continue;   // nothing of its own to run
        Part p{slot, {}, P, true, {r}};
        p.tokens.assign(q.tokens.begin() + ptrdiff_t(P),
                        q.tokens.begin() + ptrdiff_t(q.score_end - 1));
        rests.push_back(std::move(p));
      }
    }
    run_parts(engine, prefixes, size_t(chunk), requests, out);
    for (const auto& [from, to] : copies) engine.copy_slot(from, to);
    run_parts(engine, rests, size_t(chunk), requests, out);
    if (progress) progress(begin[g1]);
    g0 = g1;
  }
  return out;
}

}  // namespace ds::eval
