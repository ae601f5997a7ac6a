// Pre-tokenization: a Sequence of Split(regex, Isolated) steps followed by ByteLevel
// (which only maps bytes to the GPT-2 alphabet). Each Split applies to every piece the
// previous one produced; matches and the gaps between them are both kept.
// reference: spec §8.3.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ds::tok {

class PreTokenizer {
 public:
  // The DeepSeek-V3 pre-tokenizer (three Splits, then ByteLevel without prefix space).
  static PreTokenizer deepseek_v3();
  // From the JSON text of a tokenizer.json "pre_tokenizer" object; `where` names it in
  // errors (e.g. "tokenizer.json: pre_tokenizer").
  static PreTokenizer from_json(std::string_view json_object, const std::string& where);

  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;
  ~PreTokenizer();

  // Appends the pieces of `text` (views into `text`, in order, covering it exactly).
  // Thread-safe (const); uses per-thread matching scratch internally.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;
  // The JSON object this pre-tokenizer serialises to (for writing tokenizer.json).
  std::string to_json() const;
  // True when the last step is the only ByteLevel step (what byte-level BPE needs: the
  // Splits see raw text, then bytes map to the GPT-2 alphabet).
  bool ends_with_byte_level() const;

 private:
  struct Impl;
  explicit PreTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Whether `bytes` is whole text of the kind DeepSeek-V3's pre-tokenizer joins punctuation and
// line breaks into (its alternative ` ?[^\s\p{L}\p{N}]+[\r\n]*`, with at least one CR/LF): an
// optional space, one or more characters that are neither whitespace, letters nor numbers
// (Unicode 16.0 categories, as the pre-tokenizer's own patterns), then only CR/LF. Bytes that
// are not valid UTF-8 (a token ending a character another token begins): false.
bool joins_punctuation_and_line_break(std::string_view bytes);

// GPT-2 byte <-> printable-unicode alphabet used by ByteLevel (UTF-8 encoded strings).
const std::string& byte_to_unicode(unsigned char b);
// Inverse mapping of a whole token string; false if a char is outside the alphabet.
bool unicode_to_bytes(std::string_view token, std::string& bytes_out);

}  // namespace ds::tok
