// LR, batch-size, MTP-weight and bias-speed schedules (see include/ds/train/schedule.hpp).
#include "ds/train/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

#include "ds/core/error.hpp"
#include "ds/train/flag_checks.hpp"

namespace ds::train {

void validate(const ScheduleOptions& o) {
  check_flag_value(o.lr, "--lr");   // 0 is allowed: a run that only writes initial weights
  const std::pair<double, const char*> nonneg[] = {
      {o.cosine_final_ratio, "--lr-cosine-final"}, {o.tail1_ratio, "--lr-tail1"},
      {o.tail2_ratio, "--lr-tail2"},               {o.lambda_start, "--mtp-lambda"},
      {o.lambda_end, "--mtp-lambda-late"},         {o.gamma, "--bias-update-speed"}};
  for (const auto& [v, flag] : nonneg) check_flag_value(v, flag);
  const std::pair<double, const char*> fractions[] = {
      {o.constant_end, "--lr-constant-end"}, {o.cosine_end, "--lr-cosine-end"},
      {o.tail1_end, "--lr-tail1-end"},       {o.ramp_end, "--batch-ramp-end"},
      {o.lambda_switch, "--mtp-lambda-switch"}, {o.gamma_stop, "--bias-update-stop"}};
  for (const auto& [v, flag] : fractions)
    if (!(v >= 0 && v <= 1))
      DS_THROW(UsageError, "{} {}: expected a fraction of the tokens in [0, 1]", flag, v);
  if (o.warmup_steps < -1)
    DS_THROW(UsageError, "--warmup-steps {}: expected -1 (auto) or >= 0", o.warmup_steps);
  if (o.batch_start < -1)
    DS_THROW(UsageError, "--batch-start {}: expected -1 or 0 (batch/5) or >= 1", o.batch_start);
}

Schedule::Schedule(const ScheduleOptions& o, int64_t total_tokens, int64_t total_steps,
                   int64_t batch_size)
    : o_(o), total_tokens_(std::max<int64_t>(1, total_tokens)),
      total_steps_(std::max<int64_t>(1, total_steps)), batch_size_(batch_size) {
  warmup_ = o.warmup_steps >= 0 ? o.warmup_steps
                                : std::max<int64_t>(1, total_steps_ / 100);
}

double Schedule::lr(int64_t step, int64_t tokens_seen) const {
  double peak = o_.lr;
  if (warmup_ > 0 && step < warmup_) return peak * double(step + 1) / double(warmup_);
  double f = double(tokens_seen) / double(total_tokens_);
  if (f < o_.constant_end) return peak;
  if (f < o_.cosine_end) {
    double t = (f - o_.constant_end) / std::max(1e-12, o_.cosine_end - o_.constant_end);
    double lo = peak * o_.cosine_final_ratio;
    return lo + 0.5 * (peak - lo) * (1.0 + std::cos(M_PI * t));
  }
  if (f < o_.tail1_end) return peak * o_.tail1_ratio;
  return peak * o_.tail2_ratio;
}

int64_t Schedule::batch(int64_t tokens_seen) const {
  int64_t start = o_.batch_start > 0 ? o_.batch_start : std::max<int64_t>(1, batch_size_ / 5);
  start = std::min(start, batch_size_);
  double ramp_tokens = o_.ramp_end * double(total_tokens_);
  if (ramp_tokens <= 0 || double(tokens_seen) >= ramp_tokens) return batch_size_;
  double t = double(tokens_seen) / ramp_tokens;
  return std::clamp<int64_t>(int64_t(std::llround(start + t * double(batch_size_ - start))),
                             start, batch_size_);
}

double Schedule::mtp_lambda(int64_t tokens_seen) const {
  double f = double(tokens_seen) / double(total_tokens_);
  return f < o_.lambda_switch ? o_.lambda_start : o_.lambda_end;
}

double Schedule::gamma(int64_t tokens_seen) const {
  double f = double(tokens_seen) / double(total_tokens_);
  return f < o_.gamma_stop ? o_.gamma : 0.0;
}

namespace {

// Tokens seen after `steps` steps of the schedule whose 100% is `total` tokens.
int64_t tokens_after(const ScheduleOptions& o, int64_t batch_size, int64_t seq_len, int64_t steps,
                     int64_t total) {
  const Schedule s(o, total, steps, batch_size);
  int64_t seen = 0;
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t b = s.batch(seen);
    if (b == batch_size) return seen + (steps - i) * batch_size * seq_len;   // the ramp is over
    seen += b * seq_len;
  }
  return seen;
}

}  // namespace

RunLength plan_run(const ScheduleOptions& o, int64_t batch_size, int64_t seq_len, int64_t steps,
                   int64_t tokens) {
  RunLength r;
  const int64_t full = batch_size * seq_len;   // (the caller has checked the products)
  if (tokens > 0) {
    const Schedule s(o, tokens, 1, batch_size);
    r.tokens = tokens;
    int64_t seen = 0;
    while (seen < tokens) {
      const int64_t b = s.batch(seen);
      if (b == batch_size) {   // the ramp is over: whole batches to the end
        r.steps += (tokens - seen + full - 1) / full;
        break;
      }
      seen += b * seq_len;
      r.steps++;
    }
    return r;
  }
  // the smallest T whose run sees at most T tokens: tokens_after(T) does not grow with T
  int64_t lo = 1, hi = steps * full;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (tokens_after(o, batch_size, seq_len, steps, mid) <= mid) hi = mid;
    else lo = mid + 1;
  }
  r.steps = steps;
  r.tokens = lo;
  return r;
}

}  // namespace ds::train
