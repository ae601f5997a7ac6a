// GSM8K-style generation tasks (see include/ds/eval/gen_tasks.hpp for the prompt layout and
// the number normalisation rules).
// reference: spec §6.1; GSM8K (Cobbe et al. 2021) answer format.
#include "ds/eval/gen_tasks.hpp"

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <utility>

#include "ds/core/error.hpp"
#include "jsonl.hpp"

namespace ds::eval {

namespace {

bool digit_at(std::string_view s, size_t i) { return i < s.size() && s[i] >= '0' && s[i] <= '9'; }

// The first number in s[from..] as [begin, end): the leftmost match of
// -?\$?[0-9][0-9,]*(\.[0-9]+)? (optional "-" and "$", digits with thousands commas, optional
// fraction), scanned by hand rather than with std::regex, which recursed per digit.
std::optional<std::pair<size_t, size_t>> find_number(std::string_view s, size_t from) {
  for (size_t b = from; b < s.size(); ++b) {
    size_t i = b;
    if (s[i] == '-') ++i;
    if (i < s.size() && s[i] == '$') ++i;
    if (!digit_at(s, i)) continue;
    while (digit_at(s, i) || (i < s.size() && s[i] == ',')) ++i;
    if (i < s.size() && s[i] == '.' && digit_at(s, i + 1))
      for (i += 2; digit_at(s, i);) ++i;
    return std::pair{b, i};
  }
  return std::nullopt;
}

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

bool all_digits(std::string_view s) {
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

std::optional<std::string> first_number(std::string_view text) {
  const auto m = find_number(text, 0);
  if (!m) return std::nullopt;
  return normalize_number(text.substr(m->first, m->second - m->first));
}

std::optional<std::string> last_number(std::string_view text) {
  std::optional<std::pair<size_t, size_t>> last;
  for (auto m = find_number(text, 0); m; m = find_number(text, m->second)) last = m;
  if (!last) return std::nullopt;
  return normalize_number(text.substr(last->first, last->second - last->first));
}

}  // namespace

bool regex_search_text(std::string_view text, const std::regex& re, std::cmatch* m) {
  std::cmatch local;
  std::cmatch& out = m ? *m : local;
  const char* b = text.data();
  const char* e = b + text.size();
  if (text.size() < 4096) return std::regex_search(b, e, out, re);   // ~1 MiB of stack at most
  struct Job {
    const char *b, *e;
    const std::regex* re;
    std::cmatch* out;
    bool found = false;
    std::exception_ptr error;
  } job{b, e, &re, &out, false, nullptr};
  auto body = [](void* p) -> void* {
    auto* j = static_cast<Job*>(p);
    try {
      j->found = std::regex_search(j->b, j->e, *j->out, *j->re);
    } catch (...) {
      j->error = std::current_exception();
    }
    return nullptr;
  };
  // measured ~260 bytes of stack per matched character; reserved, touched only as used
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, (size_t(64) << 20) + 1024 * text.size());
  pthread_t t;
  const int rc = pthread_create(&t, &attr, body, &job);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    DS_THROW(IoError, "regex search over {} bytes: cannot start its thread: {}", text.size(),
             std::strerror(rc));
  pthread_join(t, nullptr);
  if (job.error) std::rethrow_exception(job.error);
  return job.found;
}

std::string normalize_number(std::string_view in) {
  std::string s;
  for (char c : trim(in))
    if (c != ',' && c != ' ' && c != '$') s.push_back(c);
  bool neg = false;
  std::string_view v = s;
  if (!v.empty() && (v[0] == '-' || v[0] == '+')) {
    neg = v[0] == '-';
    v.remove_prefix(1);
  }
  const size_t dot = v.find('.');
  std::string_view ip = v.substr(0, dot);
  std::string_view fp = dot == std::string_view::npos ? std::string_view() : v.substr(dot + 1);
  if (ip.empty() && fp.empty()) return {};
  if (!all_digits(ip) || !all_digits(fp)) return {};
  while (ip.size() > 1 && ip[0] == '0') ip.remove_prefix(1);
  while (!fp.empty() && fp.back() == '0') fp.remove_suffix(1);
  std::string out(ip.empty() ? "0" : ip);
  if (!fp.empty()) out += "." + std::string(fp);
  if (neg && out != "0") out = "-" + out;
  return out;
}

std::optional<std::string> extract_gold(std::string_view answer) {
  const size_t pos = answer.rfind("####");
  if (pos == std::string_view::npos) return std::nullopt;
  const std::string n = normalize_number(answer.substr(pos + 4));
  if (n.empty()) return std::nullopt;
  return n;
}

std::vector<GenItem> load_gen(const std::filesystem::path& data, const GenSpec& spec) {
  std::vector<GenItem> items;
  detail::for_each_jsonl(data, [&](size_t line, const nlohmann::json& rec) {
    GenItem it;
    it.line = line;
    it.question = detail::string_field(rec, spec.question_field, data, line);
    it.answer = detail::string_field(rec, spec.answer_field, data, line);
    auto gold = extract_gold(it.answer);
    if (!gold)
      DS_THROW(FormatError, "{}:{}: field '{}' has no numeric \"#### N\" answer",
               data.string(), line, spec.answer_field);
    it.gold = *gold;
    items.push_back(std::move(it));
  });
  return items;
}

AnswerExtractor::AnswerExtractor(const std::string& pattern) {
  try {
    re_.emplace(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    DS_THROW(UsageError, "--answer-regex '{}': {}", pattern, e.what());
  }
}

std::optional<std::string> AnswerExtractor::operator()(std::string_view text) const {
  if (!re_) {
    const size_t pos = text.rfind("####");
    if (pos != std::string_view::npos)
      if (auto n = first_number(text.substr(pos + 4))) return n;
    return last_number(text);
  }
  std::cmatch m;
  if (!regex_search_text(text, *re_, &m)) return std::nullopt;
  // the first capture group that took part in the match (`a (\d+)|b (\d+)`), else the whole
  std::string got = m.str(0);
  for (size_t g = 1; g < m.size(); ++g)
    if (m[g].matched) {
      got = m.str(g);
      break;
    }
  const std::string n = normalize_number(got);
  if (!n.empty()) return n;
  return std::string(trim(got));
}

std::string build_gen_prompt(const GenItem& item, std::span<const GenItem> shots) {
  std::string p;
  for (const GenItem& s : shots) p += "Question: " + s.question + "\nAnswer: " + s.answer + "\n\n";
  p += "Question: " + item.question + "\nAnswer:";
  return p;
}

std::vector<infer::ChatMessage> build_chat_messages(const GenItem& item,
                                                    std::span<const GenItem> shots,
                                                    const std::string& system) {
  std::vector<infer::ChatMessage> m;
  if (!system.empty()) m.push_back({"system", system, {}});
  for (const GenItem& s : shots) {
    m.push_back({"user", s.question, {}});
    m.push_back({"assistant", s.answer, {}});
  }
  m.push_back({"user", item.question, {}});
  return m;
}

bool exact_match(const std::optional<std::string>& prediction, const std::string& gold) {
  if (!prediction) return false;
  const std::string a = normalize_number(*prediction), b = normalize_number(gold);
  if (!a.empty() && !b.empty()) return a == b;
  return trim(*prediction) == trim(gold);
}

std::optional<std::string> majority_answer(std::span<const std::optional<std::string>> preds) {
  // (key, votes, first prediction) in order of first appearance; a handful of samples, so a
  // linear search
  struct Group {
    std::string key;
    size_t votes;
    size_t first;
  };
  std::vector<Group> groups;
  for (size_t i = 0; i < preds.size(); ++i) {
    if (!preds[i]) continue;
    std::string key = normalize_number(*preds[i]);
    if (key.empty()) key = std::string(trim(*preds[i]));   // text: never a number's form
    auto g = std::find_if(groups.begin(), groups.end(),
                          [&](const Group& x) { return x.key == key; });
    if (g == groups.end()) groups.push_back({std::move(key), 1, i});
    else ++g->votes;
  }
  if (groups.empty()) return std::nullopt;
  const Group* best = &groups.front();
  for (const Group& g : groups)
    if (g.votes > best->votes) best = &g;
  return preds[best->first];
}

}  // namespace ds::eval
