// Next-token sampling from one row of logits: greedy argmax, temperature softmax, top-k
// and top-p (nucleus) truncation, with vocabulary padding rows masked out. Every draw is a
// pure function of (seed, sequence index, step), so a batch gives the same tokens however
// it is split or ordered.
// reference: spec §2.4 (generate.py: logits / T, softmax, categorical draw; T = 0 greedy).
// Dimension letters: V = logits rows (embedding rows, e.g. 129,280), N = valid vocabulary.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ds/tokenizer/tokenizer.hpp"

namespace ds::infer {

struct SamplingOptions {
  float temperature = 0;   // 0 = greedy argmax; otherwise softmax(logits / temperature)
  int top_k = 0;           // keep the k most likely ids (0 = off; 1 = greedy)
  float top_p = 1;         // keep the smallest most-likely set with mass >= top_p (1 = off)
  uint64_t seed = 965;     // generate.py's default seed
};

// UsageError naming the flag when a value is out of range (temperature < 0 or not finite,
// top_k < 0, top_p outside (0, 1]).
void validate(const SamplingOptions& opts);

// The RNG stream of draw (seq, step): rng_stream("sample") mixed with both indices.
uint64_t sample_stream(uint64_t seq, uint64_t step);

class Sampler {
 public:
  // valid_vocab N: ids >= N (padding rows of the head) are never chosen. 0 = no mask.
  // never: ids < N that are never chosen either (gaps in the tokenizer's ids: no text).
  Sampler(SamplingOptions opts, size_t valid_vocab, std::vector<uint32_t> never = {});

  // Picks a token from `logits` (V), V >= N. seq: the sequence (prompt) index, step: the
  // index of the generated token within that sequence. Greedy ties go to the lower id.
  // NumericsError when a logit is NaN or every candidate is -inf.
  tok::TokenId sample(std::span<const float> logits, uint64_t seq, uint64_t step) const;

  // The distribution `sample` draws from, (N) probabilities summing to 1 (one-hot for
  // greedy). Ids dropped by top-k / top-p get exactly 0.
  std::vector<double> distribution(std::span<const float> logits) const;

  const SamplingOptions& options() const { return opts_; }
  bool greedy() const { return opts_.temperature == 0 || opts_.top_k == 1; }

 private:
  size_t valid_size(std::span<const float> logits) const;
  // `logits` itself, or with the `never` ids at -inf (a copy in `scratch`)
  std::span<const float> masked(std::span<const float> logits, std::vector<float>& scratch) const;
  SamplingOptions opts_;
  size_t valid_vocab_;
  std::vector<uint32_t> never_;
};

// Index of the largest of the first `n` values (ties: lowest index). NumericsError on NaN.
size_t argmax(std::span<const float> logits, size_t n);

}  // namespace ds::infer
