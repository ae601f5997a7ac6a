// Rule-based rewards of ds-rl (spec §5.2: verifiable answers in a required format) and their
// weighted sum with an external reward command (reward_command.hpp).
//
// Answers. A completion's answer is the content of its last "\boxed{...}" (braces balanced,
// nesting allowed) or the first number after its last "####", whichever marker comes last in
// the text. A reference's answer (the gold) is the number after its last "####" when it has
// one, else the content of its last \boxed{}, else the whole reference. Both are compared by
// normalize_answer: numbers through eval::normalize_number ("1,000.50" -> "1000.5", "-0" ->
// "0") after dropping LaTeX "\$", "\!", "\," and "{,}"; anything else trimmed, compared as text.
//
// Built-in rewards (each 0 or 1): exact (the answer equals the gold), format (the completion
// has a well-formed marker: a \boxed{} with balanced braces and non-empty content, or "####"
// followed by a number), regex (the completion contains a match of --reward-regex, ECMAScript).
// reference: spec §5.2; DeepSeekMath §4.1 (rule-based outcome rewards); GSM8K "#### N".
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "ds/rl/reward_command.hpp"

namespace ds::rl {

// Content of the last \boxed{...} with balanced braces (an unclosed one is ignored).
std::optional<std::string> extract_boxed(std::string_view text);
// The completion's answer (see above), normalised; nullopt when it has no marker.
std::optional<std::string> extract_answer(std::string_view completion);
// The gold answer of a reference (see above), normalised; nullopt when it is blank.
std::optional<std::string> reference_answer(std::string_view reference);
// Why the reference's gold is not what it says, "" when it is usable: a "####" followed by
// no number and no \boxed{} anywhere ("#### forty-two": no completion could match), or by a
// number that goes on as a fraction or a word ("#### 1/2" would be gold 1).
std::string unusable_reference(std::string_view reference);
std::string normalize_answer(std::string_view s);

double exact_reward(std::string_view completion, const std::string& gold);
double format_reward(std::string_view completion);

// One term of the reward: a name (exact, format, regex, command) and its weight.
struct RewardTerm {
  std::string name;
  double weight = 1;
};
// "NAME" or "NAME=WEIGHT" per --reward flag; UsageError naming the flag value for an unknown
// name, a bad or non-finite weight, or a repeated name. Empty list: UsageError.
std::vector<RewardTerm> parse_reward_terms(const std::vector<std::string>& flags);

struct RewardConfig {
  std::vector<RewardTerm> terms;
  std::string regex;            // --reward-regex (required by the regex term)
  std::string command;          // --reward-command (required by the command term)
  double command_timeout = 0;   // seconds, 0 = none
  bool command_stoppable = false;   // run_reward_command's `stoppable` (ds-rl sets it)
};

struct RewardScores {
  std::vector<double> total;                 // (n) weighted sum per completion
  std::vector<std::vector<double>> parts;    // (terms, n) each term's unweighted value
  std::vector<uint8_t> correct;              // (n) exact reward == 1 (empty without exact)
};

class RewardSet {
 public:
  // UsageError for a missing --reward-regex / --reward-command or a bad regex.
  explicit RewardSet(RewardConfig cfg);
  const std::vector<RewardTerm>& terms() const { return cfg_.terms; }
  bool has(std::string_view name) const;
  // Scores every item (reference: the raw reference text; gold: its reference_answer, used
  // by exact). The command, if any, runs once for all items.
  RewardScores score(const std::vector<RewardItem>& items,
                     const std::vector<std::string>& golds) const;

 private:
  RewardConfig cfg_;
  std::optional<std::regex> re_;
};

}  // namespace ds::rl
