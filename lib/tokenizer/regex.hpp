// PCRE2 wrapper for the pre-tokenizer's Split patterns: UTF + UCP, JIT-compiled when
// possible, with per-thread match data so one compiled pattern is shared by all threads.
// `\s` / `\S` are rewritten to the Unicode White_Space set that Oniguruma (HF tokenizers)
// uses; PCRE2's UCP `\s` would also match U+180E.
// reference: pcre2api(3), pcre2jit(3); Oniguruma doc/RE (\s for Unicode encodings).
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace ds::tok::detail {

class Regex {
 public:
  // Compiles `pattern` (a literal string when `literal`); FormatError naming `where`.
  Regex(std::string pattern, bool literal, const std::string& where);
  // First match in subject[start..] as [mb, me). `subject` must be valid UTF-8 and
  // `start` a character boundary. Empty matches are reported (mb == me).
  bool find(std::string_view subject, size_t start, size_t& mb, size_t& me) const;
  const std::string& pattern() const { return pattern_; }
  bool literal() const { return literal_; }

 private:
  std::string pattern_;
  bool literal_ = false;
  bool jit_ = false;
  std::shared_ptr<void> code_;   // pcre2_code_8*
};

// The pattern with `\s`/`\S` replaced by explicit White_Space classes (exposed for tests).
std::string rewrite_whitespace_escapes(std::string_view pattern);

}  // namespace ds::tok::detail
