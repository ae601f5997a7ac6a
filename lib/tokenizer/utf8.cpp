// UTF-8 validation, decoding and lossy repair (see include/ds/tokenizer/utf8.hpp).
// reference: RFC 3629 table of well-formed byte sequences; Unicode §3.9 Table 3-7.
#include "ds/tokenizer/utf8.hpp"

#include <cstdint>
#include <cstring>

namespace ds::tok {

size_t utf8_decode(std::string_view s, size_t pos, char32_t& cp) {
  const size_t n = s.size();
  if (pos >= n) return 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + pos;
  const size_t left = n - pos;
  const unsigned char b0 = p[0];
  if (b0 < 0x80) { cp = b0; return 1; }
  if (b0 < 0xC2) return 0;                       // continuation byte or overlong 2-byte
  if (b0 < 0xE0) {
    if (left < 2 || (p[1] & 0xC0) != 0x80) return 0;
    cp = char32_t(b0 & 0x1F) << 6 | (p[1] & 0x3F);
    return 2;
  }
  if (b0 < 0xF0) {
    if (left < 2) return 0;
    const unsigned char b1 = p[1];
    // E0 needs A0..BF (no overlong), ED needs 80..9F (no surrogates).
    const unsigned char lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    if (b1 < lo || b1 > hi) return 0;
    if (left < 3 || (p[2] & 0xC0) != 0x80) return 0;
    cp = char32_t(b0 & 0x0F) << 12 | char32_t(b1 & 0x3F) << 6 | (p[2] & 0x3F);
    return 3;
  }
  if (b0 > 0xF4) return 0;
  if (left < 2) return 0;
  const unsigned char b1 = p[1];
  // F0 needs 90..BF (no overlong), F4 needs 80..8F (<= U+10FFFF).
  const unsigned char lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
  if (b1 < lo || b1 > hi) return 0;
  if (left < 3 || (p[2] & 0xC0) != 0x80) return 0;
  if (left < 4 || (p[3] & 0xC0) != 0x80) return 0;
  cp = char32_t(b0 & 0x07) << 18 | char32_t(b1 & 0x3F) << 12 | char32_t(p[2] & 0x3F) << 6 |
       (p[3] & 0x3F);
  return 4;
}

std::optional<size_t> first_invalid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (static_cast<unsigned char>(s[i]) < 0x80) { ++i; continue; }
    char32_t cp;
    const size_t len = utf8_decode(s, i, cp);
    if (len == 0) return i;
    i += len;
  }
  return std::nullopt;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

size_t utf8_sequence_length(unsigned char b0) {
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 < 0xE0) return 2;
  if (b0 >= 0xE0 && b0 < 0xF0) return 3;
  if (b0 >= 0xF0 && b0 <= 0xF4) return 4;
  return 0;
}

size_t utf8_maximal_subpart(std::string_view s, size_t pos) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + pos;
  const size_t left = s.size() - pos;
  const unsigned char b0 = p[0];
  const size_t need = utf8_sequence_length(b0);
  if (need < 2) return 1;
  // the second byte's range narrows for E0, ED, F0, F4 (no overlongs, surrogates, > U+10FFFF)
  const unsigned char lo = b0 == 0xE0 ? 0xA0 : b0 == 0xF0 ? 0x90 : 0x80;
  const unsigned char hi = b0 == 0xED ? 0x9F : b0 == 0xF4 ? 0x8F : 0xBF;
  size_t k = 1;
  if (k < left && p[k] >= lo && p[k] <= hi) {
    ++k;
    while (k < need && k < left && (p[k] & 0xC0) == 0x80) ++k;
  }
  return k;
}

std::string utf8_repair(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    char32_t cp;
    const size_t len = utf8_decode(s, i, cp);
    if (len > 0) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      i += utf8_maximal_subpart(s, i);
    }
  }
  return out;
}

}  // namespace ds::tok
