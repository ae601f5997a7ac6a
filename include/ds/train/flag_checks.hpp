// The training tools' checks of numeric flag values, shared so that ds-pretrain, ds-sft and
// ds-rl word them alike: UsageError naming the flag and the value.
#pragma once
#include <cstdint>

namespace ds::train {

// v finite and >= 0 (> 0 with `positive`): --lr, --balance-alpha, --mtp-lambda, ...
void check_flag_value(double v, const char* flag, bool positive = false);
// v >= min: step periods and counts (--save-every, --log-every, --stop-after, ...).
void check_flag_count(int64_t v, const char* flag, int64_t min);

}  // namespace ds::train
