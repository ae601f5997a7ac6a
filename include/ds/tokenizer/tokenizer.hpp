// Byte-level BPE tokenizer compatible with Hugging Face `tokenizer.json` files of the
// GPT-2/DeepSeek family: added tokens matched first, a pre-tokenizer Sequence of Split
// (regex, Isolated) and ByteLevel, a BPE model with ranked merges, a ByteLevel decoder.
// Unsupported components are FormatErrors that name the component.
// reference: spec §8 (DeepSeek-V3 tokenizer), HF tokenizers' JSON layout.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ds::tok {

using TokenId = uint32_t;

struct AddedToken {
  std::string content;
  TokenId id = 0;
  bool special = false;      // removed by decode(skip_special = true)
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

class PreTokenizer;   // pretokenizer.hpp
class Tokenizer {
 public:
  // Throws IoError (unreadable) or FormatError (invalid / unsupported), naming the file
  // and, for FormatError, the JSON component ("pre_tokenizer.pretokenizers[1]", ...).
  static Tokenizer from_file(const std::filesystem::path& path);
  static Tokenizer from_json(std::string_view json, const std::string& source_name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Appends the ids of `text` to `out`. With match_added_tokens = false added tokens are
  // not recognised in the text (safe for untrusted text). Thread-safe (const).
  void encode(std::string_view text, std::vector<TokenId>& out,
              bool match_added_tokens = true) const;
  std::vector<TokenId> encode(std::string_view text, bool match_added_tokens = true) const;
  // Concatenates the byte strings of `ids`; invalid UTF-8 sequences (possible only for
  // arbitrary id lists) become U+FFFD. Unknown ids are a FormatError.
  std::string decode(std::span<const TokenId> ids, bool skip_special = false) const;
  // The raw bytes of one id (no UTF-8 repair) -- for streaming decoders.
  std::string token_bytes(TokenId id) const;

  size_t vocab_size() const;    // max id + 1 over the BPE vocab and added tokens
  std::optional<TokenId> token_to_id(std::string_view token) const;   // vocab or added
  std::string id_to_token(TokenId id) const;                          // "" if unknown
  const std::vector<AddedToken>& added_tokens() const;
  const PreTokenizer& pre_tokenizer() const;
  // XXH64 of the tokenizer.json bytes, as 16 hex digits; stored in shards and manifests.
  const std::string& fingerprint() const;
  const std::string& source_name() const;

  // Convenience ids used by the pipeline (DeepSeek-V3 names; nullopt if absent).
  std::optional<TokenId> bos_id() const;   // <｜begin▁of▁sentence｜>
  std::optional<TokenId> eos_id() const;   // <｜end▁of▁sentence｜>

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// DeepSeek-V3 token strings (U+FF5C bars, U+2581 spaces).
namespace special {
inline constexpr std::string_view kBos =
    "<\xEF\xBD\x9C"
    "begin\xE2\x96\x81of\xE2\x96\x81sentence"
    "\xEF\xBD\x9C>";
inline constexpr std::string_view kEos =
    "<\xEF\xBD\x9C"
    "end\xE2\x96\x81of\xE2\x96\x81sentence"
    "\xEF\xBD\x9C>";
inline constexpr std::string_view kPad = "<\xEF\xBD\x9C\xE2\x96\x81pad\xE2\x96\x81\xEF\xBD\x9C>";
inline constexpr std::string_view kFimHole = "<\xEF\xBD\x9C" "fim\xE2\x96\x81hole" "\xEF\xBD\x9C>";
inline constexpr std::string_view kFimBegin =
    "<\xEF\xBD\x9C"
    "fim\xE2\x96\x81"
    "begin"
    "\xEF\xBD\x9C>";
inline constexpr std::string_view kFimEnd = "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end" "\xEF\xBD\x9C>";
inline constexpr std::string_view kUser = "<\xEF\xBD\x9CUser\xEF\xBD\x9C>";
inline constexpr std::string_view kAssistant = "<\xEF\xBD\x9C" "Assistant" "\xEF\xBD\x9C>";
}  // namespace special

}  // namespace ds::tok
