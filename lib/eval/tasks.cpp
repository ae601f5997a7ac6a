// Multiple-choice task loading, k-shot selection, request building and scoring (see
// include/ds/eval/tasks.hpp for the exact text layout).
// reference: spec §6.1; PIQA (Bisk et al. 2020) valid split with valid-labels.lst.
#include "ds/eval/tasks.hpp"

#include <algorithm>
#include <numeric>

#include "ds/core/error.hpp"
#include "ds/core/rng.hpp"
#include "jsonl.hpp"

namespace ds::eval {

namespace {

using nlohmann::json;

// Unicode code points of UTF-8 text (Python's len(str)): the bytes that start a character.
size_t code_points(std::string_view s) {
  size_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// A gold label: an integer, a string of digits (both minus `base`) or a letter A..Z.
size_t parse_gold(const json& v, int base, size_t n_choices, const std::string& where) {
  long long idx = -1;
  if (v.is_number_integer()) {
    // beyond +-2^31 it cannot name a choice; checked before the subtraction can overflow
    const bool small = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(INT32_MAX)
                                              : v.get<int64_t>() >= INT32_MIN;
    if (!small)
      DS_THROW(FormatError, "{}: gold label {} outside the {} choices", where, v.dump(),
               n_choices);
    idx = v.get<long long>() - base;
  } else if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s.size() == 1 && s[0] >= 'A' && s[0] <= 'Z') {
      idx = s[0] - 'A';
    } else if (!s.empty() && s.size() < 10 &&
               std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      idx = std::stoll(s) - base;
    } else {
      DS_THROW(FormatError, "{}: gold label \"{}\" is not an index or a letter", where, s);
    }
  } else {
    DS_THROW(FormatError, "{}: gold label must be an integer or a string", where);
  }
  if (idx < 0 || size_t(idx) >= n_choices)
    DS_THROW(FormatError, "{}: gold label {} outside the {} choices", where, idx, n_choices);
  return size_t(idx);
}

std::string render_context(const std::string& tmpl, const std::string& context) {
  std::string out = tmpl;
  const std::string key = "{context}";
  for (size_t pos = out.find(key); pos != std::string::npos;
       pos = out.find(key, pos + context.size()))
    out.replace(pos, key.size(), context);
  return out;
}

std::vector<std::string> read_choices(const json& rec, const McSpec& spec,
                                      const fs::path& file, size_t line) {
  std::vector<std::string> choices;
  for (const std::string& f : spec.choice_fields)
    choices.push_back(detail::string_field(rec, f, file, line));
  if (!spec.choices_field.empty()) {
    const json& arr = detail::field(rec, spec.choices_field, file, line);
    if (!arr.is_array())
      DS_THROW(FormatError, "{}:{}: field '{}' is not an array", file.string(), line,
               spec.choices_field);
    for (size_t i = 0; i < arr.size(); ++i) {
      if (!arr[i].is_string())
        DS_THROW(FormatError, "{}:{}: field '{}[{}]' is not a string", file.string(), line,
                 spec.choices_field, i);
      choices.push_back(arr[i].get<std::string>());
    }
  }
  if (choices.size() < 2)
    DS_THROW(FormatError, "{}:{}: {} choices (need at least 2)", file.string(), line,
             choices.size());
  return choices;
}

void check_spec(const McSpec& spec) {
  if (spec.context_field.empty()) DS_THROW(UsageError, "task {}: no context field", spec.name);
  if (spec.choice_fields.empty() == spec.choices_field.empty())
    DS_THROW(UsageError, "task {}: give either choice fields or one choices-array field",
             spec.name);
  if (spec.gold_field.empty() != spec.labels_file)
    DS_THROW(UsageError, "task {}: give either a gold field or a labels file", spec.name);
}

void apply_labels(std::vector<McItem>& items, const fs::path& labels, int base) {
  const auto lines = detail::read_lines(labels);
  // label i is on line i + 1: a blank line inside the file would shift every later label
  for (size_t i = 0; i < lines.size(); ++i)
    if (lines[i].first != i + 1)
      DS_THROW(FormatError, "{}:{}: blank line (one label per line, item N on line N)",
               labels.string(), i + 1);
  if (lines.size() != items.size())
    DS_THROW(FormatError, "{}: {} labels for {} items", labels.string(), lines.size(),
             items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    std::string s = lines[i].second;
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
    items[i].gold = parse_gold(json(s), base, items[i].choices.size(),
                               fmt::format("{}:{}", labels.string(), lines[i].first));
  }
}

}  // namespace

McSpec piqa_spec() {
  McSpec s;
  s.name = "piqa";
  s.context_field = "goal";
  s.choice_fields = {"sol1", "sol2"};
  s.labels_file = true;
  s.context_template = "Question: {context}\nAnswer:";
  return s;
}

McSpec builtin_mc_spec(const std::string& name) {
  if (name == "piqa") return piqa_spec();
  DS_THROW(UsageError, "unknown multiple-choice task '{}' (built in: piqa)", name);
}

fs::path default_labels_path(const fs::path& data) {
  return data.parent_path() / (data.stem().string() + "-labels.lst");
}

