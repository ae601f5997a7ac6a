// libFuzzer target: arbitrary bytes as a tokenizer.json. Loading must either succeed or
// throw a ds::Error (any other exception or a crash is a bug); a loaded tokenizer must
// encode and decode a fixed sample without failing.
// reference: include/ds/tokenizer/tokenizer.hpp (Tokenizer::from_json contract).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ds/core/error.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto tok = ds::tok::Tokenizer::from_json(text, "fuzz.json");
    const auto ids = tok.encode("Hello, world! 0123 <x> \xE4\xB8\xAD\xE6\x96\x87 \t\n");
    (void)tok.decode(ids);
    (void)tok.pre_tokenizer().to_json();
  } catch (const ds::Error&) {
    // Rejected input: the expected outcome for almost every mutation.
  }
  return 0;
}
