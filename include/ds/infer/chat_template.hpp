// The DeepSeek-V3 chat template (original Dec-2024 revision), rendered natively: ds ships no
// Jinja engine, so a tokenizer_config.json is accepted only when its chat_template is exactly
// V3's published text (or ds-tokenize's plain template), and then the built-in renderer
// reproduces it byte for byte, quirks included. Rendering also reports which character spans
// the model is trained to produce (assistant content + EOS), so SFT can mask the loss to
// assistant tokens.
// reference: spec §8.6 (rendering rules), §2.5; tokenizer_config.json "chat_template".
#pragma once
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::tok {
class Tokenizer;
}

namespace ds::infer {

struct ToolCall {
  std::string type = "function";
  std::string name;        // function.name
  std::string arguments;   // function.arguments, a JSON text, copied verbatim
};

struct ChatMessage {
  std::string role;                    // "system", "user", "assistant" or "tool"
  std::optional<std::string> content;  // null only for an assistant turn with tool_calls
  std::vector<ToolCall> tool_calls;    // used only when content is null
};

// A character range [begin, end) of the rendered text.
struct TextSpan {
  size_t begin = 0;
  size_t end = 0;
};

struct MessageSpan {
  size_t message = 0;   // index into the messages
  TextSpan all;         // everything this message rendered (empty for system messages)
  TextSpan target;      // what the assistant generates: content + EOS (or its tool calls);
                        // empty for other roles
};

struct RenderedChat {
  std::string text;                  // starts with the BOS text: tokenize without adding BOS
  std::vector<MessageSpan> spans;    // one per message, in order
};

class ChatTemplate {
 public:
  // The DeepSeek-V3 template with its own BOS / EOS strings.
  static ChatTemplate deepseek_v3();
  // Reads bos_token / eos_token (a string or an {"content": ...} object) and chat_template.
  // IoError if unreadable; FormatError naming the file and field if malformed, missing, or
  // if the template is not DeepSeek-V3's.
  static ChatTemplate from_tokenizer_config(const std::filesystem::path& path);
  static ChatTemplate from_config_json(std::string_view json, const std::string& source);

  // FormatError (naming messages[i]) for an unknown role, a null content where one is
  // required, an assistant turn with neither content nor tool calls, tool calls on another
  // role or beside a content (the template would drop them); and under ds-tokenize's
  // plain template (tok::ds_chat_template, which renders no tools) a tool turn or tool call,
  // since Hugging Face tools rendering that template would not see what was trained.
  RenderedChat render(const std::vector<ChatMessage>& messages,
                      bool add_generation_prompt) const;

  const std::string& bos_token() const { return bos_; }
  const std::string& eos_token() const { return eos_; }

  // FormatError naming `source` (its tokenizer_config.json) unless bos_token and eos_token
  // each encode to one token of `tok`: rendered text must give the BOS and EOS ids.
  void check_tokens(const tok::Tokenizer& tok, const std::string& source) const;

 private:
  std::string bos_, eos_;
  std::string plain_source_;   // the tokenizer_config.json holding ds-tokenize's plain template
};

// True when `jinja` is, byte for byte, the chat_template of DeepSeek-V3's published
// tokenizer_config.json (Dec-2024; recognised by its XXH64). Templates derived from it (R1's
// </think> stripping, V3-0324, last-system-message-only variants) are not: they render
// differently.
bool is_deepseek_v3_template(std::string_view jinja);

// Parses an OpenAI-style messages array ([{"role":..., "content":..., "tool_calls":[...]}]).
// FormatError naming `source` and messages[i].field.
std::vector<ChatMessage> parse_messages(std::string_view json, const std::string& source);

}  // namespace ds::infer
