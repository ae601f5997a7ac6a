// RL prompt files (JSONL, docs/formats.md "RL prompts and reward command"): one object per
// line with the prompt as "prompt" (a string) or "messages" (an OpenAI-style array rendered
// with the checkpoint's chat template), and the reference answer as "reference" (or
// "answer"). Blank lines are skipped; every error names file:line and the field.
// reference: spec §5.2-5.3 (rule-based rewards need a reference answer per prompt).
#pragma once
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ds/infer/chat_template.hpp"

namespace ds::rl {

struct RlPrompt {
  size_t line = 0;                            // 1-based line in the file
  std::string prompt;                         // "prompt", or the last user message's content
  std::vector<infer::ChatMessage> messages;   // a "messages" record (empty for "prompt")
  std::optional<std::string> reference;       // "reference" or "answer"
};

// FormatError "file:line: ..." for invalid JSON, a non-object, neither or both of "prompt"
// and "messages", both "reference" and "answer", wrong types, an empty prompt, a messages
// array without a user turn; "file: no prompts" for an empty file. IoError if unreadable.
std::vector<RlPrompt> load_prompts(const std::filesystem::path& path);

}  // namespace ds::rl
