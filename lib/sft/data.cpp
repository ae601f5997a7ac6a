// SFT data: JSONL parsing and checks, chat-template rendering, tokenisation with target
// flags (see include/ds/sft/data.hpp).
#include "ds/sft/data.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <exception>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"
#include "ds/tokenizer/utf8.hpp"

namespace ds::sft {

using nlohmann::json;

LossOn parse_loss_on(std::string_view s) {
  if (s == "assistant") return LossOn::assistant;
  if (s == "last") return LossOn::last;
  if (s == "all") return LossOn::all;
  DS_THROW(UsageError, "--loss-on: unknown value '{}' (assistant, last, all)", s);
}

std::string_view loss_on_name(LossOn l) {
  switch (l) {
    case LossOn::assistant: return "assistant";
    case LossOn::last: return "last";
    case LossOn::all: return "all";
  }
  return "?";
}

namespace {

bool blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// A required non-blank string field `key` of object `o`; `field` names it in errors.
std::string text_field(const json& o, const char* key, const std::string& field,
                       const std::string& where) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) DS_THROW(FormatError, "{}: {}: missing", where, field);
  if (!it->is_string()) DS_THROW(FormatError, "{}: {}: must be a string", where, field);
  std::string s = it->get<std::string>();
  if (blank(s)) DS_THROW(FormatError, "{}: {}: empty", where, field);
  return s;
}

// Checks a "messages" array (roles, contents, system placement) before conversion.
void check_messages(const json& ms, const std::string& where) {
  if (!ms.is_array()) DS_THROW(FormatError, "{}: messages: must be an array", where);
  if (ms.empty()) DS_THROW(FormatError, "{}: messages: empty conversation", where);
  bool seen_turn = false;
  for (size_t i = 0; i < ms.size(); ++i) {
    const json& m = ms[i];
    const std::string f = fmt::format("messages[{}]", i);
    if (!m.is_object()) DS_THROW(FormatError, "{}: {}: not an object", where, f);
    auto role_it = m.find("role");
    if (role_it == m.end() || role_it->is_null())
      DS_THROW(FormatError, "{}: {}.role: missing", where, f);
    if (!role_it->is_string()) DS_THROW(FormatError, "{}: {}.role: must be a string", where, f);
    const std::string role = role_it->get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      DS_THROW(FormatError, "{}: {}.role: unknown role \"{}\" (system, user, assistant, tool)",
               where, f, role);
    const bool has_calls = m.contains("tool_calls") && m["tool_calls"].is_array() &&
                           !m["tool_calls"].empty();
    const bool null_content = !m.contains("content") || m["content"].is_null();
    if (!(role == "assistant" && has_calls && null_content))
      text_field(m, "content", f + ".content", where);
    if (role == "system" && seen_turn)
      DS_THROW(FormatError,
               "{}: {}: a system message after the conversation started (the chat template "
               "moves every system message to the start; put it first)", where, f);
    seen_turn = seen_turn || role != "system";
  }
}

}  // namespace

std::vector<infer::ChatMessage> parse_example(std::string_view line, const std::string& where,
                                              LossOn loss_on) {
  json j;
  try {
    io::check_json_input(line, where);
    j = json::parse(line);
  } catch (const json::parse_error& e) {
    if (const auto bad = tok::first_invalid_utf8(line))   // the data is UTF-8 (as ds-tokenize's)
      DS_THROW(FormatError, "{}: invalid UTF-8 at byte {} of the line", where, *bad);
    DS_THROW(FormatError, "{}: invalid JSON at byte {}", where, e.byte);
  } catch (const json::exception& e) {   // e.g. a number beyond a double's range
    DS_THROW(FormatError, "{}: invalid JSON: {}", where, e.what());
  }
  if (!j.is_object()) DS_THROW(FormatError, "{}: not a JSON object", where);
  std::vector<infer::ChatMessage> msgs;
  if (j.contains("messages")) {
    check_messages(j["messages"], where);
    msgs = infer::parse_messages(j["messages"].dump(), where);
  } else if (j.contains("prompt") || j.contains("completion")) {
    if (j.contains("system") && !j["system"].is_null())
      msgs.push_back({"system", text_field(j, "system", "system", where), {}});
    msgs.push_back({"user", text_field(j, "prompt", "prompt", where), {}});
    msgs.push_back({"assistant", text_field(j, "completion", "completion", where), {}});
  } else {
    DS_THROW(FormatError,
             "{}: expected \"messages\" (a chat) or \"prompt\" and \"completion\"", where);
  }
  const auto turns = std::count_if(msgs.begin(), msgs.end(),
                                   [](const auto& m) { return m.role != "system"; });
  if (turns == 0)
    DS_THROW(FormatError, "{}: messages: only system messages, no conversation", where);
  if (loss_on != LossOn::all && msgs.back().role != "assistant")
    DS_THROW(FormatError,
             "{}: messages[{}]: the conversation ends with a {} turn, not an assistant turn "
             "(nothing to train on after it; --loss-on all trains on every token)",
             where, msgs.size() - 1, msgs.back().role);
  return msgs;
}

