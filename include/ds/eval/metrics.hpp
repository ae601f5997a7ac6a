// Evaluation metrics: means with standard errors, accuracy, perplexity and bits per byte,
// per-token negative log-likelihood from a logits row, and the sliding-window plan that
// scores a long document in windows of at most W tokens with every token scored once.
// reference: spec §6.1 (BPB = Σ −ln p / (ln 2 × UTF-8 bytes)); HF "Perplexity of
// fixed-length models" (strided sliding window).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace ds::eval {

struct Estimate {
  double value = 0;
  double stderr_ = 0;   // standard error of `value`; 0 when n < 2
  size_t n = 0;
};

// Mean and sample standard deviation / sqrt(n) (Bessel-corrected std).
Estimate mean_stderr(std::span<const double> xs);
// correct / n with the binomial standard error sqrt(p (1 − p) / n). n = 0 gives {0, 0, 0}.
Estimate accuracy(size_t correct, size_t n);

// The unbiased pass@k estimate of one problem from n samples of which c are correct: the
// probability that k of them drawn without replacement contain a correct one,
// 1 − C(n − c, k) / C(n, k), as the product 1 − Π_{i = n−c+1..n} (1 − k / i) (no large
// binomials). 1 when n − c < k. InternalError unless 1 ≤ k ≤ n and c ≤ n.
// reference: Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. (1).
double pass_at_k(size_t n, size_t c, size_t k);

// −ln softmax(logits)[target] over all of `logits` (V), computed in double with the max
// subtracted. NumericsError on NaN or when the target's logit is -inf.
double token_nll(std::span<const float> logits, uint32_t target);

// Language-modelling totals over a corpus: Σ −ln p, scored tokens, UTF-8 bytes of the text.
struct LossTotals {
  double sum_nll = 0;   // nats
  uint64_t tokens = 0;
  uint64_t bytes = 0;
  void add(const LossTotals& o) { sum_nll += o.sum_nll; tokens += o.tokens; bytes += o.bytes; }
  double mean_nll() const;         // nats per token
  double perplexity() const;       // exp(mean_nll)
  double bits_per_byte() const;    // sum_nll / (ln 2 × bytes)
};

// Standard errors of a corpus's mean NLL, perplexity and bits per byte with its documents as
// the sampled units: the pooled means are ratios Σ s_d / Σ n_d, whose linearised (cluster)
// variance is D/(D − 1) Σ (s_d − R n_d)² / (Σ n_d)²; perplexity's by the delta method,
// exp(R) × se(R). Tokens within a document are not independent, so a per-token standard
// error would be far too small. NaN with fewer than two documents (or no bytes, for bpb).
struct LossStderrs {
  double nll = 0, perplexity = 0, bpb = 0;
};
LossStderrs loss_stderrs(std::span<const LossTotals> docs);

// One window of a sliding-window evaluation over tokens t[0..n). The model reads the inputs
// t[begin, end) (end − begin ≤ W); logit row r predicts t[begin + r + 1]. The targets whose
// losses count are t[score_begin, score_end), i.e. logit rows [score_begin − begin − 1,
// score_end − begin − 1). Every target in t[1..n) is scored by exactly one window, with at
// least W − S tokens of context unless fewer precede it in the document.
struct Window {
  size_t begin = 0, end = 0;
  size_t score_begin = 0, score_end = 0;
  size_t first_row() const { return score_begin - begin - 1; }
};

// Windows start every S tokens; the last one is shifted left to a full W inputs. t[0] (the
// BOS, when one is prepended) is context only. UsageError unless 1 ≤ S ≤ W.
std::vector<Window> sliding_windows(size_t n_tokens, size_t max_window, size_t stride);

}  // namespace ds::eval
