// A checkpoint's generation_config.json (the Hugging Face GenerationConfig file that ships with
// released models; DeepSeek-V3's asks for do_sample, temperature 0.6, top_p 0.95) read as
// ds-generate's defaults. Which fields apply, as transformers' generate() reads them:
//   do_sample       bool; absent = false. temperature / top_k / top_p apply only when true
//                   (greedy decoding ignores them, as transformers does).
//   temperature     >= 0, and > 0 when do_sample (absent: 1.0, transformers' default).
//   top_k           integer >= 0 (0 = off). Absent = off: transformers' implicit top_k = 50
//                   is not applied (vLLM and SGLang, DeepSeek-V3's serving stacks, do the same).
//   top_p           in (0, 1].
//   max_new_tokens  integer >= 1.
//   eos_token_id    an id or a list of ids: extra stop ids (transformers replaces the stop
//                   set with them; here the tokenizer's EOS stays one).
//   stop_strings    a string or a list of non-empty strings, used as --stop strings: the
//                   completion is cut before the string (transformers keeps it; the same
//                   stopping point).
// bos/pad/decoder_start ids, output options (use_cache, output_*, return_dict_in_generate)
// and bookkeeping keys (_from_model_config, transformers_version) are accepted and unused;
// null means absent. Any other field that is present and not at its neutral value
// (repetition_penalty != 1, num_beams > 1, ...) is listed in `not_applied` for the caller to
// log: it is the model's preference, not broken data. A mistyped or out-of-range value of a
// field above is a FormatError naming the file and the field, whether or not do_sample uses
// it (ranges as the floats the sampler gets).
// reference: transformers GenerationConfig (field names, do_sample semantics).
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ds/tokenizer/tokenizer.hpp"

namespace ds::infer {

struct GenerationDefaults {
  std::string src;                         // the file read (for log lines and errors)
  bool do_sample = false;
  std::optional<float> temperature;        // set iff do_sample (1.0 when the file has none)
  std::optional<int> top_k;                // only when do_sample and present
  std::optional<float> top_p;              // only when do_sample and present
  std::optional<int64_t> max_new_tokens;
  std::vector<tok::TokenId> eos_ids;       // eos_token_id, as a list
  std::vector<std::string> stop_strings;   // stop_strings, as a list
  std::vector<std::string> not_applied;    // "repetition_penalty = 1.1", "top_k (do_sample is
                                           // false)", ...
};

// Parses a generation_config.json text; `src` names it in errors. eos ids must be below
// `vocab_size` (0: not checked).
GenerationDefaults parse_generation_config(const std::string& text, const std::string& src,
                                           int64_t vocab_size);

// The file parsed, or nullopt when there is no such file. IoError when it cannot be read or
// is a symbolic link to a missing file; FormatError when it is not a regular file or is
// larger than 1 MiB.
std::optional<GenerationDefaults> read_generation_config(const std::filesystem::path& file,
                                                         int64_t vocab_size);

}  // namespace ds::infer