std::vector<McItem> load_mc(const fs::path& data, const McSpec& spec, const fs::path& labels) {
  check_spec(spec);
  std::vector<McItem> items;
  detail::for_each_jsonl(data, [&](size_t line, const json& rec) {
    McItem it;
    it.line = line;
    it.context = render_context(spec.context_template,
                                detail::string_field(rec, spec.context_field, data, line));
    it.choices = read_choices(rec, spec, data, line);
    if (!spec.labels_file) {
      const std::string where = fmt::format("{}:{}: field '{}'", data.string(), line,
                                            spec.gold_field);
      it.gold = parse_gold(detail::field(rec, spec.gold_field, data, line), spec.gold_base,
                           it.choices.size(), where);
    }
    items.push_back(std::move(it));
  });
  if (spec.labels_file)
    apply_labels(items, labels.empty() ? default_labels_path(data) : labels, spec.gold_base);
  return items;
}

std::vector<size_t> select_shots(size_t pool, size_t k, size_t exclude, uint64_t seed,
                                 uint64_t item) {
  const size_t avail = pool - (exclude < pool ? 1 : 0);
  if (k > avail)
    DS_THROW(UsageError, "--shots {}: only {} examples available", k, avail);
  // Partial Fisher-Yates over [0, pool) with `exclude` swapped out of the way first.
  std::vector<size_t> idx(pool);
  std::iota(idx.begin(), idx.end(), size_t(0));
  size_t lo = 0;
  if (exclude < pool) {
    std::swap(idx[0], idx[exclude]);
    lo = 1;
  }
  Rng rng(seed, rng_stream("fewshot", item));
  std::vector<size_t> out;
  for (size_t i = 0; i < k; ++i) {
    const size_t j = lo + i + size_t(rng.below(pool - lo - i));
    std::swap(idx[lo + i], idx[j]);
    out.push_back(idx[lo + i]);
  }
  return out;
}

McRequest build_mc_request(const McItem& item, std::span<const McItem> shots) {
  McRequest r;
  for (const McItem& s : shots) r.prompt += s.context + " " + s.choices[s.gold] + "\n\n";
  r.prompt += item.context;
  for (const std::string& c : item.choices) r.continuations.push_back(" " + c);
  return r;
}

std::vector<ScoredSequence> tokenize_mc(const tok::Tokenizer& tokenizer, const McRequest& r,
                                        std::optional<tok::TokenId> bos, size_t max_len) {
  const std::vector<tok::TokenId> prompt = tokenizer.encode(r.prompt, false);
  DS_CHECK_AS(FormatError, bos || !prompt.empty(),
              "an empty context and no BOS (add_bos_token false): nothing to condition on");
  std::vector<ScoredSequence> out;
  for (size_t k = 0; k < r.continuations.size(); ++k) {
    const std::vector<tok::TokenId> c = tokenizer.encode(r.continuations[k], false);
    const size_t head = 1;   // the BOS, or the prompt's last token
    size_t drop = 0;
    if (max_len > 0) {
      if (head + c.size() > max_len)
        DS_THROW(FormatError, "choice {}: {} tokens do not fit --max-len {}", k, c.size(),
                 max_len);
      const size_t total = (bos ? 1 : 0) + prompt.size() + c.size();
      drop = total > max_len ? total - max_len : 0;
    }
    ScoredSequence s;
    if (bos) s.tokens.push_back(*bos);
    s.tokens.insert(s.tokens.end(), prompt.begin() + ptrdiff_t(drop), prompt.end());
    s.score_begin = s.tokens.size();
    s.tokens.insert(s.tokens.end(), c.begin(), c.end());
    s.norm_len = code_points(r.continuations[k]) - (r.continuations[k].starts_with(' ') ? 1 : 0);
    out.push_back(std::move(s));
  }
  return out;
}

McOutcome score_mc(std::span<const double> loglik, std::span<const size_t> lengths,
                   size_t gold) {
  DS_CHECK(!loglik.empty() && loglik.size() == lengths.size() && gold < loglik.size(),
           "score_mc: {} log-likelihoods, {} lengths, gold {}", loglik.size(),
           lengths.size(), gold);
  McOutcome o;
  double best = loglik[0], best_norm = loglik[0] / double(std::max<size_t>(lengths[0], 1));
  for (size_t i = 1; i < loglik.size(); ++i) {
    const double norm = loglik[i] / double(std::max<size_t>(lengths[i], 1));
    if (loglik[i] > best) { best = loglik[i]; o.pred = i; }
    if (norm > best_norm) { best_norm = norm; o.pred_norm = i; }
  }
  o.correct = o.pred == gold;
  o.correct_norm = o.pred_norm == gold;
  return o;
}

McMetrics aggregate_mc(std::span<const McOutcome> outcomes) {
  size_t c = 0, cn = 0;
  for (const McOutcome& o : outcomes) {
    c += o.correct;
    cn += o.correct_norm;
  }
  return {accuracy(c, outcomes.size()), accuracy(cn, outcomes.size())};
}

}  // namespace ds::eval
