// Batched generation over an Engine: prefill every prompt (in chunks of at most prefill_chunk
// tokens per sequence; a repeated prompt, as in GRPO groups or pass@k samples, and a prefix
// common to all the prompts are computed once and the cache copied), then decode one token
// per live sequence per step, sampling with infer::Sampler and ending each completion with
// infer::StopChecker; or, with speculative MTP decoding, draft one token with the MTP module
// and verify [t, draft] in one main forward (spec §2.7). Speculative mode is greedy only: a
// draft is accepted iff it equals the main model's argmax, so the output is exactly plain
// greedy decoding's.
// reference: DeepSeek-V3 generate.py (spec §2.4); paper §5.4.3 (MTP speculative decoding).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ds/infer/engine.hpp"
#include "ds/infer/sampler.hpp"
#include "ds/infer/stop.hpp"

namespace ds::infer {

struct GenerationConfig {
  SamplingOptions sampling;
  StopOptions stop;
  bool speculative = false;     // MTP draft + verify (greedy only, UsageError otherwise)
  int64_t prefill_chunk = 512;  // prompt tokens per sequence per prefill forward
  // Sampler sequence index of prompt 0: prompt i draws from stream (seed, first_seq + i, step),
  // so a slice of a larger batch (one data-parallel rank's prompts) samples exactly as it
  // would inside the whole batch. 0 for a whole batch.
  uint64_t first_seq = 0;
  // Identical prompts in one call are prefilled once: the other sequences get a copy of its
  // cache (Engine::copy_slot) and sample their first token, from their own stream, from its
  // logits. A prefix common to all the distinct prompts (a system prompt) runs once too, when
  // that saves at least min_shared_prefix tokens: it costs one more forward over the weights,
  // worth about that many tokens of compute. Off only to measure what sharing saves (bench/).
  bool share_prefill = true;
  int64_t min_shared_prefix = 128;
  // Keep what a slot's cache already holds of its prompt (Engine::tokens: the previous call's
  // prompt and completion, as in a chat's earlier turns) and compute only the rest. Plain
  // decoding only: with speculative decoding every slot starts empty (the MTP block's pending
  // inputs of the kept positions are not kept).
  bool reuse_cache = false;
};

struct Completion {
  std::vector<int32_t> tokens;  // generated ids (incl. a final stop id)
  std::string text;             // visible text, cut before a stop string
  FinishReason reason = FinishReason::kNone;
};

struct GenerationStats {
  int64_t prompt_tokens = 0;
  int64_t shared_prefill_tokens = 0;   // prompt tokens copied from another sequence's cache
  int64_t cached_prompt_tokens = 0;    // prompt tokens kept in the cache (reuse_cache)
  int64_t generated_tokens = 0;
  int64_t decode_tokens = 0;    // generated after the prefill (the first tokens excluded)
  double prefill_s = 0;         // wall time of the prefill forwards (+ MTP prefill)
  double decode_s = 0;          // wall time of everything after prefill
  int64_t main_forwards = 0;    // decode-phase main-model forward calls
  bool speculative = false;     // MTP drafting was on: drafted/accepted/rate are reported
  int64_t drafted = 0;          // speculative drafts proposed
  int64_t accepted = 0;         // drafts equal to the main model's token
  void add(const GenerationStats& o);
  std::string json() const;     // one line: tokens/s, acceptance rate, ...
};

// (prompt index, newly final text) while generating.
using StreamFn = std::function<void(size_t, std::string_view)>;

// Generates a completion for every prompt (at most engine.slots() prompts, each non-empty).
// text: visible bytes per id (nullptr: completions get no text; stop strings never match).
std::vector<Completion> generate(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                 const GenerationConfig& cfg, const TokenText* text,
                                 GenerationStats* stats = nullptr, const StreamFn& on_text = {});

}  // namespace ds::infer
