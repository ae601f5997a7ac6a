// Generation-based tasks with numeric answers (GSM8K style): loading, gold extraction after
// "####", number normalisation, prediction extraction, k-shot prompts, exact match.
//
// Prompt layout (k shots, then the item; the model continues after "Answer:"):
//   "Question: " + q_1 + "\nAnswer: " + a_1 + "\n\n" + ... + "Question: " + q + "\nAnswer:"
// where a_j is the full reference answer of shot j (reasoning and "#### N" line included).
// Generation stops at "Question:" (kGenStopStrings) or EOS.
//
// Chat layout (--chat; build_chat_messages): an optional system message, then one user turn
// (q_j) and one assistant turn (a_j) per shot, then the user turn q and the generation prompt,
// rendered with the checkpoint's chat template (DeepSeek-V3:
// "<BOS>system<｜User｜>q_1<｜Assistant｜>a_1<EOS>...<｜User｜>q<｜Assistant｜>"). The question
// is the user's message as it stands (no "Question:" / "Answer:" framing); generation stops
// at EOS only.
//
// Number normalisation (normalize_number): trim; drop a leading "$" and thousands commas
// and inner spaces; drop a leading "+"; then the text must match -?digits(.digits)?; leading
// zeros are removed, trailing fractional zeros and a bare "." are removed ("72.0" -> "72",
// "2.50" -> "2.5"), and "-0" becomes "0". Anything else is not a number ("" returned).
// reference: spec §6.1 (GSM8K 8-shot, generation-based); GSM8K answer format "#### N".
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ds/eval/metrics.hpp"
#include "ds/infer/chat_template.hpp"

namespace ds::eval {

struct GenSpec {
  std::string name = "gsm8k";
  std::string question_field = "question";
  std::string answer_field = "answer";
};

struct GenItem {
  size_t line = 0;         // 1-based line in the data file
  std::string question;
  std::string answer;      // the full reference answer
  std::string gold;        // normalised number after the last "####"
};

inline const std::vector<std::string> kGenStopStrings = {"Question:"};

// FormatError naming file:line and field for malformed lines, missing fields, or an answer
// without a numeric "#### N"; and for an empty file.
std::vector<GenItem> load_gen(const std::filesystem::path& data, const GenSpec& spec = {});

std::string normalize_number(std::string_view s);
// The normalised number after the last "####" in `answer`; nullopt if none.
std::optional<std::string> extract_gold(std::string_view answer);

// std::regex_search over `text`, on a thread whose stack grows with the text when it is long:
// libstdc++'s matcher recurses once per character it matches, and a run of 32,000 digits
// overflowed an 8 MiB stack (a segfault). `m`, when given, receives the match.
bool regex_search_text(std::string_view text, const std::regex& re, std::cmatch* m = nullptr);

// Extracts the predicted answer from a completion. With a pattern (ECMAScript std::regex):
// the first match, its capture group 1 if the pattern has groups; normalised as a number
// when it is one, else trimmed. Without: the number after the last "####" if present, else
// the last number in the text. nullopt when nothing matches.
class AnswerExtractor {
 public:
  AnswerExtractor() = default;
  explicit AnswerExtractor(const std::string& pattern);   // UsageError for a bad pattern
  std::optional<std::string> operator()(std::string_view completion) const;

 private:
  std::optional<std::regex> re_;
};

std::string build_gen_prompt(const GenItem& item, std::span<const GenItem> shots);
// The chat messages of the chat layout above (system omitted when empty).
std::vector<infer::ChatMessage> build_chat_messages(const GenItem& item,
                                                    std::span<const GenItem> shots,
                                                    const std::string& system = {});

// prediction (already extracted) equals the gold answer after normalisation.
bool exact_match(const std::optional<std::string>& prediction, const std::string& gold);

// The majority answer of several samples' predictions (maj@N, self-consistency): predictions
// are grouped as exact_match compares them (the normalised number, else the trimmed text),
// missing ones (nullopt) do not vote, and a tie goes to the group seen first. Returns that
// group's first prediction as written; nullopt when no sample has one.
std::optional<std::string> majority_answer(std::span<const std::optional<std::string>> preds);

}  // namespace ds::eval
