// ds-generate: generate text with a DeepSeek-V3 checkpoint (ours or Hugging Face) on the CPU
// engine with the absorbed-MLA latent cache; optional MTP speculative decoding. Thin CLI: flags
// bind to ds::infer::GenerateOptions (defaults live there; the checkpoint's
// generation_config.json may replace those of flags not given), then ds::infer::run_generate();
// exit codes from ds::cli::run_tool. Contract: man ds-generate.
#include <CLI/CLI.hpp>

#include "ds/cli/common.hpp"
#include "ds/infer/generate.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Generate text with a DeepSeek-V3 model (latent KV cache, MTP speculative decoding)",
               "ds-generate"};
  ds::cli::CommonOptions common;
  ds::cli::add_common_options(app, common, "ds-generate");
  ds::infer::GenerateOptions o;

  app.add_option("--model", o.model,
                 "Checkpoint directory (ds step dir, ds run dir or HF DeepSeek-V3 dir)");
  auto* prompt =
      app.add_option("--prompt", o.prompt, "Generate a completion of TEXT, streamed to stdout");
  app.add_flag("--jsonl", o.jsonl,
               "Batch mode: {\"prompt\"|\"messages\"} lines on stdin -> JSON lines on stdout");
  app.add_flag("--chat,!--raw", o.chat,
               "Apply the chat template to --prompt / JSONL prompts (default: --raw)");
  auto* max_new = app.add_option("--max-new-tokens", o.max_new_tokens,
                                 "Maximum generated tokens per completion")
                      ->capture_default_str();
  auto* temperature =
      app.add_option("--temperature", o.temperature, "Sampling temperature (0: greedy argmax)")
          ->capture_default_str();
  auto* top_k = app.add_option("--top-k", o.top_k, "Keep the k most likely tokens (0: off)")
                    ->capture_default_str();
  auto* top_p =
      app.add_option("--top-p", o.top_p, "Nucleus sampling mass (1: off)")->capture_default_str();
  app.add_option("--generation-config", o.generation_config,
                 "auto (the checkpoint's generation_config.json, when present, sets the defaults "
                 "of the four flags above and stop strings/ids), none, or FILE")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Sampling seed")->capture_default_str();
  app.add_option("--stop", o.stop, "Stop string (repeatable); the completion is cut before it")
      ->allow_extra_args(false);
  app.add_option("--speculative", o.speculative, "none or mtp (MTP draft + verify; greedy only)")
      ->check(CLI::IsMember({"none", "mtp"}))->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "Sequences decoded together in --jsonl mode")
      ->capture_default_str();
  app.add_option("--prefill-chunk", o.prefill_chunk,
                 "Prompt tokens per sequence per prefill forward")
      ->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda (one GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--kv-cache", o.kv_cache,
                 "Latent KV cache dtype: f32 (exact) or bf16 (half the bytes)")
      ->check(CLI::IsMember({"f32", "bf16"}))->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)")->capture_default_str();
  app.add_flag("--stats", o.stats,
               "Print prefill/decode tokens/s and the acceptance rate to stderr (JSON)");

  return ds::cli::run_tool(app, argc, argv, common, [&] {
    o.has_prompt = prompt->count() > 0;
    o.given = {max_new->count() > 0, temperature->count() > 0, top_k->count() > 0,
               top_p->count() > 0};
    ds::infer::run_generate(o);
  });
}
