// The external reward command of ds-rl: `sh -c COMMAND` started once per rollout batch, one
// JSON line {"prompt", "completion", "reference"} per completion written to its stdin (then
// closed), exactly one finite number per line read back from its stdout, in order. The child
// is spawned with posix_spawn (safe in a threaded process); stdin is written while stdout is
// read (poll), so batches larger than the pipe buffers cannot deadlock; a command that stops
// reading early is not an error by itself. Its stderr passes through to ours.
// Protocol: docs/formats.md "RL prompts and reward command".
#pragma once
#include <string>
#include <vector>

namespace ds::rl {

struct RewardItem {
  std::string prompt;       // the prompt text (for "messages" records: the last user turn)
  std::string completion;   // the completion text (stop token removed)
  std::string reference;    // the reference answer ("" when the record has none)
};

// Rewards in item order. Errors name the command: IoError when it cannot be started, is
// killed by a signal, exits non-zero, or runs longer than timeout_s (> 0; then it is killed);
// FormatError "stdout line L: ..." for a line that is not one finite number, and for fewer or
// more lines than items. With `stoppable`, a SIGINT/SIGTERM that reaches an InterruptScope
// while the command runs (not one already pending when it starts) kills the command's process
// group and throws Interrupted.
std::vector<double> run_reward_command(const std::string& command,
                                       const std::vector<RewardItem>& items,
                                       double timeout_s = 0, bool stoppable = false);

}  // namespace ds::rl
