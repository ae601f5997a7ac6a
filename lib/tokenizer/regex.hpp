// PCRE2 wrapper for the pre-tokenizer's Split patterns: UTF + UCP, JIT-compiled when
// possible, with per-thread match data so one compiled pattern is shared by all threads.
// `\s` / `\S` are rewritten to the Unicode White_Space set that Oniguruma (HF tokenizers)
// uses; PCRE2's UCP `\s` would also match U+180E. General-category properties (`\p{L}`,
// `\pN`, `\p{Lo}`, `\P{S}`, ...) are widened to Unicode 16.0, the version HF tokenizers
// classifies by: PCRE2 10.42 (Debian 12) knows Unicode 14.0, where the 10,300 code points
// assigned since (emoji such as U+1FAE8, CJK extensions H and I, new scripts) are unassigned
// and would split text differently.
// reference: pcre2api(3), pcre2jit(3), pcre2pattern(3) (properties); Oniguruma doc/RE (\s for
// Unicode encodings); Unicode 16.0 UnicodeData.txt.
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
  // `start` a character boundary. Empty matches are reported (mb == me). `plain`: match with
  // the pattern without the Unicode 16.0 widening (below), which gives the same matches on
  // a subject for which has_recategorised() is false, and is faster: PCRE2 tests a wide class
  // item by item, where \p{L} alone is one table lookup.
  bool find(std::string_view subject, size_t start, size_t& mb, size_t& me,
            bool plain = false) const;
  const std::string& pattern() const { return pattern_; }
  bool literal() const { return literal_; }

 private:
  std::string pattern_;
  bool literal_ = false;
  bool jit_ = false, plain_jit_ = false;
  std::shared_ptr<void> code_;    // pcre2_code_8*
  std::shared_ptr<void> plain_;   // the pattern without the widening; null if that is code_
};

// The pattern as PCRE2 compiles it (exposed for tests): `\s`/`\S` replaced by explicit
// White_Space classes; `\p{X}` / `\pX` outside a class by `[\p{X}R]`, inside one by `\p{X}R`,
// and `\P{X}` / `\p{^X}` outside a class by `[^\p{X}R]`, where R lists the code points that
// Unicode 16.0 puts in X and 14.0 did not (X: a general category such as L, Lo, N, Nd, P, S, M,
// or L&, or Alphabetic: its letters and Nl, not the new Other_Alphabetic marks). Left as PCRE2
// reads them: a negated property inside a class (it cannot be widened there), C and Cn (the
// new code points stay unassigned in them: nothing is taken out of a class), other properties
// (scripts), and the one code point that left a category (U+1171E, Mn in 14.0 and Mc in 16.0,
// stays in \p{Mn}).
// `widen` false: only the White_Space rewrite.
std::string rewrite_escapes(std::string_view pattern, bool widen = true);

// The class text R above for property X ("" when none or X is not one of those names).
std::string unicode_added_ranges(std::string_view prop);
// Whether `s` (valid UTF-8) holds a code point whose category Unicode 16.0 changed from
// 14.0's.
bool has_recategorised(std::string_view s);

}  // namespace ds::tok::detail
