// GPT-2 ByteLevel alphabet: every byte maps to one printable code point. Bytes that are
// printable Latin-1 ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) map to themselves; the
// other 68 map to U+0100.. in increasing byte order.
// reference: openai/gpt-2 encoder.py bytes_to_unicode (algorithm), spec §8.4.
#include <array>
#include <string>
#include <string_view>

#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/utf8.hpp"

namespace ds::tok {

namespace {

struct ByteTables {
  std::array<std::string, 256> to_unicode;
  std::array<int, 256 + 68> from_cp;   // code point -> byte, -1 outside the alphabet
  ByteTables() {
    from_cp.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) ||
                             (b >= 0xAE && b <= 0xFF);
      const int cp = printable ? b : next++;
      utf8_append(to_unicode[size_t(b)], char32_t(cp));
      from_cp[size_t(cp)] = b;
    }
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

const std::string& byte_to_unicode(unsigned char b) { return tables().to_unicode[b]; }

bool unicode_to_bytes(std::string_view token, std::string& bytes_out) {
  const ByteTables& t = tables();
  const size_t old_size = bytes_out.size();
  size_t i = 0;
  while (i < token.size()) {
    char32_t cp;
    const size_t len = utf8_decode(token, i, cp);
    if (len == 0 || cp >= t.from_cp.size() || t.from_cp[cp] < 0) {
      bytes_out.resize(old_size);   // leave the output as it was
      return false;
    }
    bytes_out.push_back(char(t.from_cp[cp]));
    i += len;
  }
  return true;
}

}  // namespace ds::tok
