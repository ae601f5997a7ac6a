// The training tools' checks of numeric flag values, shared so that ds-pretrain, ds-sft and
// ds-rl word them alike: UsageError naming the flag and the value.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ds::train {

// v finite and >= 0 (> 0 with `positive`): --lr, --balance-alpha, --mtp-lambda, ...
void check_flag_value(double v, const char* flag, bool positive = false);
// v >= min: step periods and counts (--save-every, --log-every, --stop-after, ...).
void check_flag_count(int64_t v, const char* flag, int64_t min);
// --metrics FILE ("" = none) is not a directory, nor the run directory --out or one holding it,
// nor inside --out's checkpoints (step-*, hidden staging directories: published, rotated and
// deleted there), nor inside an input directory (path, flag) such as the --init checkpoint.
void check_metrics_path(const std::string& metrics, const std::string& out,
                        const std::vector<std::pair<std::string, const char*>>& inputs = {});
// The run directory --out neither inside the checkpoint --init starts from (a run directory's
// newest one) nor holding it: its checkpoints would land in the model read, --resume auto
// would take init's neighbours for the run's own, and --keep-last could delete --init.
void check_out_beside_init(const std::string& out, const std::string& init);

}  // namespace ds::train
