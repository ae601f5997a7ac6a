// Batched log-likelihood scoring over Transformer::forward_logits (see lm_scorer.hpp).
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

ScoreResult score_rows(const float* logits, int64_t V, const ScoreRequest& r) {
  ScoreResult s;
  for (size_t t = r.score_begin; t < r.score_end; ++t) {
    const float* row = logits + int64_t(t - 1) * V;
    const uint32_t target = r.tokens[t];
    s.logprob -= token_nll(std::span<const float>(row, size_t(V)), target);
    const float* best = std::max_element(row, row + V);   // first maximum
    s.greedy = s.greedy && int64_t(best - row) == int64_t(target);
    ++s.n;
  }
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

}  // namespace ds::eval