std::vector<Example> read_examples(const std::string& path, int32_t file, LossOn loss_on) {
  const std::string text = io::read_input(path);   // a FIFO too: files_fingerprint reads it again
  std::vector<Example> out;
  size_t pos = text.rfind("\xEF\xBB\xBF", 0) == 0 ? 3 : 0;   // a UTF-8 byte-order mark
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (blank(line)) continue;
    Example ex;
    ex.file = file;
    ex.line = line_no;
    ex.messages = parse_example(line, fmt::format("{}:{}", path, line_no), loss_on);
    out.push_back(std::move(ex));
  }
  if (out.empty()) DS_THROW(FormatError, "{}: no samples (empty file)", path);
  return out;
}

namespace {

// Token index whose start offset is exactly `byte` (offsets: L+1 cumulative starts), or -1.
int64_t token_at(const std::vector<size_t>& offsets, size_t byte) {
  auto it = std::lower_bound(offsets.begin(), offsets.end(), byte);
  return it != offsets.end() && *it == byte ? int64_t(it - offsets.begin()) : -1;
}

// The first target token of a target starting at `byte`. Where that is inside a token whose
// rest is whitespace, BPE merged the template's whitespace before the turn with the prompt's
// last characters (V3 renders a tool-call turn after another turn as "\n<｜tool▁call▁begin｜>",
// and "?\n" is one token): that token holds prompt bytes, so the target starts at the next one.
// -1 for any other start inside a token (a tokenizer without the chat tokens).
int64_t target_start(const std::vector<size_t>& offsets, const std::string& text, size_t byte) {
  auto it = std::lower_bound(offsets.begin(), offsets.end(), byte);
  if (it == offsets.end()) return -1;
  for (size_t k = byte; k < *it; ++k)
    if (!std::isspace(static_cast<unsigned char>(text[k]))) return -1;
  return int64_t(it - offsets.begin());
}

}  // namespace

