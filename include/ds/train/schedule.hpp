// Training schedules as pure functions of progress (steps, tokens seen), after the
// DeepSeek-V3 pre-training recipe (spec §4.3), with every breakpoint scaled to the run:
//   LR:    linear warm-up over warmup_steps, constant until constant_end * total tokens,
//          cosine down to lr * cosine_final_ratio until cosine_end, then two constant tails
//          (lr * tail1_ratio until tail1_end, lr * tail2_ratio to the end).
//   batch: linear ramp from batch_start to batch_size (sequences) over ramp_end * total.
//   MTP lambda: lambda_start until lambda_switch, then lambda_end.
//   bias speed gamma: gamma until gamma_stop, then 0.
// Fractions default to the paper's token counts divided by 14.8T.
#pragma once
#include <cstdint>

namespace ds::train {

struct ScheduleOptions {
  double lr = 2.2e-4;
  int64_t warmup_steps = -1;               // -1: auto (1% of the steps, at least 1)
  double constant_end = 10.0 / 14.8;
  double cosine_end = 14.3 / 14.8;
  double cosine_final_ratio = 0.1;         // 2.2e-5 / 2.2e-4
  double tail1_end = 14.633 / 14.8;
  double tail1_ratio = 0.1;                // 2.2e-5 / 2.2e-4
  double tail2_ratio = 7.3e-6 / 2.2e-4;
  int64_t batch_start = -1;                // sequences; -1: batch_size / 5 (3072 -> 15360)
  double ramp_end = 469.0 / 14800.0;       // fraction of tokens for the batch ramp (0 = none)
  double lambda_start = 0.3, lambda_end = 0.1, lambda_switch = 10.0 / 14.8;
  double gamma = 0.001, gamma_stop = 14.3 / 14.8;
};

// UsageError naming the ds-pretrain flag unless --lr >= 0, the ratios, MTP weights and gamma are
// finite and >= 0, the fractions of tokens lie in [0, 1] (a phase that ends before the previous
// one is empty), and --warmup-steps / --batch-start are -1 (auto) or set.
void validate(const ScheduleOptions& o);

// The length of a ds-pretrain run, with the batch ramp counted: the ramp's short early steps
// make N steps of the full batch too many for --tokens and too few tokens for --steps.
struct RunLength {
  int64_t steps = 0;
  int64_t tokens = 0;   // the schedules' 100%
};
// `tokens` > 0: the steps the ramped batches take to see at least `tokens` tokens (the last step
// may go past by less than one batch). `steps` > 0: the token count T whose schedule's `steps`
// ramped batches see T tokens (to within a batch's rounding), found by bisection: a longer
// run ramps over more tokens, so its steps hold fewer.
RunLength plan_run(const ScheduleOptions& o, int64_t batch_size, int64_t seq_len, int64_t steps,
                   int64_t tokens);

class Schedule {
 public:
  Schedule(const ScheduleOptions& o, int64_t total_tokens, int64_t total_steps,
           int64_t batch_size);
  double lr(int64_t step, int64_t tokens_seen) const;   // step is 0-based (the step about to run)
  int64_t batch(int64_t tokens_seen) const;             // sequences for the next step
  double mtp_lambda(int64_t tokens_seen) const;
  double gamma(int64_t tokens_seen) const;
  int64_t warmup_steps() const { return warmup_; }

 private:
  ScheduleOptions o_;
  int64_t total_tokens_, total_steps_, batch_size_, warmup_;
};

}  // namespace ds::train
