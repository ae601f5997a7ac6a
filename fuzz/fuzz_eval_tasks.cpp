// libFuzzer target for ds-eval's task files. The first input byte picks the task layout, the
// second the --gold-base of the multiple-choice ones; the rest is the data file:
//   0: PIQA (goal / sol1 / sol2); the text after the first NUL byte is its labels file;
//   1: a choices array with a letter or index gold ("question", "choices.text", "answerKey");
//   2: named choice fields with a numeric gold ("ctx", "ending0".."ending3", "label");
//   3: GSM8K ("question", "answer" ending in "#### N").
// A malformed file may only ever raise ds::Error; accepted items must keep the loaders'
// promises (checked below). Formats: man/ds-eval.1 (TASKS).
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "ds/core/error.hpp"
#include "ds/eval/gen_tasks.hpp"
#include "ds/eval/tasks.hpp"
#include "fuzz_scratch.hpp"

namespace {

const std::filesystem::path& data_path() {
  static const std::filesystem::path p = ds_fuzz::scratch_path("eval", ".jsonl");
  return p;
}

const std::filesystem::path& labels_path() {
  static const std::filesystem::path p = ds_fuzz::scratch_path("eval", "-labels.lst");
  return p;
}

void write(const std::filesystem::path& p, std::string_view text) {
  ds_fuzz::write_file(p, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

ds::eval::McSpec spec_for(int layout, int base) {
  ds::eval::McSpec s;
  if (layout == 0) {
    s = ds::eval::piqa_spec();
  } else if (layout == 1) {
    s.name = "arc";
    s.context_field = "question";
    s.choices_field = "choices.text";
    s.gold_field = "answerKey";
  } else {
    s.name = "hellaswag";
    s.context_field = "ctx";
    s.choice_fields = {"ending0", "ending1", "ending2", "ending3"};
    s.gold_field = "label";
  }
  s.gold_base = base;
  return s;
}

void check_mc(int layout, int base, std::string_view text) {
  std::string_view labels;
  if (layout == 0) {
    const size_t nul = text.find('\0');
    labels = nul == std::string_view::npos ? std::string_view() : text.substr(nul + 1);
    text = text.substr(0, nul);
    write(labels_path(), labels);
  }
  write(data_path(), text);
  const auto items = ds::eval::load_mc(data_path(), spec_for(layout, base), labels_path());
  if (items.empty()) __builtin_trap();                  // an empty file is an error
  for (const auto& it : items)
    if (it.line == 0 || it.choices.size() < 2 || it.gold >= it.choices.size()) __builtin_trap();
}

void check_gen(std::string_view text) {
  write(data_path(), text);
  const auto items = ds::eval::load_gen(data_path());
  if (items.empty()) __builtin_trap();
  for (const auto& it : items) {
    if (it.gold.empty() || ds::eval::normalize_number(it.gold) != it.gold) __builtin_trap();
    if (ds::eval::extract_gold(it.answer) != it.gold) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 2, size - 2);
  const int layout = data[0] % 4;
  const int base = int(data[1] % 4) - 1;   // -1..2: 1 is the usual one-based labels
  try {
    if (layout == 3)
      check_gen(text);
    else
      check_mc(layout, base, text);
  } catch (const ds::Error&) {
    // expected for malformed input; anything else propagates and crashes the fuzzer
  }
  return 0;
}
