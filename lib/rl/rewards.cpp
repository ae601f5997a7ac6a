// Rule-based rewards and their weighted sum (see include/ds/rl/rewards.hpp for the answer
// extraction and comparison rules).
// reference: spec §5.2; GSM8K answer format; eval::normalize_number
// (include/ds/eval/gen_tasks.hpp).
#include "ds/rl/rewards.hpp"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "ds/core/error.hpp"
#include "ds/eval/gen_tasks.hpp"

namespace ds::rl {

namespace {

constexpr std::string_view kBoxed = "\\boxed{";
constexpr std::string_view kHashes = "####";

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// The last complete \boxed{...}: its start and content.
std::optional<std::pair<size_t, std::string>> last_boxed(std::string_view text) {
  std::optional<std::pair<size_t, std::string>> best;
  for (size_t at = text.find(kBoxed); at != std::string_view::npos;
       at = text.find(kBoxed, at + 1)) {
    const size_t open = at + kBoxed.size();
    int depth = 1;
    size_t i = open;
    for (; i < text.size() && depth > 0; ++i) depth += text[i] == '{' ? 1 : text[i] == '}' ? -1 : 0;
    if (depth == 0) best.emplace(at, std::string(text.substr(open, i - 1 - open)));
  }
  return best;
}

bool space_at(std::string_view s, size_t i) {
  return i < s.size() && std::strchr(" \t\n\v\f\r", s[i]) && s[i] != '\0';
}
bool digit_at(std::string_view s, size_t i) { return i < s.size() && s[i] >= '0' && s[i] <= '9'; }

// The number right after "####" (spaces, "$" or "\$" allowed before it), as written: the
// match of ^\s*(\\?\$)?\s*([-+]?([0-9][0-9,]*(\.[0-9]+)?|\.[0-9]+)), group 2, scanned by hand
// (std::regex recursed once per character and a long digit run overflowed the stack).
std::optional<std::string> number_after(std::string_view s, size_t* end = nullptr) {
  size_t i = 0;
  while (space_at(s, i)) ++i;
  if (s.substr(i, 2) == "\\$") i += 2;
  else if (i < s.size() && s[i] == '$') ++i;
  while (space_at(s, i)) ++i;
  const size_t start = i;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  if (digit_at(s, i)) {
    while (digit_at(s, i) || (i < s.size() && s[i] == ',')) ++i;
    if (i < s.size() && s[i] == '.' && digit_at(s, i + 1))
      for (i += 2; digit_at(s, i);) ++i;
  } else if (i < s.size() && s[i] == '.' && digit_at(s, i + 1)) {
    for (i += 2; digit_at(s, i);) ++i;
  } else {
    return std::nullopt;
  }
  if (end) *end = i;
  return std::string(s.substr(start, i - start));
}

void erase_all(std::string& s, std::string_view what) {
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p))
    s.erase(p, what.size());
}

}  // namespace

std::optional<std::string> extract_boxed(std::string_view text) {
  auto b = last_boxed(text);
  if (!b) return std::nullopt;
  return std::move(b->second);
}

std::string normalize_answer(std::string_view in) {
  std::string s(in);
  for (std::string_view latex : {"\\$", "\\!", "\\,", "{,}"}) erase_all(s, latex);
  const std::string n = eval::normalize_number(s);
  return n.empty() ? std::string(trim(s)) : n;
}

std::optional<std::string> extract_answer(std::string_view completion) {
  const auto boxed = last_boxed(completion);
  const size_t hashes = completion.rfind(kHashes);
  const bool hash_last = hashes != std::string_view::npos && (!boxed || hashes > boxed->first);
  if (hash_last) {
    if (auto n = number_after(completion.substr(hashes + kHashes.size())))
      return normalize_answer(*n);
  }
  if (boxed) return normalize_answer(boxed->second);
  return std::nullopt;
}

std::optional<std::string> reference_answer(std::string_view reference) {
  const size_t hashes = reference.rfind(kHashes);
  if (hashes != std::string_view::npos)
    if (auto n = number_after(reference.substr(hashes + kHashes.size())))
      return normalize_answer(*n);
  if (auto b = last_boxed(reference)) return normalize_answer(b->second);
  const std::string whole = normalize_answer(reference);
  if (whole.empty()) return std::nullopt;
  return whole;
}

std::string unusable_reference(std::string_view reference) {
  const size_t hashes = reference.rfind(kHashes);
  if (hashes == std::string_view::npos) return {};
  const std::string_view after = reference.substr(hashes + kHashes.size());
  size_t end = 0;
  const auto n = number_after(after, &end);
  if (!n) {   // reference_answer then takes the last \boxed{}, else the whole text
    if (last_boxed(reference)) return {};
    return "no number after its last \"####\" and no \\boxed{}: no completion could match it";
  }
  const char c = end < after.size() ? after[end] : ' ';
  if (c == '/' || std::isalnum(static_cast<unsigned char>(c)))
    return fmt::format("the number after its last \"####\" goes on as '{}' but would be read "
                       "as {} (write the whole answer as a decimal number, or in \\boxed{{}} "
                       "without \"####\")",
                       std::string(trim(after.substr(0, std::min(after.size(), end + 12)))),
                       normalize_answer(*n));
  return {};
}

