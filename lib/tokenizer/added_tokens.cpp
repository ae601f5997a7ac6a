// Added-token matcher (see added_tokens.hpp). Word characters are the Rust regex crate's
// Unicode `\w` (Alphabetic, marks, decimal digits, connector punctuation, the two joiners;
// UTS #18 annex C) and whitespace is Unicode White_Space, as HF tokenizers tests them for
// single_word, lstrip and rstrip (`^\w`, `\w$`, `\s*`).
// reference: HF tokenizers added_vocabulary.rs find_matches (behaviour only); UTS #18.
#include "added_tokens.hpp"

#include <algorithm>
#include <cstring>

#include "ds/tokenizer/utf8.hpp"
#include "regex.hpp"

namespace ds::tok::detail {

namespace {

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

bool is_word_char(char32_t c) {
  if (c < 0x80) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           c == '_';
  }
  static const Regex re(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])", false,
                        "added-token word class");
  std::string buf;
  utf8_append(buf, c);
  size_t mb, me;
  return re.find(buf, 0, mb, me);
}

// Last code point of s (false if s is empty or ends in an invalid sequence).
bool last_char(std::string_view s, size_t& at, char32_t& cp) {
  if (s.empty()) return false;
  size_t i = s.size() - 1;
  for (int k = 0; k < 3 && i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80; ++k) --i;
  at = i;
  return utf8_decode(s, i, cp) == s.size() - i;
}

bool ends_with_word(std::string_view s) {
  size_t at;
  char32_t cp;
  return last_char(s, at, cp) && is_word_char(cp);
}

bool starts_with_word(std::string_view s) {
  char32_t cp;
  return utf8_decode(s, 0, cp) > 0 && is_word_char(cp);
}

// Start of the whitespace run that ends `s` (s.size() if none).
size_t whitespace_run_start(std::string_view s) {
  size_t end = s.size(), at;
  char32_t cp;
  while (last_char(s.substr(0, end), at, cp) && is_white_space(cp)) end = at;
  return end;
}

// Length of the whitespace run that starts `s`.
size_t whitespace_run_length(std::string_view s) {
  size_t i = 0;
  char32_t cp;
  while (size_t len = utf8_decode(s, i, cp)) {
    if (!is_white_space(cp)) break;
    i += len;
  }
  return i;
}

}  // namespace

int AddedMatcher::child(int node, unsigned char b) const {
  const auto& e = nodes_[size_t(node)].edges;
  auto it = std::lower_bound(e.begin(), e.end(), std::make_pair(b, 0),
                             [](const auto& x, const auto& y) { return x.first < y.first; });
  return (it != e.end() && it->first == b) ? it->second : -1;
}

void AddedMatcher::build(const std::vector<AddedToken>& tokens, const std::vector<size_t>& which) {
  tokens_ = &tokens;
  for (size_t idx : which) {
    const std::string& s = tokens[idx].content;
    if (s.empty()) continue;
    int node = 0;
    for (unsigned char b : s) {
      int next = child(node, b);
      if (next < 0) {
        next = int(nodes_.size());
        nodes_.emplace_back();
        auto& e = nodes_[size_t(node)].edges;
        auto it = std::lower_bound(e.begin(), e.end(), std::make_pair(b, 0),
                                   [](const auto& x, const auto& y) { return x.first < y.first; });
        e.insert(it, {b, next});
      }
      node = next;
    }
    nodes_[size_t(node)].token = int(idx);
    first_byte_[static_cast<unsigned char>(s[0])] = true;
  }
  int count = 0;
  for (int b = 0; b < 256; ++b)
    if (first_byte_[b]) { ++count; single_first_ = b; }
  if (count != 1) single_first_ = -1;
}

// Leftmost-longest match starting at or after `from`.
bool AddedMatcher::find(std::string_view text, size_t from, Match& m) const {
  const size_t n = text.size();
  for (size_t pos = from; pos < n; ++pos) {
    if (single_first_ >= 0) {
      const void* p = std::memchr(text.data() + pos, single_first_, n - pos);
      if (!p) return false;
      pos = size_t(static_cast<const char*>(p) - text.data());
    } else if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      continue;
    }
    int node = 0, best_tok = -1;
    size_t best_end = 0;
    for (size_t k = pos; k < n; ++k) {
      node = child(node, static_cast<unsigned char>(text[k]));
      if (node < 0) break;
      if (nodes_[size_t(node)].token >= 0) {
        best_tok = nodes_[size_t(node)].token;
        best_end = k + 1;
      }
    }
    if (best_tok >= 0) {
      m = {pos, best_end, best_tok};
      return true;
    }
  }
  return false;
}

void AddedMatcher::split(std::string_view text, std::vector<Span>& out) const {
  size_t done = 0, search = 0;   // text[..done] emitted; next search position
  Match m;
  while (!empty() && search < text.size() && find(text, search, m)) {
    search = m.end;
    const AddedToken& t = (*tokens_)[size_t(m.token)];
    size_t start = m.begin, stop = m.end;
    if (t.single_word) {
      const bool left_ok = start == 0 || !ends_with_word(text.substr(0, start));
      const bool right_ok = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!left_ok || !right_ok) continue;
    }
    if (t.lstrip) start = std::max(whitespace_run_start(text.substr(0, start)), done);
    if (t.rstrip) stop += whitespace_run_length(text.substr(stop));
    // As HF: the next match is searched from this one's end, before the whitespace rstrip
    // took, so a token that starts inside that whitespace is still emitted (its span overlaps
    // the previous one's: "<s> sp" with rstrip "<s>" and an added " sp" gives both tokens).
    if (start > done) out.push_back({done, start, -1});
    out.push_back({start, stop, m.token});
    done = stop;
  }
  if (done < text.size()) out.push_back({done, text.size(), -1});
}

}  // namespace ds::tok::detail