Sample tokenize_example(const std::vector<infer::ChatMessage>& messages,
                        const infer::ChatTemplate& tmpl, const tok::Tokenizer& tok,
                        const TokenizeOptions& opt, const std::string& where) {
  infer::RenderedChat r;
  try {
    r = tmpl.render(messages, /*add_generation_prompt=*/false);
  } catch (const FormatError& e) {
    DS_THROW(FormatError, "{}: {}", where, e.what());
  }
  const std::vector<tok::TokenId> ids = tok.encode(r.text, /*match_added_tokens=*/true);
  // Byte offset of every token in the rendered text; the tokenizer must reproduce it exactly.
  std::vector<size_t> off(ids.size() + 1, 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string b = tok.token_bytes(ids[i]);
    if (r.text.compare(off[i], b.size(), b) != 0)
      DS_THROW(FormatError, "{}: the tokenizer does not reproduce the rendered chat at byte {}",
               where, off[i]);
    off[i + 1] = off[i] + b.size();
  }
  if (off.back() != r.text.size())
    DS_THROW(FormatError, "{}: the tokenizer does not reproduce the rendered chat", where);
  const auto bos = tok.bos_id();
  if (ids.empty() || !bos || ids[0] != *bos)
    DS_THROW(FormatError, "{}: the rendered chat does not start with the tokenizer's BOS token "
             "(the tokenizer lacks \"{}\" as an added token)", where, tmpl.bos_token());
  Sample s;
  s.tokens.assign(ids.begin(), ids.end());
  s.target.assign(ids.size(), 0);
  if (opt.loss_on == LossOn::all) {
    std::fill(s.target.begin() + 1, s.target.end(), uint8_t(1));
  } else {
    size_t last = r.spans.size();
    for (size_t i = 0; i < r.spans.size(); ++i)
      if (messages[r.spans[i].message].role == "assistant") last = i;
    for (size_t i = 0; i < r.spans.size(); ++i) {
      const infer::MessageSpan& sp = r.spans[i];
      if (messages[sp.message].role != "assistant" || sp.target.end <= sp.target.begin) continue;
      if (opt.loss_on == LossOn::last && i != last) continue;
      const int64_t a = target_start(off, r.text, sp.target.begin),
                    b = token_at(off, sp.target.end);
      if (a < 0 || b < 0)
        DS_THROW(FormatError,
                 "{}: messages[{}]: the assistant target {} inside a token (byte {}); the "
                 "tokenizer needs the DeepSeek chat tokens as added tokens (ds-tokenize train "
                 "adds them)", where, sp.message, a < 0 ? "starts" : "ends",
                 a < 0 ? sp.target.begin : sp.target.end);
      if (a < b) std::fill(s.target.begin() + a, s.target.begin() + b, uint8_t(1));
    }
  }
  if (opt.max_tokens > 0 && int64_t(s.tokens.size()) > opt.max_tokens) {
    if (!opt.truncate)
      DS_THROW(FormatError,
               "{}: the sample has {} tokens, more than --seq-len + 1 = {} (raise --seq-len or "
               "use --truncate)", where, s.tokens.size(), opt.max_tokens);
    s.tokens.resize(size_t(opt.max_tokens));
    s.target.resize(size_t(opt.max_tokens));
    s.truncated = true;
  }
  for (uint8_t t : s.target) s.n_targets += t;
  return s;
}

SampleSet load_samples(const std::vector<std::string>& files, const infer::ChatTemplate& tmpl,
                       const tok::Tokenizer& tok, const TokenizeOptions& opt, int threads) {
  std::vector<Example> examples;
  for (size_t f = 0; f < files.size(); ++f) {
    auto ex = read_examples(files[f], int32_t(f), opt.loss_on);
    examples.insert(examples.end(), std::make_move_iterator(ex.begin()),
                    std::make_move_iterator(ex.end()));
  }
  std::vector<Sample> samples(examples.size());
  std::vector<std::exception_ptr> errors(examples.size());
  ThreadPool pool(resolve_threads(check_threads(threads)));
  pool.parallel_for(examples.size(), [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i) {
      try {
        const Example& x = examples[i];
        samples[i] = tokenize_example(x.messages, tmpl, tok, opt,
                                      fmt::format("{}:{}", files[size_t(x.file)], x.line));
        samples[i].file = x.file;
        samples[i].line = x.line;
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  }, 16);
  for (const auto& e : errors)   // the first error in file order
    if (e) std::rethrow_exception(e);
  SampleSet set;
  for (Sample& s : samples) {
    set.truncated += s.truncated;
    if (s.n_targets == 0) {   // after truncation, or targets of whitespace alone
      set.dropped++;
      continue;
    }
    set.tokens += int64_t(s.tokens.size());
    set.targets += s.n_targets;
    set.samples.push_back(std::move(s));
  }
  return set;
}

std::string files_fingerprint(const std::vector<std::string>& files) {
  Xxh64Stream h;
  for (const std::string& f : files) {
    const std::string text = io::read_input(f);   // a FIFO's or pipe's bytes as parsed
    const uint64_t n = text.size();
    h.update(&n, sizeof n);
    h.update(text.data(), text.size());
  }
  return hex64(h.digest());
}

}  // namespace ds::sft