double exact_reward(std::string_view completion, const std::string& gold) {
  const auto pred = extract_answer(completion);
  return pred && !pred->empty() && *pred == gold ? 1.0 : 0.0;
}

double format_reward(std::string_view completion) {
  if (auto b = last_boxed(completion); b && !trim(b->second).empty()) return 1.0;
  const size_t hashes = completion.rfind(kHashes);
  return hashes != std::string_view::npos && number_after(completion.substr(hashes + 4)) ? 1.0
                                                                                          : 0.0;
}

std::vector<RewardTerm> parse_reward_terms(const std::vector<std::string>& flags) {
  DS_CHECK_AS(UsageError, !flags.empty(), "--reward: give at least one reward");
  std::vector<RewardTerm> out;
  for (const std::string& f : flags) {
    RewardTerm t;
    const size_t eq = f.find('=');
    t.name = f.substr(0, eq);
    if (eq != std::string::npos) {
      const std::string w = f.substr(eq + 1);
      char* end = nullptr;
      errno = 0;
      t.weight = std::strtod(w.c_str(), &end);
      DS_CHECK_AS(UsageError, !w.empty() && end && *end == '\0' && std::isfinite(t.weight),
                  "--reward {}: the weight '{}' is not a finite number", f, w);
      DS_CHECK_AS(UsageError, errno != ERANGE,
                  "--reward {}: the weight '{}' is out of a double's range", f, w);
    }
    DS_CHECK_AS(UsageError,
                t.name == "exact" || t.name == "format" || t.name == "regex" || t.name == "command",
                "--reward {}: unknown reward '{}' (exact, format, regex, command)", f, t.name);
    for (const RewardTerm& o : out)
      DS_CHECK_AS(UsageError, o.name != t.name, "--reward {}: '{}' given twice", f, t.name);
    out.push_back(t);
  }
  return out;
}

RewardSet::RewardSet(RewardConfig cfg) : cfg_(std::move(cfg)) {
  if (has("regex")) {
    DS_CHECK_AS(UsageError, !cfg_.regex.empty(),
                "--reward regex needs a non-empty --reward-regex PATTERN");
    try {
      re_.emplace(cfg_.regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      DS_THROW(UsageError, "--reward-regex '{}': {}", cfg_.regex, e.what());
    }
  }
  if (has("command"))
    DS_CHECK_AS(UsageError, !cfg_.command.empty(), "--reward command needs --reward-command CMD");
  // the other way round: a pattern or command no reward term uses would be silently ignored
  DS_CHECK_AS(UsageError, cfg_.regex.empty() || has("regex"),
              "--reward-regex is used only by the regex reward: add --reward regex[=WEIGHT]");
  DS_CHECK_AS(UsageError, cfg_.command.empty() || has("command"),
              "--reward-command is used only by the command reward: add --reward command[=WEIGHT]");
}

bool RewardSet::has(std::string_view name) const {
  for (const RewardTerm& t : cfg_.terms)
    if (t.name == name) return true;
  return false;
}

RewardScores RewardSet::score(const std::vector<RewardItem>& items,
                              const std::vector<std::string>& golds) const {
  const size_t n = items.size();
  DS_CHECK(golds.size() == n, "rewards: {} golds for {} items", golds.size(), n);
  RewardScores s;
  s.total.assign(n, 0.0);
  for (const RewardTerm& t : cfg_.terms) {
    std::vector<double> v(n, 0.0);
    if (t.name == "command") {
      v = run_reward_command(cfg_.command, items, cfg_.command_timeout, cfg_.command_stoppable);
    } else {
      for (size_t i = 0; i < n; ++i) {
        const std::string& c = items[i].completion;
        if (t.name == "exact") v[i] = exact_reward(c, golds[i]);
        else if (t.name == "format") v[i] = format_reward(c);
        else v[i] = eval::regex_search_text(c, *re_) ? 1.0 : 0.0;
      }
    }
    if (t.name == "exact") {
      s.correct.resize(n);
      for (size_t i = 0; i < n; ++i) s.correct[i] = v[i] == 1.0;
    }
    for (size_t i = 0; i < n; ++i) s.total[i] += t.weight * v[i];
    s.parts.push_back(std::move(v));
  }
  // finite values with large weights can overflow: an infinite reward has no advantage
  for (size_t i = 0; i < n; ++i)
    DS_CHECK_AS(NumericsError, std::isfinite(s.total[i]),
                "the reward of completion {} is {}: the weighted sum of its reward terms "
                "overflows (--reward weights)", i, s.total[i]);
  return s;
}

}  // namespace ds::rl
