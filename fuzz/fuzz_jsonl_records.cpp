// libFuzzer target for the JSONL records users hand to ds-sft and ds-rl. The first input byte
// picks the reader; the rest is the text:
//   0-2: one SFT line through sft::parse_example with --loss-on assistant, last or all;
//   3:   an RL prompt file through rl::load_prompts;
//   4-5: a messages array (ds-generate --jsonl, ds-eval --chat) through infer::parse_messages,
//        rendered by the DeepSeek-V3 template without and with the generation prompt;
//   6:   a tokenizer_config.json through ChatTemplate::from_config_json;
//   7:   a generation_config.json through infer::parse_generation_config (vocabulary 1000).
// A malformed record may only ever raise ds::Error; an accepted one must keep the promises of
// the reader's contract (checked below). Formats: docs/formats.md ("SFT data", "RL prompts"),
// include/ds/infer/chat_template.hpp, include/ds/infer/hf_generation_config.hpp.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "ds/core/error.hpp"
#include "ds/infer/chat_template.hpp"
#include "ds/infer/hf_generation_config.hpp"
#include "ds/rl/prompts.hpp"
#include "ds/sft/data.hpp"
#include "fuzz_scratch.hpp"

namespace {

const std::filesystem::path& scratch_path() {
  static const std::filesystem::path p = ds_fuzz::scratch_path("prompts", ".jsonl");
  return p;
}

void check_sft(std::string_view line, ds::sft::LossOn loss_on) {
  const auto msgs = ds::sft::parse_example(line, "fuzz.jsonl:1", loss_on);
  bool other = false;
  for (const auto& m : msgs) {
    if (m.role == "system" && other) __builtin_trap();   // systems only before other turns
    if (m.role != "system") other = true;
  }
  if (!other) __builtin_trap();                          // at least one non-system turn
  if (loss_on != ds::sft::LossOn::all && msgs.back().role != "assistant") __builtin_trap();
}

void check_prompts(std::string_view text) {
  ds_fuzz::write_file(scratch_path(), reinterpret_cast<const uint8_t*>(text.data()),
                      text.size());
  const auto prompts = ds::rl::load_prompts(scratch_path());
  if (prompts.empty()) __builtin_trap();                 // an empty file is an error
  for (const auto& p : prompts)
    if (p.line == 0 || (p.prompt.empty() && p.messages.empty())) __builtin_trap();
}

// Spans lie inside the text, in message order, each target inside its message's span.
void check_chat(std::string_view text, bool generation_prompt) {
  const auto msgs = ds::infer::parse_messages(text, "fuzz.jsonl:1");
  const auto chat = ds::infer::ChatTemplate::deepseek_v3().render(msgs, generation_prompt);
  if (chat.spans.size() != msgs.size()) __builtin_trap();
  size_t prev_end = 0;
  for (size_t i = 0; i < chat.spans.size(); ++i) {
    const auto& sp = chat.spans[i];
    if (sp.message != i || sp.all.begin > sp.all.end || sp.all.end > chat.text.size())
      __builtin_trap();
    if (sp.all.begin < sp.all.end && sp.all.begin < prev_end) __builtin_trap();
    if (sp.target.begin < sp.target.end &&
        (sp.target.begin < sp.all.begin || sp.target.end > sp.all.end))
      __builtin_trap();
    if (sp.all.end > prev_end) prev_end = sp.all.end;
  }
}

void check_tokenizer_config(std::string_view text) {
  const auto t = ds::infer::ChatTemplate::from_config_json(text, "tokenizer_config.json");
  if (t.bos_token().empty() || t.eos_token().empty()) __builtin_trap();
}

// Accepted defaults are ones the sampler and the stop checker take as they are.
void check_generation_config(std::string_view text) {
  const auto d =
      ds::infer::parse_generation_config(std::string(text), "generation_config.json", 1000);
  if (d.do_sample != d.temperature.has_value()) __builtin_trap();
  if (d.temperature && !(*d.temperature > 0 && std::isfinite(*d.temperature))) __builtin_trap();
  if ((d.top_k || d.top_p) && !d.do_sample) __builtin_trap();
  if (d.top_k && *d.top_k < 0) __builtin_trap();
  if (d.top_p && !(*d.top_p > 0 && *d.top_p <= 1)) __builtin_trap();
  if (d.max_new_tokens && *d.max_new_tokens < 1) __builtin_trap();
  for (const auto id : d.eos_ids)
    if (id >= 1000) __builtin_trap();
  for (const auto& s : d.stop_strings)
    if (s.empty()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 8) {
      case 0: check_sft(text, ds::sft::LossOn::assistant); break;
      case 1: check_sft(text, ds::sft::LossOn::last); break;
      case 2: check_sft(text, ds::sft::LossOn::all); break;
      case 3: check_prompts(text); break;
      case 4: check_chat(text, false); break;
      case 5: check_chat(text, true); break;
      case 6: check_tokenizer_config(text); break;
      default: check_generation_config(text); break;
    }
  } catch (const ds::Error&) {
    // expected for malformed input; anything else propagates and crashes the fuzzer
  }
  return 0;
}
