// UTF-8 helpers for the tokenizer and its tools: strict validation (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), single code point decoding, and lossy
// repair that replaces each maximal invalid subpart with U+FFFD (Unicode §3.9, the same
// policy as Rust's String::from_utf8_lossy used by HF tokenizers).
// reference: RFC 3629; Unicode Standard §3.9 "U+FFFD Substitution of Maximal Subparts".
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace ds::tok {

// Byte offset of the first byte of the first invalid sequence, nullopt if `s` is valid.
std::optional<size_t> first_invalid_utf8(std::string_view s);

// Length (1..4) of the valid UTF-8 sequence starting at s[pos], or 0 if invalid or
// truncated. On success `cp` holds the code point.
size_t utf8_decode(std::string_view s, size_t pos, char32_t& cp);

// Appends the UTF-8 encoding of `cp` (must be a scalar value) to `out`.
void utf8_append(std::string& out, char32_t cp);

// `s` with every maximal invalid subpart replaced by U+FFFD (EF BF BD).
std::string utf8_repair(std::string_view s);

// Bytes of the sequence a lead byte starts (1 for ASCII, 2-4), 0 for a byte that cannot
// start a well-formed sequence.
size_t utf8_sequence_length(unsigned char lead);
// Length of the maximal subpart at s[pos]: the longest prefix of a well-formed sequence
// starting there (Unicode §3.9), at least 1.
size_t utf8_maximal_subpart(std::string_view s, size_t pos);

}  // namespace ds::tok
