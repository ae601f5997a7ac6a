// libFuzzer target for the JSONL records users hand to ds-sft and ds-rl. The first input byte
// picks the reader; the rest is the text:
//   0-2: one SFT line through sft::parse_example with --loss-on assistant, last or all;
//   3:   an RL prompt file through rl::load_prompts.
// A malformed record may only ever raise ds::Error; an accepted one must keep the promises of
// the reader's contract (checked below). Formats: docs/formats.md ("SFT data", "RL prompts").
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "ds/core/error.hpp"
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0: check_sft(text, ds::sft::LossOn::assistant); break;
      case 1: check_sft(text, ds::sft::LossOn::last); break;
      case 2: check_sft(text, ds::sft::LossOn::all); break;
      default: check_prompts(text); break;
    }
  } catch (const ds::Error&) {
    // expected for malformed input; anything else propagates and crashes the fuzzer
  }
  return 0;
}
