// Log-likelihood scoring with the model: each request is a token sequence and a range of
// target positions; the sum of ln p(target | prefix) over the range (and whether every
// target is the greedy argmax) is computed with Transformer::forward_logits. Requests are
// batched: sorted by length (stable), up to batch_size sequences per forward, right-padded
// (causal attention and per-token routing make padding invisible to the real positions).
// reference: spec §6.1 (perplexity-based evaluation); lm-evaluation-harness loglikelihood.
#pragma once
#include <cstddef>
#include <functional>
#include <span>
#include <vector>

#include "ds/model/transformer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::eval {

struct ScoreRequest {
  std::span<const tok::TokenId> tokens;   // the model reads tokens[0, score_end - 1)
  size_t score_begin = 1;                 // targets tokens[score_begin, score_end), >= 1
  size_t score_end = 0;
};

struct ScoreResult {
  double logprob = 0;    // sum of ln p over the targets
  size_t n = 0;          // targets scored
  bool greedy = true;    // every target was the argmax of its row
};

// progress(done_requests) after every batch. UsageError for an empty/invalid range or a
// sequence longer than the model's max_seq_len; FormatError for an id >= vocab_size.
std::vector<ScoreResult> score_requests(model::Transformer& model, const ops::Context& ctx,
                                        std::span<const ScoreRequest> requests, size_t batch_size,
                                        const std::function<void(size_t)>& progress = {});

}  // namespace ds::eval
