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

#include "ds/infer/engine.hpp"
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

// The same scores through the inference engine, with a shared prefix computed once. Requests
// come in groups of consecutive requests (group_sizes, summing to requests.size()), such as
// the choices of one multiple-choice item: a group's longest common prefix, at most its
// smallest score_begin, runs once, its latent cache is copied to the group's other sequences
// (Engine::copy_slot), and each sequence then runs only its own remaining tokens; k choices
// after one context cost one context. Waves of whole groups fill the engine's slots; a
// sequence runs at most `chunk` tokens per forward. Equal to score_requests up to rounding
// (the engine's absorbed attention). UsageError as score_requests, and for a group larger
// than the engine's slots or a sequence longer than its capacity.
std::vector<ScoreResult> score_shared_prefix(infer::Engine& engine,
                                             std::span<const ScoreRequest> requests,
                                             std::span<const size_t> group_sizes,
                                             int64_t chunk = 512,
                                             const std::function<void(size_t)>& progress = {});

}  // namespace ds::eval
