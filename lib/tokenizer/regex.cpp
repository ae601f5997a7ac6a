// PCRE2 wrapper (see regex.hpp). Thread-local match data, match context and JIT stack.
// reference: pcre2api(3), pcre2jit(3).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.hpp"

#include <pcre2.h>

#include "ds/core/error.hpp"

namespace ds::tok::detail {

namespace {

// Unicode White_Space (what Oniguruma's \s matches on UTF-8 text), without brackets.
constexpr std::string_view kWhiteSpaceSet =
    "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// Per-thread PCRE2 scratch: one-pair match data, a match context with a JIT stack that
// grows up to 8 MiB (deep patterns on long pieces), created on first use.
struct Scratch {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mc = nullptr;
  pcre2_jit_stack* js = nullptr;
  Scratch() {
    md = pcre2_match_data_create(1, nullptr);
    mc = pcre2_match_context_create(nullptr);
    js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (mc && js) pcre2_jit_stack_assign(mc, nullptr, js);
  }
  ~Scratch() {
    if (md) pcre2_match_data_free(md);
    if (mc) pcre2_match_context_free(mc);
    if (js) pcre2_jit_stack_free(js);
  }
};

Scratch& scratch() {
  thread_local Scratch s;
  if (!s.md || !s.mc) DS_THROW(InternalError, "pcre2: cannot allocate match data");
  return s;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof(buf));
  return n > 0 ? std::string(reinterpret_cast<char*>(buf), size_t(n)) : "unknown error";
}

// A property escape at p[i] ('\\' then 'p' or 'P'): its name, whether it is negated, and its
// length; false when it is not well formed (PCRE2 reports that).
bool parse_property(std::string_view p, size_t i, std::string_view& name, bool& negated,
                    size_t& len) {
  negated = p[i + 1] == 'P';
  if (i + 2 >= p.size()) return false;
  if (p[i + 2] != '{') {   // \pL
    name = p.substr(i + 2, 1);
    len = 3;
    return true;
  }
  const size_t close = p.find('}', i + 3);
  if (close == std::string_view::npos) return false;
  name = p.substr(i + 3, close - (i + 3));
  if (!name.empty() && name[0] == '^') {
    negated = !negated;
    name.remove_prefix(1);
  }
  len = close + 1 - i;
  return true;
}

}  // namespace

std::string rewrite_escapes(std::string_view p, bool widen) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  size_t class_start = 0;   // index in p just after '[' or '[^'
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      std::string_view name;
      bool negated = false;
      size_t len = 0;
      if (widen && (e == 'p' || e == 'P') && parse_property(p, i, name, negated, len)) {
        const std::string added = unicode_added_ranges(name);
        const std::string prop = "\\p{" + std::string(name) + "}";
        if (added.empty() || (in_class && negated)) out.append(p.substr(i, len));
        else if (in_class) out += prop + added;
        else out += (negated ? "[^" : "[") + prop + added + "]";
        i += len - 1;
        continue;
      }
      if (e == 's' && !in_class) {
        out += "[";
        out += kWhiteSpaceSet;
        out += "]";
      } else if (e == 'S' && !in_class) {
        out += "[^";
        out += kWhiteSpaceSet;
        out += "]";
      } else if (e == 's' && in_class) {
        out += kWhiteSpaceSet;
      } else {
        out += c;
        out += e;   // any other escape (\S inside a class stays PCRE2's)
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') { out += '^'; ++i; }
      class_start = i + 1;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < p.size() && p[i + 1] == ':') {   // POSIX [:name:]
        const size_t end = p.find(":]", i + 2);
        if (end != std::string_view::npos) {
          out.append(p.substr(i, end + 2 - i));
          i = end + 1;
          continue;
        }
      }
      if (c == ']' && i != class_start) in_class = false;
    }
    out += c;
  }
  return out;
}

namespace {

// Compiles `text` for Regex; JIT-compiled when possible (`jit`).
std::shared_ptr<void> compile(const std::string& text, uint32_t options, const std::string& where,
                              bool& jit) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                                   options, &err, &err_off, nullptr);
  if (!code) {
    DS_THROW(FormatError, "{}: invalid regex at offset {}: {}", where, size_t(err_off),
             pcre2_message(err));
  }
  jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::shared_ptr<void>(code,
                               [](void* c) { pcre2_code_free(static_cast<pcre2_code*>(c)); });
}

}  // namespace

Regex::Regex(std::string pattern, bool literal, const std::string& where)
    : pattern_(std::move(pattern)), literal_(literal) {
  if (literal_) {
    code_ = compile(pattern_, PCRE2_UTF | PCRE2_LITERAL, where, jit_);
    return;
  }
  const std::string wide = rewrite_escapes(pattern_), plain = rewrite_escapes(pattern_, false);
  code_ = compile(wide, PCRE2_UTF | PCRE2_UCP, where, jit_);
  if (plain != wide) plain_ = compile(plain, PCRE2_UTF | PCRE2_UCP, where, plain_jit_);
}

bool Regex::find(std::string_view subject, size_t start, size_t& mb, size_t& me,
                 bool plain) const {
  Scratch& s = scratch();
  const bool use_plain = plain && plain_;
  auto* code = static_cast<pcre2_code*>(use_plain ? plain_.get() : code_.get());
  const auto* subj = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc;
  if (use_plain ? plain_jit_ : jit_) {
    rc = pcre2_jit_match(code, subj, subject.size(), start, 0, s.md, s.mc);
  } else {
    rc = pcre2_match(code, subj, subject.size(), start, PCRE2_NO_UTF_CHECK, s.md, s.mc);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    DS_THROW(FormatError, "pre-tokenizer regex '{}': match failed: {}", pattern_,
             pcre2_message(rc));
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.md);
  mb = ov[0];
  me = ov[1];
  if (mb < start) mb = start;   // \K tricks can move the start; keep pieces ordered
  if (me < mb) me = mb;
  return true;
}

}  // namespace ds::tok::detail
