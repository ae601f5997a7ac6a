// The code points whose general category changed between Unicode 14.0 (PCRE2 10.42's tables)
// and 16.0 (Hugging Face tokenizers'), as class text for the pattern rewrite (regex.hpp).
// reference: Unicode 16.0 UnicodeData.txt (through unicodedata2); UTS #18 (property names).
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "regex.hpp"

namespace ds::tok::detail {

namespace {

struct Changed {
  char32_t lo, hi;
  char cat[3];   // the Unicode 16.0 general category, e.g. "Lo"
};

constexpr Changed kChanged[] = {
#include "unicode_added_table.inc"
};
static_assert(std::is_sorted(std::begin(kChanged), std::end(kChanged),
                             [](const Changed& a, const Changed& b) { return a.hi < b.lo; }));
static_assert(kChanged[0].lo >= 0x800);   // has_recategorised skips 1- and 2-byte sequences

// Whether general category `cat` (two letters) belongs to the property `prop`.
bool in_property(std::string_view cat, std::string_view prop) {
  if (prop == "L&" || prop == "LC") return cat == "Lu" || cat == "Ll" || cat == "Lt";
  if (prop.size() == 1) return cat[0] == prop[0] && prop[0] != 'C';   // C: new ones were Cn
  if (prop.size() == 2 && prop != "Cn") return cat == prop;
  if (prop == "Alphabetic") return cat[0] == 'L' || cat == "Nl";
  return false;
}

}  // namespace

std::string unicode_added_ranges(std::string_view prop) {
  std::string out;
  for (const Changed& c : kChanged) {
    if (!in_property(c.cat, prop)) continue;
    out += fmt::format("\\x{{{:X}}}", uint32_t(c.lo));
    if (c.hi != c.lo) out += fmt::format("-\\x{{{:X}}}", uint32_t(c.hi));
  }
  return out;
}

bool has_recategorised(std::string_view s) {
  // A bit per code point of the BMP; the rest (emoji, CJK extensions) by binary search.
  static const std::vector<uint64_t> bmp = [] {
    std::vector<uint64_t> bits(0x10000 / 64, 0);
    for (const Changed& c : kChanged)
      for (char32_t cp = c.lo; cp <= c.hi && cp < 0x10000; ++cp)
        bits[cp / 64] |= uint64_t(1) << (cp % 64);
    return bits;
  }();
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    if (i + 8 <= n) {   // eight ASCII bytes at a time
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    if (static_cast<unsigned char>(s[i]) < 0xE0) {   // below U+0800, or a continuation byte
      ++i;
      continue;
    }
    // a 3- or 4-byte sequence, decoded without utf8_decode's validation (s is valid UTF-8; a
    // truncated tail is not looked at): that check cost 1% more instructions on mix.txt
    const auto b = [&](size_t k) { return char32_t(static_cast<unsigned char>(s[i + k])); };
    const size_t len = b(0) < 0xF0 ? 3 : 4;
    if (i + len > n) break;
    const char32_t cp = len == 3 ? (b(0) & 0x0F) << 12 | (b(1) & 0x3F) << 6 | (b(2) & 0x3F)
                                 : (b(0) & 0x07) << 18 | (b(1) & 0x3F) << 12 |
                                       (b(2) & 0x3F) << 6 | (b(3) & 0x3F);
    if (cp < 0x10000) {
      if (bmp[cp / 64] >> (cp % 64) & 1) return true;
    } else {
      const Changed* it = std::upper_bound(std::begin(kChanged), std::end(kChanged), cp,
                                           [](char32_t c, const Changed& r) { return c < r.lo; });
      if (it != std::begin(kChanged) && cp <= (it - 1)->hi) return true;
    }
    i += len;
  }
  return false;
}

}  // namespace ds::tok::detail
