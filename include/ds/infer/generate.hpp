// ds-generate's library entry point: options (defaults live here, the tool only binds flags)
// and run_generate(), which loads a checkpoint (ours or a Hugging Face DeepSeek-V3 directory,
// via model::load_pretrained), builds the Engine and runs one of three modes: a single
// --prompt streamed to stdout, --jsonl batch mode (stdin -> stdout, one JSON object per line),
// or an interactive chat when stdin is a terminal. Contract: man/ds-generate.1.
// reference: DeepSeek-V3 generate.py (spec §2.4: defaults, chat re-rendering per turn).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ds::infer {

struct GenerateOptions {
  std::string model;                  // checkpoint directory or ds-pretrain run directory
  std::string prompt;                 // --prompt (has_prompt distinguishes "" from absent)
  bool has_prompt = false;
  bool jsonl = false;                 // batch mode on stdin/stdout
  bool chat = false;                  // apply the chat template to --prompt / JSONL "prompt"
  int64_t max_new_tokens = 200;       // generate.py's default
  float temperature = 0.0f;           // 0 = greedy (deterministic); generate.py uses 0.2
  int top_k = 0;                      // 0 = off
  float top_p = 1.0f;                 // 1 = off
  uint64_t seed = 965;                // generate.py's default
  std::vector<std::string> stop;      // stop strings
  std::string speculative = "none";   // none | mtp
  int batch_size = 8;                 // sequences decoded together (JSONL mode)
  int64_t prefill_chunk = 512;        // prompt tokens per sequence per prefill forward
  std::string device = "cpu";         // cpu | cuda (one GPU)
  std::string kv_cache = "f32";       // f32 | bf16: the latent cache's dtype
  int threads = 0;                    // 0 = all cores
  bool stats = false;                 // timing / acceptance JSON on stderr
  // Defaults from the checkpoint's generation_config.json (hf_generation_config.hpp): "auto"
  // (the file when present), "none" (ignored), or the path of such a file. A flag that was
  // given (`given`, set by the tool; --stop when non-empty) overrides the file's field.
  std::string generation_config = "auto";
  struct Given {
    bool max_new_tokens = false, temperature = false, top_k = false, top_p = false;
  } given;
};

// Runs the requested mode. Throws UsageError for bad flag values / combinations, IoError /
// FormatError for an unreadable checkpoint, a malformed generation_config.json or malformed
// JSONL input (one line naming the file, line and field).
void run_generate(const GenerateOptions& opts);

}  // namespace ds::infer
