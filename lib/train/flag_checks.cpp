// Numeric flag checks of the training tools (see include/ds/train/flag_checks.hpp).
#include "ds/train/flag_checks.hpp"

#include <cmath>

#include "ds/core/error.hpp"

namespace ds::train {

void check_flag_value(double v, const char* flag, bool positive) {
  if (!std::isfinite(v) || v < 0 || (positive && v == 0))
    DS_THROW(UsageError, "{} {}: expected a finite number {} 0", flag, v, positive ? ">" : ">=");
}

void check_flag_count(int64_t v, const char* flag, int64_t min) {
  if (v < min) DS_THROW(UsageError, "{} {}: expected an integer >= {}", flag, v, min);
}

}  // namespace ds::train
